"""Local against Ray on this machine, each comparison in one run: image embeddings and customer scoring.

    python sample_data.py --scale demo --data-dir /tmp/demo_ray/data --images-dir /tmp/demo_ray/images
    python data_optim.py --data-dir /tmp/demo_ray/data
    python bench/bench_ray.py --data-dir /tmp/demo_ray/data --images-dir /tmp/demo_ray/images

1. Embeddings: visual_features.embed_catalogue with engine local and engine ray, from JPEG files to
   the merged outputs, each repeat into a fresh data dir (nothing to resume), alternating the two so
   both see the same load. Ray is started once beforehand (on a cluster it is already up); its start
   is timed apart. The single-process decoding cost per image (load_image) is measured on the same
   files and on real-size 1166x1750 packshots, for the 10M-image plan.
2. Scoring: final.py's hybrid fitted on every transaction, then scale_out.score_batches over every
   customer, local against ray (the model put in the object store once per call, included).

Figures are medians of --repeats; writes bench/results/bench_ray.{json,md} (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

import visual_features as vf
from fde import candidates, images, scale_out
from fde import hybrid as blend
from fde.artifacts import Artifacts
from fde.strategies import K

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"


def median_rate(count: int, times: list[float]) -> float:
    return count / statistics.median(times)


def subset_images(source: Path, n: int | None, dest: Path) -> Path:
    """The first n images (by path) hard-linked into a folder of their own; the folder itself when n is None."""
    if n is None:
        return source
    for path in sorted(source.glob("*/*.jpg"))[:n]:
        target = dest / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return dest


def decode_rate(paths: list[Path], repeats: int) -> dict:
    """Single-process load_image (decode + fit): images per wall second and per CPU second (medians).

    Per CPU second is the cost that carries over to other machines: other jobs on a shared machine
    stretch the wall time, not the CPU time a decode takes.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for p in paths:
            images.load_image(p)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": median_rate(len(paths), wall), "cpu": median_rate(len(paths), cpu)}


def bench_embeddings(images_dir: Path, repeats: int, batch: int, workdir: Path) -> dict:
    """Seconds per repeat of the local and the Ray engine over the same images, alternating."""
    count = images.list_images(images_dir)[0].height
    clock = time.perf_counter()
    scale_out.connect_ray(None)
    ray_start = time.perf_counter() - clock
    times = {"local": [], "ray": []}
    for repeat in range(repeats):
        for engine in ("local", "ray"):
            target = Artifacts(workdir / f"{engine}-{repeat}", images_dir)
            start = time.perf_counter()
            vf.embed_catalogue(target, backbone="mobilenet_v2", batch_size=batch, engine=engine, show_progress=False)
            times[engine].append(time.perf_counter() - start)
            shutil.rmtree(target.data_dir)
            print(f"  {engine} repeat {repeat}: {count / times[engine][-1]:.1f} img/s", flush=True)
    local, ray = median_rate(count, times["local"]), median_rate(count, times["ray"])
    return {"images": count, "repeats": repeats, "ray_start_s": ray_start, "seconds": times,
            "local_img_s": local, "ray_img_s": ray, "ray_overhead": local / ray}


def bench_scoring(data_dir: Path, repeats: int, batch: int) -> dict:
    """Seconds of scoring every customer with the fitted hybrid, local against Ray tasks."""
    artifacts = Artifacts(data_dir)
    customers = pl.read_parquet(artifacts.customers)
    transactions = pl.read_parquet(artifacts.transactions)
    populars, personal = candidates.make_sources(customers)
    hybrid = blend.make(populars, personal)
    start = time.perf_counter()
    hybrid.fit(transactions, pl.read_parquet(artifacts.articles))
    fit_s = time.perf_counter() - start
    ids = customers["customer_id"]
    times = {"local": [], "ray": []}
    outputs = {}
    for repeat in range(repeats):
        for engine in ("local", "ray"):
            start = time.perf_counter()
            outputs[engine] = scale_out.score_batches(hybrid, ids, score_one_batch, engine=engine,
                                                      batch_size=batch, show_progress=False)
            times[engine].append(time.perf_counter() - start)
            print(f"  scoring {engine} repeat {repeat}: {times[engine][-1]:.1f} s", flush=True)
    identical = outputs["local"].equals(outputs["ray"])
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    return {"customers": ids.len(), "transactions": transactions.height, "batch": batch, "fit_s": fit_s,
            "seconds": times, "local_s": local, "ray_s": ray, "ray_overhead": ray / local, "identical": identical}


def score_one_batch(hybrid, batch: pl.DataFrame) -> pl.DataFrame:
    """final.recommend_everyone's work for one batch: the top 12 with reasons."""
    ranked = hybrid.candidates(batch, K)
    return hybrid.explain(ranked).select(
        "customer_id", pl.col("article_id").cast(pl.Int32), pl.col("rank").cast(pl.UInt8),
        pl.col("score").cast(pl.Float32), "reason", pl.col("source_article_id").cast(pl.Int32))


