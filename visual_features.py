"""Stage 3: one vector per product photo from a pretrained CNN (ResNet50, or MobileNetV2 offline).

Reads every image under --images-dir (Kaggle layout images/0XX/0XXXXXXXXX.jpg), whether or not an
articles file exists, and writes to the data dir:

    visual/visual_features.npy      N x D float16, the network's global-average-pooled features
    visual/visual_article_ids.npy   N int32, ascending, row i of the features is article i
    visual/visual_meta.json         backbone, weights, input size, dim, count, missing/unreadable ids
    visual/search_unit.npy          N x D float32 unit rows for search.py's exact search (+ search_unit.json),
                                    for catalogues of up to 200,000 images (fde.ann.EXACT_LIMIT)

Work is written in chunks (visual/chunks/), each atomically, so an interrupted run resumes where it
stopped and a rerun over unchanged images does nothing. `--engine ray` runs the same work as a Ray
Data job (decoding in Ray tasks, embedding in an actor pool, one actor per GPU where nodes have
GPUs), on this machine or on a cluster (`--ray-address`), and writes the same chunks and outputs.

    python visual_features.py --data-dir data --images-dir images   # ResNet50 if its weights are here, else MobileNetV2
    python visual_features.py --backbone resnet50 --weights resnet50-11ad3fa6.pth
    python visual_features.py --engine ray --ray-address auto                 # on a running Ray cluster
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fde import ann, scale_out
from fde import artifacts as art
from fde.backbones import BACKBONES, RUNTIMES, make_runtime, onnx_model, pick_device, pick_runtime
from fde.chunks import (
    CHUNK_SIZE,
    ChunkWriter,
    check_images_dir,
    merge_chunks,
    outputs_current,
    plan_chunks,
    plan_fingerprint,
    set_aside_damaged,
)
from fde.cli import Stopwatch, add_progress_flag, run_main, summary
from fde.engines import default_workers, embed_local, embed_ray
from fde.errors import UserError, check_writable
from fde.files import write_json
from fde.images import DEFAULT_FIT, FITS, list_images
from fde.pretrained import find_weights
from fde.visual_index import write_search_vectors


def embed_catalogue(artifacts: art.Artifacts, backbone: str = "auto", device: str = "auto",
                    batch_size: int = 64, num_workers: int | None = None, weights: str | Path | None = None,
                    show_progress: bool = True, chunk_size: int = CHUNK_SIZE, precision: str = "auto",
                    fit: str = DEFAULT_FIT, engine: str = "local", ray_address: str | None = None,
                    ray_actors: int | None = None, replace_features: bool = False, runtime: str = "auto") -> dict:
    """Embed every image under artifacts.images_dir (resuming), locally or on Ray, then merge the chunks.

    runtime: auto (ONNX Runtime on a CPU when installed, torch on a GPU), onnx or torch.
    """
    clock = Stopwatch()
    if engine not in ("local", "ray"):
        raise UserError(f"unknown engine {engine!r}: choose local or ray")
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}: choose {', '.join(RUNTIMES)}")
    torch_device = pick_device(device) if engine == "local" else None
    chosen = pick_runtime(runtime, torch_device) if engine == "local" else runtime  # fails before any work
    if fit not in FITS:
        raise UserError(f"unknown fit {fit!r}: choose {', '.join(FITS)}")
    if batch_size < 1 or (num_workers is not None and num_workers < 0):
        raise UserError("--batch-size must be at least 1 and --workers at least 0")
    images, ignored = list_images(artifacts.images_dir)
    if images.height == 0:
        raise UserError(f"no images found under {artifacts.images_dir} (expected "
                        f"{artifacts.images_dir}/0XX/0XXXXXXXXX.jpg): check --images-dir")
    found = find_weights(backbone, weights, show_progress=show_progress)
    print(f"backbone {found.backbone} ({BACKBONES[found.backbone]['enum']}, {found.source}: {found.path}), "
          f"fit {fit}", flush=True)
    chunks = plan_chunks(images, found, chunk_size, fit)
    dim = BACKBONES[found.backbone]["dim"]
    check_images_dir(artifacts, [c.name for c in chunks], replace_features)
    plan = {"backbone": found.backbone,
            "weights": {"name": str(BACKBONES[found.backbone]["enum"]), "file": str(found.path),
                        "sha256": found.sha256, "source": found.source},
            "fit": fit, "preprocess": FITS[fit], "dim": dim, "images": images.height, "ignored_files": ignored,
            "images_dir": str(artifacts.images_dir.resolve()), "chunks": [c.name for c in chunks]}
    try:
        unchanged = json.loads(artifacts.visual_plan.read_text()) == plan
    except (OSError, ValueError):  # absent, or damaged: it is ours to rewrite
        unchanged = False
    if not unchanged:
        write_json(plan, artifacts.visual_plan)
    fingerprint = plan_fingerprint(plan, artifacts)
    result = {"backbone": found.backbone, "images": images.height, "embedded": 0,
              "chunks_total": len(chunks), "chunks_written": 0, "damaged": []}
    if outputs_current(artifacts, fingerprint):
        unit = write_search_vectors(artifacts, ann.EXACT_LIMIT)  # features made before they were: written now
        summary("visual_features", backbone=found.backbone, images=images.height, embedded=0,
                status="up to date", search_vectors=unit, seconds=clock.seconds, output=str(artifacts.visual_features))
        return {**result, "output": str(artifacts.visual_features), "search_vectors": unit, "seconds": clock.seconds}

    chunk_dir = artifacts.visual_chunks_dir
    result["damaged"] = set_aside_damaged(chunk_dir, plan["chunks"], dim)
    for line in result["damaged"]:
        print(f"warning: damaged chunk {line}: set aside as *.damaged, its images are embedded again", flush=True)
    todo = [c for c in chunks if not (chunk_dir / c.name).exists()]
    writer = ChunkWriter(todo, chunk_dir, dim)
    where = "ray"
    if todo and engine == "ray":
        embed_ray(todo, writer, found, device, precision, batch_size, fit, show_progress, ray_address, ray_actors,
                  runtime=runtime, onnx_dir=artifacts.visual_onnx_dir)
    elif todo:
        where = str(torch_device)
        onnx = onnx_model(found, artifacts.visual_onnx_dir) if chosen == "onnx" else None
        embed_local(todo, writer, make_runtime(found, torch_device, precision, chosen, onnx), torch_device,
                    found.backbone, batch_size,
                    default_workers(torch_device, chosen) if num_workers is None else num_workers, fit, show_progress)
    result["chunks_written"], result["embedded"] = writer.written, writer.embedded

    meta = merge_chunks(artifacts, show_progress=False)
    result["search_vectors"] = write_search_vectors(artifacts, ann.EXACT_LIMIT)
    result.update(output=str(artifacts.visual_features), unreadable=len(meta["unreadable"]), runtime=meta["runtime"],
                  missing=len(meta["missing_article_ids"]), count=meta["count"], seconds=clock.seconds)
    rate = result["embedded"] / clock.seconds if result["embedded"] else 0.0
    summary("visual_features", backbone=found.backbone, engine=engine, device=where,
            runtime="+".join(meta["runtime"]), fit=fit,
            images=images.height, embedded=result["embedded"], damaged=len(result["damaged"]),
            unreadable=result["unreadable"], missing=result["missing"], search_vectors=result["search_vectors"],
            img_per_s=rate, seconds=clock.seconds,
            output=result["output"])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser, images=True)
    parser.add_argument("--backbone", choices=["auto", *BACKBONES], default="auto",
                        help="auto: ResNet50 when its weights are on disk, else the offline MobileNetV2 "
                             "(default: %(default)s)")
    parser.add_argument("--weights", help="local weights file (torchvision state dict) for the backbone")
    parser.add_argument("--fit", choices=list(FITS), default=DEFAULT_FIT,
                        help="how a photo fills the square input: pad (whole photo on white), crop (centre "
                             "square) or stretch; a change re-embeds (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 on CUDA and on CPUs with AMX, else fp32. Chunks already "
                             "on disk are kept whatever precision made them (default: %(default)s)")
    parser.add_argument("--runtime", choices=list(RUNTIMES), default="auto",
                        help="auto: ONNX Runtime on a CPU when installed (about 4x torch's speed), torch on "
                             "CUDA or MPS; onnx or torch forces one. Chunks already on disk are kept "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="local engine: image decoding processes (default on a CPU: one per core with "
                             "ONNX Runtime, half the cores up to 2 with torch; on a GPU one per core up to 16)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: a Ray Data job on --ray-address (default: %(default)s)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (auto, or ray://HOST:10001); default: start Ray on this machine")
    parser.add_argument("--ray-actors", type=int, default=None,
                        help="embedding actors (default: one per GPU, else half the CPUs)")
    parser.add_argument("--replace-features", action="store_true",
                        help="embed another --images-dir into a data dir that holds a different folder's "
                             "embeddings, deleting those chunks")
    add_progress_flag(parser)
    args = parser.parse_args()
    if args.engine == "local" and (args.ray_address or args.ray_actors):
        raise UserError("--ray-address and --ray-actors need --engine ray")
    artifacts = art.from_args(args)
    check_writable(artifacts.visual_dir)  # before the work, not after it
    scale_out.check_reachable(args.ray_address)  # seconds, not minutes of Ray's retries after the planning
    embed_catalogue(artifacts, backbone=args.backbone, device=args.device, batch_size=args.batch_size,
                    num_workers=args.workers, weights=args.weights, show_progress=not args.no_progress,
                    precision=args.precision, fit=args.fit, engine=args.engine, ray_address=args.ray_address,
                    ray_actors=args.ray_actors, replace_features=args.replace_features, runtime=args.runtime)


if __name__ == "__main__":
    run_main(main)

