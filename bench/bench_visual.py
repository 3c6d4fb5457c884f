"""Benchmark of the visual stages: image decoding, embedding per backbone and runtime, all-pairs twins, one lookup.

    .venv/bin/python bench/bench_visual.py                    # everything (about 15 min on 2 cores)
    .venv/bin/python bench/bench_visual.py --skip-twins       # embedding only
    .venv/bin/python bench/bench_visual.py --twins-n 20000    # smaller all-pairs run

Runtimes side by side, in one run: torch float32 NCHW (the stage's path before ONNX), torch float32
channels_last (the torch path now), torch bf16 (on CPUs with AMX) and ONNX Runtime float32 (the CPU
default now). Images are synthetic packshots at the real size (1166 x 1750 JPEG, quality 90, ~220 KB),
so decoding costs what it costs on Kaggle's photos, and at the demo's size (384 x 576). Each figure is
the median of --repeats runs. Writes
bench/results/bench_visual.{json,md} (bench_visual_embed.* or bench_visual_twins.* for a partial run;
git-ignored).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

import visual_features as vf
from fde import backbones, engines, images, pretrained, visual_index
from fde.artifacts import Artifacts
from fde.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

FULL_CATALOGUE = 105_100  # Kaggle's images
RESULTS = ROOT / "bench" / "results"


def timings(fn, repeats: int) -> list[float]:
    """Wall seconds of each of `repeats` calls of fn() (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def rates(count: int, times: list[float]) -> dict:
    """Items/s at the median and at the best repeat (the best is the least disturbed by other load)."""
    return {"median": count / statistics.median(times), "best": count / min(times)}


def fmt(rate: dict) -> str:
    return f"{rate['median']:.1f} ({rate['best']:.1f})"


REAL_SIZE = (1166, 1750)  # Kaggle's photos
DEMO_SIZE = (384, 576)    # sample_data.py's packshots


def make_packshots(folder: Path, n: int, seed: int = 0, distinct: int = 256, size=REAL_SIZE) -> list[Path]:
    """n JPEG packshots (real size by default): a textured garment on an off-white, slightly noisy background.

    At most `distinct` are drawn (a full-size drawing takes ~0.1 s); the rest are hard links to them,
    which still decode one by one.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    layout = Artifacts(images_dir=folder)
    paths = []
    for i in range(n):
        path = layout.image(108775010 + i)
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.append(path)
        if i >= distinct:
            os.link(paths[i % distinct], path)
            continue
        k = w / REAL_SIZE[0]  # drawn in real-size coordinates, scaled
        im = Image.new("RGB", (w, h), (244, 243, 240))
        draw = ImageDraw.Draw(im)
        colour = tuple(int(c) for c in rng.integers(20, 230, 3))
        x0, y0 = rng.integers(150, 300) * k, rng.integers(100, 250) * k
        bottom = h - 100 * k
        draw.polygon([(x0, y0), (w - x0, y0), (w - x0 + 120 * k, bottom), (x0 - 120 * k, bottom)], fill=colour)
        for y in range(int(y0), int(bottom), max(2, int(rng.integers(30, 90) * k))):  # stripes JPEG has to encode
            draw.line([(x0 - 100 * k, y), (w + 100 * k - x0, y)], fill=tuple(int(c * 0.7) for c in colour),
                      width=max(1, int(8 * k)))
        noise = rng.normal(0, 6, (h, w, 3))
        im = Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
        im.filter(ImageFilter.GaussianBlur(1)).save(path, quality=90)
    return paths


def bench_decoding(paths: list[Path], repeats: int) -> dict:
    """Single-process images/s: full-size decode, draft decode, and the stage's whole load_image."""
    def full():
        for p in paths:
            with Image.open(p) as im:
                im.convert("RGB")

    def draft():
        for p in paths:
            with Image.open(p) as im:
                im.draft("RGB", (images.INPUT_SIZE, images.INPUT_SIZE))
                im.convert("RGB")

    def prepared():
        for p in paths:
            images.load_image(p)

    return {name: rates(len(paths), timings(fn, repeats))
            for name, fn in (("decode_full", full), ("decode_draft", draft), ("load_image", prepared))}


def bench_model(weights, device, precision, batch: int, repeats: int, channels_last: bool = True) -> dict:
    """Images/s of the torch network alone on a ready uint8 batch."""
    model = backbones.make_embedder(weights, device, precision, channels_last=channels_last)
    pixels = torch.randint(0, 256, (batch, 3, images.INPUT_SIZE, images.INPUT_SIZE), dtype=torch.uint8)

    def step():
        backbones.embed_batch(model, pixels, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return rates(batch, timings(step, repeats))


def bench_onnx(weights, folder: Path, batch: int, repeats: int) -> tuple[dict, float]:
    """Images/s of the ONNX Runtime network alone, and its smallest cosine to torch float32 over the batch."""
    run = pretrained.OnnxEmbedder(backbones.onnx_model(weights, folder))
    pixels = torch.randint(0, 256, (batch, 3, images.INPUT_SIZE, images.INPUT_SIZE), dtype=torch.uint8)
    torch_fp32 = backbones.embed_batch(backbones.make_embedder(weights, torch.device("cpu"), None), pixels,
                                       torch.device("cpu"))
    got = run(pixels)
    cosine = (got * torch_fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(torch_fp32, axis=1)
    return rates(batch, timings(lambda: run(pixels), repeats)), float(cosine.min())


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_end_to_end(images_dir: Path, n: int, weights, device: str, batch: int, workers: int | None,
                     repeats: int, runtime: str = "auto", precision: str = "auto",
                     onnx_dir: Path | None = None) -> dict:
    """Images/s of embed_catalogue from JPEG files to outputs (model loading included), fresh each repeat.

    The ONNX export is made once beforehand (onnx_dir), as a user's second run finds it.
    """
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as data:
            artifacts = Artifacts(Path(data), images_dir)
            if onnx_dir is not None:
                artifacts.visual_dir.mkdir(parents=True)
                os.symlink(onnx_dir, artifacts.visual_onnx_dir)
            start = time.perf_counter()
            vf.embed_catalogue(artifacts, backbone=weights.backbone, weights=weights.path, device=device,
                               batch_size=batch, num_workers=workers, show_progress=False, runtime=runtime,
                               precision=precision)
            times.append(time.perf_counter() - start)
    return rates(n, times)


@contextlib.contextmanager
def torch_layout(channels_last: bool | None):
    """The torch runtime with NCHW or channels_last activations (None: as the stage sets it)."""
    real = backbones.make_embedder
    if channels_last is not None:
        backbones.make_embedder = functools.partial(real, channels_last=channels_last)
    try:
        yield
    finally:
        backbones.make_embedder = real


def timing_weights(backbone: str, folder: Path):
    """The backbone's weights, or (timing only) an untrained stand-in when they are not installed."""
    try:
        return pretrained.find_weights(backbone, download=False), False
    except UserError:
        path = folder / f"{backbone}-untrained-for-timing.pth"
        torch.save(backbones.BACKBONES[backbone]["build"](weights=None).state_dict(), path)
        return pretrained.find_weights(backbone, path), True


def bench_twins(n: int, dim: int, k: int, lookups: int) -> dict:
    """All-pairs top-k on n random unit vectors, then single-article lookups."""
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, dim), dtype=np.float32)
    ids = np.arange(n, dtype=np.int32) + 108775010
    start, start_cpu = time.perf_counter(), cpu_seconds()
    vectors = visual_index.normalize(features)
    visual_index.top_k_twins(vectors, k, show_progress=True)
    all_pairs, all_pairs_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    twins = visual_index.VisualIndex(ids, features)
    picks = rng.choice(ids, size=lookups)
    twins.twins(picks[0], k)
    times = []
    for aid in picks:
        t0 = time.perf_counter()
        twins.twins(aid, k)
        times.append(time.perf_counter() - t0)
    return {"n": n, "dim": dim, "k": k, "all_pairs_s": all_pairs, "all_pairs_cpu_s": all_pairs_cpu,
            "lookup_ms_median": 1000 * statistics.median(times),
            "lookup_ms_p95": 1000 * float(np.percentile(times, 95))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="synthetic packshots to embed (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="as the stage's default (default: %(default)s)")
    parser.add_argument("--gpu-images", type=int, default=4096,
                        help="packshots for the CUDA run (default: %(default)s)")
    parser.add_argument("--backbones", default=",".join(backbones.BACKBONES),
                        help="comma-separated backbones to time (default: %(default)s)")
    parser.add_argument("--twins-n", type=int, default=105_542)
    parser.add_argument("--twins-dim", type=int, default=2048)
    parser.add_argument("--skip-twins", action="store_true")
    parser.add_argument("--skip-embed", action="store_true")
    args = parser.parse_args()

    cpu = torch.device("cpu")
    report = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "cpu": platform.processor() or platform.machine(),
                          "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
                          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                          "load_avg_at_start": os.getloadavg()[0]},
              "settings": vars(args)}
    lines = [f"# bench_visual ({report['machine']['cpus']} CPUs, torch threads {torch.get_num_threads()}, "
             f"AMX {report['machine']['amx']}, CUDA {report['machine']['cuda']}, "
             f"load avg {report['machine']['load_avg_at_start']:.1f} at start)", ""]

    if not args.skip_embed:
        with tempfile.TemporaryDirectory() as tmp:
            real_dir, demo_dir = Path(tmp) / "images", Path(tmp) / "demo_images"
            paths = make_packshots(real_dir, args.images)
            make_packshots(demo_dir, args.images, size=DEMO_SIZE)
            size_kb = statistics.median(p.stat().st_size for p in paths) / 1024
            decoding = bench_decoding(paths[:32], args.repeats)
            report["decoding_img_s_one_process"] = decoding
            lines += [f"## Decoding, one process, 1166x1750 JPEG ~{size_kb:.0f} KB (img/s, median (best) of "
                      f"{args.repeats})", "",
                      "| full-size decode | draft decode (1/4 scale) | load_image (draft + resize + fit) |",
                      "|---|---|---|",
                      f"| {fmt(decoding['decode_full'])} | {fmt(decoding['decode_draft'])} | "
                      f"{fmt(decoding['load_image'])} |", ""]

            networks = [timing_weights(name, Path(tmp)) for name in args.backbones.split(",")]
            report["untrained_for_timing"] = [w.backbone for w, untrained in networks if untrained]
            onnx_dirs = {w.backbone: Path(tmp) / f"onnx-{w.backbone}" for w, _ in networks}
            amx = report["machine"]["amx"]
            lines += [f"## Network alone, CPU (img/s, batch {args.batch_size}, median (best) of {args.repeats})", "",
                      "| backbone | torch fp32 NCHW | torch fp32 channels_last | torch bf16 channels_last | "
                      "ONNX Runtime fp32 | ONNX vs torch: smallest cosine |", "|---|---|---|---|---|---|"]
            report["model_img_s_cpu"] = {}
            for weights, untrained in networks:
                nchw = bench_model(weights, cpu, None, args.batch_size, args.repeats, channels_last=False)
                last = bench_model(weights, cpu, None, args.batch_size, args.repeats)
                bf16 = bench_model(weights, cpu, torch.bfloat16, args.batch_size, args.repeats) if amx else None
                onnx, cosine = bench_onnx(weights, onnx_dirs[weights.backbone], args.batch_size, args.repeats)
                report["model_img_s_cpu"][weights.backbone] = {
                    "torch_fp32_nchw": nchw, "torch_fp32_channels_last": last, "torch_bf16": bf16,
                    "onnxruntime_fp32": onnx, "onnx_min_cosine": cosine}
                lines.append(f"| {weights.backbone}{' *' if untrained else ''} | {fmt(nchw)} | {fmt(last)} | "
                             f"{fmt(bf16) if bf16 else 'no AMX'} | {fmt(onnx)} | {cosine:.6f} |")
            lines += ["", f"## End to end on CPU: JPEG files -> outputs ({args.images} images, batch "
                      f"{args.batch_size}, the stage's decoding workers (ONNX "
                      f"{engines.default_workers(cpu, 'onnx')}, torch {engines.default_workers(cpu)}), model loading "
                      f"included; img/s, median (best) of {args.repeats})", "",
                      "| backbone | photos | runtime | img/s | 105k images at the median |", "|---|---|---|---|---|"]
            report["end_to_end_cpu"] = []
            runs = [("torch fp32 NCHW", "torch", "fp32", False), ("torch fp32 channels_last", "torch", "fp32", True),
                    *([("torch bf16 channels_last", "torch", "bf16", True)] if amx else []),
                    ("ONNX Runtime fp32", "onnx", "auto", None)]
            for weights, untrained in networks:
                for photos, folder in (("1166x1750", real_dir), ("384x576 (demo)", demo_dir)):
                    for name, runtime, precision, channels_last in runs:
                        with torch_layout(channels_last):
                            rate = bench_end_to_end(folder, args.images, weights, "cpu", args.batch_size, None,
                                                    args.repeats, runtime, precision, onnx_dirs[weights.backbone])
                        report["end_to_end_cpu"].append({"backbone": weights.backbone, "photos": photos,
                                                         "runtime": name, **rate})
                        lines.append(f"| {weights.backbone}{' *' if untrained else ''} | {photos} | {name} | "
                                     f"{fmt(rate)} | {FULL_CATALOGUE / rate['median'] / 60:.0f} min |")
                        print(lines[-1], flush=True)
            if report["untrained_for_timing"]:
                lines += ["", "\\* weights not installed here: timed with an untrained network of the same "
                          "architecture (speed only; no vectors from it are ever used)."]
            if torch.cuda.is_available():
                lines += ["", f"## End to end on CUDA ({args.gpu_images} images, batch 256)", "",
                          "| backbone | decoding workers | img/s | 105k images |",
                          "|---|---|---|---|"]
                report["end_to_end_cuda"] = []
                cuda = torch.device("cuda")
                workers = engines.default_workers(cuda)
                gpu_dir = Path(tmp) / "gpu_images"
                make_packshots(gpu_dir, args.gpu_images)
                for weights, _ in networks:
                    model_rate = bench_model(weights, cuda, backbones.pick_precision(cuda), 256, args.repeats)
                    rate = bench_end_to_end(gpu_dir, args.gpu_images, weights, "cuda", 256, workers, args.repeats)
                    report["end_to_end_cuda"].append({"backbone": weights.backbone, "workers": workers,
                                                      "img_s": rate, "model_img_s": model_rate})
                    lines.append(f"| {weights.backbone} | {workers} | {fmt(rate)} (network alone {fmt(model_rate)}) | "
                                 f"{FULL_CATALOGUE / rate['median'] / 60:.1f} min |")
            else:
                lines += ["", "No CUDA device here: on one, this script also times embed_catalogue with "
                          "device cuda on --gpu-images packshots, batch 256, bf16 weights + channels_last and one "
                          "decoding worker per CPU core (at most 16), and the network alone, to show decoding is "
                          "the limit."]

    if not args.skip_twins:
        twins = bench_twins(args.twins_n, args.twins_dim, visual_index.DEFAULT_K, lookups=50)
        report["twins"] = twins
        lines += ["", f"## Visual twins, {twins['n']:,} x {twins['dim']} random vectors, k={twins['k']}, CPU", "",
                  "| all pairs (blockwise, symmetric) | CPU seconds (both cores) | one article, median "
                  "| one article, p95 |",
                  "|---|---|---|---|",
                  f"| {twins['all_pairs_s']:.0f} s ({twins['all_pairs_s'] / 60:.1f} min) | "
                  f"{twins['all_pairs_cpu_s']:.0f} | "
                  f"{twins['lookup_ms_median']:.1f} ms | {twins['lookup_ms_p95']:.1f} ms |"]

    # A partial run keeps the other part's results: bench_visual_embed.* / bench_visual_twins.*
    name = "bench_visual" + ("_embed" if args.skip_twins else "_twins" if args.skip_embed else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
