"""Benchmark: the Kaggle-notebook way of loading transactions_train.csv against this ETL.

Measures side by side, each task in a fresh Python subprocess so that peak memory is that
task's own (resource.getrusage in the child; wall seconds of the task itself, imports not
counted), the median of --repeats runs:

    (a) pandas `pd.read_csv("transactions_train.csv")`  vs  data_optim.optimize() (all three files, with its checks)
    (b) pandas `pd.read_csv("transactions_train.csv")`  vs  `pl.read_parquet("transactions.parquet")`

It prints a markdown table with ratios and saves it (and the raw numbers as JSON) under
bench/results/. Meant for the full scale (31.8M rows, ~3.3 GB CSV), which it generates
first when --data-dir has no raw files:

    python bench/bench_etl.py --data-dir /tmp/hm_full           # sample_data.py --full (minutes)
    python bench/bench_etl.py --data-dir /tmp/hm_full --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fde.artifacts import Artifacts

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
TARGET_ETL_SECONDS = 30
TARGET_ETL_MB = 1500
TARGET_MEMORY_SAVING = 0.80
TARGET_LOAD_SPEEDUP = 10

TASKS = {
    "pandas_read_csv": "pandas `read_csv(transactions_train.csv)`",
    "etl": "this ETL: `data_optim.optimize()`, 3 files + checks",
    "parquet_read": "polars `read_parquet(transactions.parquet)`",
}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_task(task: str, data_dir: Path) -> dict:
    """Run one task in this process and return its wall seconds and peak RSS (call in a fresh child)."""
    art = Artifacts(data_dir)
    if task == "pandas_read_csv":
        import pandas as pd
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        rows = len(pd.read_csv(art.raw_transactions))
    elif task == "etl":
        import data_optim
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        rows = data_optim.optimize(art, show_progress=False)["transactions"]["rows_out"]
    elif task == "parquet_read":
        import polars as pl
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        rows = pl.read_parquet(art.transactions).height
    else:
        raise ValueError(f"unknown task {task!r}")
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0  # with other jobs on the machine, wall time alone misleads
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"task": task, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "rows": rows}


def in_child(task: str, data_dir: Path) -> dict:
    """Run a task in a fresh interpreter; its last stdout line is the JSON result, the lines
    before it the stage's own summaries."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--task", task, "--data-dir", str(data_dir)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{task} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    *printed, last = done.stdout.strip().splitlines()
    return {**json.loads(last), "printed": printed}


def ensure_data(data_dir: Path) -> None:
    """Generate the full-scale raw CSVs with sample_data.py unless they are there already."""
    art = Artifacts(data_dir, data_dir / "images")
    if all(p.exists() for p in (art.raw_articles, art.raw_customers, art.raw_transactions)):
        return
    print(f"no raw CSVs in {art.raw_dir}: generating the full-scale sample (this takes minutes)", flush=True)
    cmd = [sys.executable, str(ROOT / "sample_data.py"), "--full", "--data-dir", str(data_dir),
           "--images-dir", str(data_dir / "images")]
    subprocess.run(cmd, cwd=ROOT, check=True)


def median_of(runs: list[dict]) -> dict:
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "rows": runs[0]["rows"], "runs": runs}