def plan_10m(decode_per_core: float, images: int = 10_000_000, gpu_rate: float = 3000.0,
             cores_per_node: int = 8, startup_min: float = 2.0) -> list[dict]:
    """Paper plan: nodes of one V100-class GPU and `cores_per_node` cores; minutes and the bottleneck."""
    rows = []
    cpu_rate = decode_per_core * cores_per_node
    for nodes in (1, 2, 4, 8, 16, 32):
        node_rate = min(gpu_rate, cpu_rate)
        rate = nodes * node_rate
        rows.append({"nodes": nodes, "img_s": rate, "minutes": images / rate / 60 + startup_min,
                     "bottleneck": "GPU" if gpu_rate <= cpu_rate else f"CPU decoding ({cpu_rate:,.0f} img/s per node)"})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/tmp/demo_ray/data")
    parser.add_argument("--images-dir", default="/tmp/demo_ray/images")
    parser.add_argument("--images", type=int, default=None, help="only the first N images (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--score-batch", type=int, default=scale_out.BATCH_CUSTOMERS // 10)
    parser.add_argument("--skip-images", action="store_true", help="no decoding, embedding or plan")
    parser.add_argument("--skip-embed", action="store_true", help="decoding cost and the plan only")
    parser.add_argument("--skip-scoring", action="store_true")
    args = parser.parse_args()
    import bench_visual

    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        if not args.skip_images:
            images_dir = subset_images(Path(args.images_dir), args.images, tmp / "images")
            sample = sorted(images_dir.glob("*/*.jpg"))[:200]
            real = bench_visual.make_packshots(tmp / "real_size", 64, distinct=16)
            report["decode_demo_img_s"] = decode_rate(sample, args.repeats)
            report["decode_real_size_img_s"] = decode_rate(real, args.repeats)
            print(f"decoding, one process: demo {report['decode_demo_img_s']}, "
                  f"1166x1750 {report['decode_real_size_img_s']} img/s", flush=True)
            if not args.skip_embed:
                report["embeddings"] = bench_embeddings(images_dir, args.repeats, args.batch_size, tmp / "work")
            measured = plan_10m(report["decode_real_size_img_s"]["cpu"])
            report["plan_10m"] = {"measured (1166x1750, per CPU second)": measured,
                                  "published (1,000 img/s per 8 cores)": plan_10m(1000 / 8)}
        if not args.skip_scoring:
            report["scoring"] = bench_scoring(Path(args.data_dir), args.repeats, args.score_batch)
    report["load_after"] = os.getloadavg()

    lines = [f"# Local vs Ray ({report['machine']}; load {report['load_before'][0]:.1f} -> "
             f"{report['load_after'][0]:.1f})", ""]
    if "embeddings" in report:
        e = report["embeddings"]
        lines += [f"Embeddings, MobileNetV2, {e['images']:,} images, median of {e['repeats']} "
                  f"(Ray start {e['ray_start_s']:.1f} s, not included):", "",
                  "| engine | img/s |", "|---|---:|",
                  f"| local | {e['local_img_s']:.1f} |", f"| ray | {e['ray_img_s']:.1f} |",
                  f"| local / ray | {e['ray_overhead']:.2f}x |", ""]
    if "plan_10m" in report:
        d, r = report["decode_demo_img_s"], report["decode_real_size_img_s"]
        lines += [f"Decoding (load_image, one process), images per wall second / per CPU second: demo packshots "
                  f"{d['wall']:.0f} / {d['cpu']:.0f}, 1166x1750 JPEGs {r['wall']:.0f} / {r['cpu']:.0f}", ""]
        for name, rows in report["plan_10m"].items():
            lines += [f"10M images, nodes of 1 V100-class GPU (3,000 img/s) + 8 cores, decoding as {name}:", "",
                      "| nodes | img/s | minutes | bottleneck |", "|---:|---:|---:|---|"]
            lines += [f"| {r['nodes']} | {r['img_s']:,.0f} | {r['minutes']:.0f} | {r['bottleneck']} |" for r in rows]
            lines.append("")
    if "scoring" in report:
        s = report["scoring"]
        lines += [f"Scoring {s['customers']:,} customers ({s['transactions']:,} transactions; fit "
                  f"{s['fit_s']:.0f} s), batches of {s['batch']:,}, median of {len(s['seconds']['local'])}:", "",
                  "| engine | seconds |", "|---|---:|", f"| local | {s['local_s']:.1f} |",
                  f"| ray | {s['ray_s']:.1f} |",
                  f"| ray / local | {s['ray_overhead']:.2f}x |", f"| identical output | {s['identical']} |", ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "bench_ray" + ("_decode" if args.skip_embed else "") + ("_noscore" if args.skip_scoring else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
