"""Embedding engines: the local loop (decoding in DataLoader workers) and the Ray Data job (decoding in
tasks, the network in an actor pool), both writing chunks through one ChunkWriter.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fde import scale_out
from fde.backbones import Runtime, make_runtime, onnx_model, pick_device, pick_runtime
from fde.chunks import Chunk, ChunkWriter, work_rows
from fde.images import DEFAULT_FIT, INPUT_SIZE, decode
from fde.pretrained import Weights


class ImageFiles(Dataset):
    """Decoded images as uint8 CHW tensors (4x less to pass between processes than float)."""

    def __init__(self, paths: list[str], size: int = INPUT_SIZE, fit: str = DEFAULT_FIT):
        self.paths = paths
        self.size = size
        self.fit = fit

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        pixels, ok, error = decode(self.paths[i], self.size, self.fit)
        return torch.from_numpy(pixels).permute(2, 0, 1), ok, error


def default_workers(device: torch.device, runtime: str = "torch") -> int:
    """Decoding processes: a GPU needs every core decoding to keep up; on a CPU they share with the model.

    On 2 cores, ONNX Runtime embedded 127 img/s with 2 decoders against 106 with 1 (real-size photos);
    torch's own threads were starved by a second decoder (ResNet50), so it keeps half the cores.
    """
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return min(16, cores) if runtime == "onnx" else min(2, max(1, cores // 2))
    return max(1, min(16, cores - 1))


def embed_local(todo: list[Chunk], writer: ChunkWriter, runtime: Runtime, device: torch.device, backbone: str,
                batch_size: int, num_workers: int, fit: str, show_progress: bool) -> None:
    """Embed the chunks in this process with the runtime, decoding in DataLoader workers."""
    chunk, position, paths = work_rows(todo)
    print(f"embedding {len(paths):,} images in {len(todo)} chunks on {device} ({runtime.label}), "
          f"batch {batch_size}, {num_workers} decoding workers", flush=True)
    loader = DataLoader(ImageFiles(paths, fit=fit), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if num_workers else None)
    start = 0
    with tqdm(total=len(paths), unit="img", desc=backbone, disable=not show_progress, smoothing=0.05) as bar:
        for pixels, ok, error in loader:
            n = len(ok)
            writer.add(chunk[start:start + n], position[start:start + n], runtime(pixels),
                       ok.numpy(), list(error), runtime.label)
            start += n
            bar.update(n)


RAY_ROWS_PER_BLOCK = 256  # images per Ray Data input block: enough blocks to spread decoding over every core
RAY_DECODE_BATCH = 32     # images per decoding task call
RAY_ACTOR_MEMORY = 1 << 30  # host memory per embedding actor: the network, a batch's activations, torch's pools


def ray_decode(batch: dict, fit: str) -> dict:
    """Ray task: decode a batch of paths into uint8 HWC pixels (the local path's decode())."""
    decoded = [decode(path, INPUT_SIZE, fit) for path in batch["path"]]
    return {"chunk": batch["chunk"], "position": batch["position"],
            "pixels": np.stack([d[0] for d in decoded]),
            "ok": np.array([d[1] for d in decoded], dtype=bool),
            "error": np.array([d[2] for d in decoded], dtype=object)}


class RayEmbedder:
    """Ray Data actor: the local path's runtime (backbones.make_runtime), loaded once per actor.

    onnx: the exported model's bytes (the driver exports it; a cluster's nodes need no copy of the file).
    """

    def __init__(self, weights: Weights, device: str, precision: str, runtime: str, threads: int,
                 onnx: bytes | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.device = pick_device(device)  # an actor given a GPU sees it as cuda:0
        self.runtime = make_runtime(weights, self.device, precision, pick_runtime(runtime, self.device), onnx,
                                    threads)

    def __call__(self, batch: dict) -> dict:
        pixels = torch.from_numpy(np.array(batch["pixels"])).permute(0, 3, 1, 2).contiguous()  # a writable copy
        features = self.runtime(pixels)
        return {"chunk": batch["chunk"], "position": batch["position"], "features": features,
                "ok": batch["ok"], "error": batch["error"],
                "runtime": np.full(len(features), self.runtime.label, dtype=object)}


def embed_ray(todo: list[Chunk], writer: ChunkWriter, weights: Weights, device: str, precision: str,
              batch_size: int, fit: str, show_progress: bool, ray_address: str | None = None,
              actors: int | None = None, actor_cpus: int = 1, runtime: str = "auto",
              onnx_dir: str | None = None) -> None:
    """Embed the chunks as a Ray Data job: decoding in tasks, the network in an actor pool (one per GPU)."""
    import pyarrow as pa
    import ray

    scale_out.connect_ray(ray_address)
    resources = ray.cluster_resources()
    gpus = 0 if device == "cpu" else int(resources.get("GPU", 0))
    if actors is None:
        # One actor per GPU; without GPUs, half the CPUs embed and the other half decode.
        actors = gpus or max(1, int(resources.get("CPU", 1)) // (2 * actor_cpus))
    # The actors' runtime: ONNX Runtime without GPUs when it is installed (as on this machine), else torch.
    where = torch.device("cuda" if gpus else "cpu")
    chosen = pick_runtime(runtime, where)
    onnx = onnx_model(weights, onnx_dir).read_bytes() if chosen == "onnx" else None
    chunk, position, paths = work_rows(todo)
    table = pa.table({"chunk": chunk, "position": position,
                      "path": [os.path.abspath(p) for p in paths]})  # workers may start in another directory
    blocks = [table.slice(i, RAY_ROWS_PER_BLOCK) for i in range(0, table.num_rows, RAY_ROWS_PER_BLOCK)]
    print(f"embedding {len(paths):,} images in {len(todo)} chunks on Ray ({int(resources.get('CPU', 0))} CPUs, "
          f"{gpus} GPUs): {actors} embedding actors{' with a GPU each' if gpus else ''}, batch {batch_size}",
          flush=True)
    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar, ours
    # The actors reserve memory for the network and its activations; that difference in resources
    # also keeps Ray Data from fusing decoding into them (fused, each actor would decode and embed in
    # turn instead of the CPUs decoding while the actors embed).
    dataset = (ray.data.from_arrow(blocks)
               .map_batches(ray_decode, fn_kwargs={"fit": fit}, batch_size=RAY_DECODE_BATCH,
                            batch_format="numpy", num_cpus=1)
               .map_batches(RayEmbedder, fn_constructor_kwargs={
                                "weights": weights, "device": "cuda" if gpus else "cpu" if device == "auto" else device,
                                "precision": precision, "runtime": chosen, "threads": 0 if gpus else actor_cpus,
                                "onnx": onnx},
                            batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors),
                            num_gpus=1 if gpus else 0, num_cpus=actor_cpus, memory=RAY_ACTOR_MEMORY))
    with tqdm(total=len(paths), unit="img", desc=f"{weights.backbone} (ray)", disable=not show_progress,
              smoothing=0.05) as bar:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            writer.add(batch["chunk"], batch["position"], batch["features"], batch["ok"],
                       batch["error"].tolist(), str(batch["runtime"][0]))
            bar.update(len(batch["chunk"]))
