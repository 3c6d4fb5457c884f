"""Benchmark final.py: wall seconds and peak memory of the evaluation and of the submission.

Meant for the full scale (1.37M customers, 31.8M transactions):

    python sample_data.py --full --data-dir /tmp/hm_full --no-images   # or the real Kaggle files
    python data_optim.py --data-dir /tmp/hm_full && python split_data.py --data-dir /tmp/hm_full
    python bench/bench_final.py --data-dir /tmp/hm_full

Each phase runs in a process of its own, so its peak resident memory is its own:
evaluate = fit on train, tune the hybrid on the validation week, refit, score every strategy on the
test week (final.evaluate); submit = fit on all data, recommend 12 for every customer, write
recommendations.parquet and submission.csv (final.submit, with the weights evaluate chose).
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
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 300
TARGET_MB = 8 * 1024


def child(data_dir: str, phase: str) -> None:
    """Run one phase here and print its measurements as one JSON line."""
    import final
    from artifacts import Artifacts
    from common import peak_rss_mb

    artifacts = Artifacts(Path(data_dir))
    start = time.perf_counter()
    if phase == "evaluate":
        meta = final.evaluate(artifacts, show_progress=False)
        extra = {"customers": meta["customers_evaluated"], "hybrid_map12": meta["strategies"]["hybrid"]["map12"]}
    else:
        result = final.submit(artifacts, show_progress=False)
        extra = {"customers": result["customers"]}
    print("BENCH " + json.dumps({"phase": phase, "seconds": time.perf_counter() - start,
                                 "peak_rss_mb": peak_rss_mb(), **extra}), flush=True)


def dataset_size(data_dir: str) -> dict:
    """Rows of the processed transactions and customers (Parquet metadata only)."""
    import pyarrow.parquet as pq

    from artifacts import Artifacts

    artifacts = Artifacts(Path(data_dir))
    return {"transactions": pq.ParquetFile(artifacts.transactions).metadata.num_rows,
            "customers": pq.ParquetFile(artifacts.customers).metadata.num_rows,
            "articles": pq.ParquetFile(artifacts.articles).metadata.num_rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="data dir with processed/ and split/ (full scale)")
    parser.add_argument("--phase", choices=["evaluate", "submit"], help=argparse.SUPPRESS)
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
    for phase in ("evaluate", "submit"):
        proc = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--phase", phase],
                              capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            sys.exit(f"{phase} failed with exit code {proc.returncode}")
        line = next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))
        rows.append(json.loads(line[len("BENCH "):]))

    print(f"\n{'phase':<10} {'wall s':>8} {'peak RSS MB':>12}   target: < {TARGET_SECONDS} s, < {TARGET_MB:,} MB")
    for row in rows:
        ok = row["seconds"] < TARGET_SECONDS and row["peak_rss_mb"] < TARGET_MB
        print(f"{row['phase']:<10} {row['seconds']:>8.1f} {row['peak_rss_mb']:>12,.0f}   {'ok' if ok else 'MISSED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": size, "cpus": os.cpu_count(), "phases": rows}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