def table(res: dict, csv_bytes: int, repeats: int, load: str) -> str:
    """The markdown table of both comparisons, with ratios against pandas read_csv."""
    pd_, etl, pq = res["pandas_read_csv"], res["etl"], res["parquet_read"]
    saving = 1 - etl["peak_rss_mb"] / pd_["peak_rss_mb"]
    speedup = pd_["seconds"] / pq["seconds"]
    lines = [
        f"transactions_train.csv: {pd_['rows']:,} rows, {csv_bytes / 1e9:.2f} GB; "
        f"median of {repeats} runs, each in a fresh process; {os.cpu_count()} CPUs, load average {load}",
        "",
        "| task | wall s | CPU s | peak RSS MB | vs pandas read_csv |",
        "|---|---:|---:|---:|---|",
        f"| (a) {TASKS['pandas_read_csv']} | {pd_['seconds']:.1f} | {pd_['cpu_seconds']:.1f} | "
        f"{pd_['peak_rss_mb']:,.0f} | 1x |",
        f"| (a) {TASKS['etl']} | {etl['seconds']:.1f} | {etl['cpu_seconds']:.1f} | {etl['peak_rss_mb']:,.0f} | "
        f"{etl['seconds'] / pd_['seconds']:.2f}x time, {saving:.0%} less memory |",
        f"| (b) {TASKS['parquet_read']} | {pq['seconds']:.2f} | {pq['cpu_seconds']:.2f} | {pq['peak_rss_mb']:,.0f} | "
        f"{speedup:.1f}x faster, {1 - pq['peak_rss_mb'] / pd_['peak_rss_mb']:.0%} less memory |",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| full ETL < {TARGET_ETL_SECONDS} s | {etl['seconds']:.1f} s | "
        f"{'yes' if etl['seconds'] < TARGET_ETL_SECONDS else 'NO'} |",
        f"| full ETL peak < {TARGET_ETL_MB:,} MB | {etl['peak_rss_mb']:,.0f} MB | "
        f"{'yes' if etl['peak_rss_mb'] < TARGET_ETL_MB else 'NO'} |",
        f"| ETL memory >= {TARGET_MEMORY_SAVING:.0%} below pandas | {saving:.0%} | "
        f"{'yes' if saving >= TARGET_MEMORY_SAVING else 'NO'} |",
        f"| Parquet load >= {TARGET_LOAD_SPEEDUP}x faster than pandas CSV | {speedup:.1f}x | "
        f"{'yes' if speedup >= TARGET_LOAD_SPEEDUP else 'NO'} |",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/tmp/hm_full",
                        help="data dir with raw/ at full scale; generated if empty (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per task; the median is reported")
    parser.add_argument("--task", choices=sorted(TASKS), help=argparse.SUPPRESS)  # internal: one child run
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if args.task:
        print(json.dumps(run_task(args.task, data_dir)))
        return

    ensure_data(data_dir)
    art = Artifacts(data_dir)
    load_before = os.getloadavg()[0]
    runs = {t: [] for t in TASKS}
    for i in range(args.repeats):
        # the ETL runs before the Parquet read in each round, so the read sees this run's file
        for task in ("pandas_read_csv", "etl", "parquet_read"):
            r = in_child(task, data_dir)
            runs[task].append(r)
            print(f"round {i + 1}/{args.repeats} {task}: {r['seconds']:.2f} s wall, {r['cpu_seconds']:.2f} s CPU, "
                  f"{r['peak_rss_mb']:,.0f} MB", flush=True)
    res = {t: median_of(r) for t, r in runs.items()}
    # 1-minute load averages: other jobs slow the wall clock
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    text = table(res, art.raw_transactions.stat().st_size, args.repeats, load)
    text += "\n\nThe last ETL run's own summary:\n\n```\n" + "\n".join(runs["etl"][-1]["printed"]) + "\n```"
    print()
    print(text)

    import pandas
    import polars
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python bench/bench_etl.py " + " ".join(argv if argv is not None else sys.argv[1:])
    env = (f"{platform.platform()}, Python {platform.python_version()}, polars {polars.__version__}, "
           f"pandas {pandas.__version__}")
    (RESULTS / f"bench_etl-{stamp}.md").write_text(f"`{command}`\n\n{env}\n\n{text}\n")
    (RESULTS / f"bench_etl-{stamp}.json").write_text(json.dumps(
        {"command": command, "environment": env, "csv_bytes": art.raw_transactions.stat().st_size,
         "repeats": args.repeats, "results": res}, indent=2) + "\n")
    print(f"\nsaved {RESULTS / f'bench_etl-{stamp}.md'}")


if __name__ == "__main__":
    main()
