"""Benchmark the engine end to end: the learned ranker against today's hybrid, seconds per step and peak memory.

Meant for the full scale (1.37M customers, 31.8M transactions):

    python sample_data.py --full --data-dir /tmp/hm_full --no-images   # or the real Kaggle files
    python data_optim.py --data-dir /tmp/hm_full && python split_data.py --data-dir /tmp/hm_full
    python bench/bench_final.py --data-dir /tmp/hm_full

Each phase runs in a process of its own, so its peak resident memory is its own:
- hybrid: `final.py --no-ranker` (tune the blend on validation, score the test week, submission for
  every customer): the engine before the ranker, the baseline of the ratio;
- ranker: `ranker.py` (choose time scales, features of 4 weeks, LightGBM with early stopping, retrain);
- final: `final.py` with the ranker (evaluate every strategy, the hybrid and the ranker; the
  submission from the better of the two on validation, with reasons from pred_contrib).
Target (issue 11): ranker + final under 20 minutes, peak memory under 12 GB, on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TARGET_SECONDS = 20 * 60
TARGET_MB = 12 * 1024


def child(data_dir: str, phase: str) -> None:
    """Run one phase here and print its measurements as one JSON line."""
    import final
    import ranker
    from fde import evaluation
    from fde.artifacts import Artifacts
    from fde.cli import peak_rss_mb

    artifacts = Artifacts(Path(data_dir))
    start = time.perf_counter()
    if phase == "ranker":
        meta = ranker.fit_ranker(artifacts, evaluation.load_inputs(artifacts, quiet=True), show_progress=False)
        extra = {"steps": meta["seconds"], "validation_map12": meta["validation_map12"]}
    else:
        meta = final.run(artifacts, show_progress=False, use_ranker=phase == "final")
        extra = {"steps": {"evaluate": meta["seconds"], "submit": meta["submission"]["seconds"],
                           **{f"submit:{k}": v for k, v in meta["submission"].get("steps", {}).items()}},
                 "map12": {k: meta["strategies"][k]["map12"] for k in ("hybrid", "ranker") if k in meta["strategies"]},
                 "used": meta["recommender_used"]}
    print("BENCH " + json.dumps({"phase": phase, "seconds": time.perf_counter() - start,
                                 "peak_rss_mb": peak_rss_mb(), **extra}), flush=True)


def dataset_size(data_dir: str) -> dict:
    """Rows of the processed transactions and customers (Parquet metadata only)."""
    import pyarrow.parquet as pq

    from fde.artifacts import Artifacts

    artifacts = Artifacts(Path(data_dir))
    return {"transactions": pq.ParquetFile(artifacts.transactions).metadata.num_rows,
            "customers": pq.ParquetFile(artifacts.customers).metadata.num_rows,
            "articles": pq.ParquetFile(artifacts.articles).metadata.num_rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="data dir with processed/ and split/ (full scale)")
    parser.add_argument("--phase", choices=["hybrid", "ranker", "final"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_final.json"),
                        help="where to write the measurements as JSON (default: %(default)s)")
    args = parser.parse_args()
    if args.phase:
        child(args.data_dir, args.phase)
        return

    size = dataset_size(args.data_dir)
    print(f"data: {size['transactions']:,} transactions, {size['customers']:,} customers, "
          f"{size['articles']:,} articles; {os.cpu_count()} CPUs, Python {platform.python_version()}", flush=True)
    rows = []
    for phase in ("hybrid", "ranker", "final"):
        proc = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--phase", phase],
                              capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            sys.exit(f"{phase} failed with exit code {proc.returncode}")
        line = next(out for out in proc.stdout.splitlines() if out.startswith("BENCH "))
        rows.append(json.loads(line[len("BENCH "):]))

    by = {row["phase"]: row for row in rows}
    engine = by["ranker"]["seconds"] + by["final"]["seconds"]
    peak = max(by["ranker"]["peak_rss_mb"], by["final"]["peak_rss_mb"])
    print(f"\n{'phase':<8} {'wall s':>8} {'peak RSS MB':>12}  steps (s)")
    for row in rows:
        steps = ", ".join(f"{k} {v:.0f}" for k, v in row["steps"].items())
        print(f"{row['phase']:<8} {row['seconds']:>8.1f} {row['peak_rss_mb']:>12,.0f}  {steps}")
    verdict = "ok" if engine < TARGET_SECONDS and peak < TARGET_MB else "MISSED"
    print(f"ranker + final: {engine:.0f} s ({engine / by['hybrid']['seconds']:.2f}x the hybrid's "
          f"{by['hybrid']['seconds']:.0f} s), peak {peak:,.0f} MB; target < {TARGET_SECONDS} s, "
          f"< {TARGET_MB:,} MB: {verdict}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": size, "cpus": os.cpu_count(), "phases": rows,
                               "engine_seconds": engine, "ratio_to_hybrid": engine / by["hybrid"]["seconds"]},
                              indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
