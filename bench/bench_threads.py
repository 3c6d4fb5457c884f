"""Benchmark the submission's batches scored one at a time against scale_out.LOCAL_THREADS at a time.

    python ranker.py --data-dir D && python final.py --data-dir D    # a trained ranker and its choices
    python bench/bench_threads.py --data-dir D [--batches 6] [--repeats 2]

Fits the saved ranker on every transaction (as final.py's submission does), compiles its trees and scores
2,000 customers to warm it up, then scores the same customers
(--batches one-thread batches of SCORE_ROWS // POOL_ROWS) alternately in one thread and, as final.py does,
LOCAL_THREADS batches at a time of as many rows together, --repeats times: median seconds, CPU seconds, the
ratio, and whether the frames are equal. Then the same for the launch audiences' proposals
(final.launch_pairs) of the first --launches launches at the submission's cut-off.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import final  # noqa: E402
from fde import launch, scale_out  # noqa: E402

WARM_UP = 2_000  # customers scored first (the look-alikes of many recent purchases are looked up once)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--launches", type=int, default=600)
    args = parser.parse_args()
    artifacts, inputs, ranker = final.submission_ranker(args.data_dir)
    step = final.batch_customers(ranker, threads=1)
    ids = pl.read_parquet(artifacts.customer_ids)["customer_id"]
    ranker.model.compiled()  # as final.py does before its threads start
    final.recommend_everyone(ranker, ids.head(WARM_UP), show_progress=False, chunk=step, threads=1)
    ids = ids.slice(WARM_UP, args.batches * step)
    times: dict[int, list[tuple[float, float]]] = {1: [], scale_out.LOCAL_THREADS: []}
    frames = {}
    for _ in range(args.repeats):
        for threads in times:  # final.py's batches: as many pooled rows in memory at once
            wall, cpu = time.perf_counter(), time.process_time()
            frames[threads] = final.recommend_everyone(ranker, ids, show_progress=False, threads=threads,
                                                       chunk=final.batch_customers(ranker, threads))
            times[threads].append((time.perf_counter() - wall, time.process_time() - cpu))
    median = {t: statistics.median(w for w, _ in runs) for t, runs in times.items()}
    print(f"{ids.len():,} customers of {inputs.customers.height:,}")
    for threads, runs in times.items():
        print(f"{threads} thread(s), batches of {final.batch_customers(ranker, threads):,} customers: median "
              f"{median[threads]:6.1f} s (runs: {', '.join(f'{w:.1f} s, cpu {c:.1f} s' for w, c in runs)})")
    one, many = median[1], median[scale_out.LOCAL_THREADS]
    print(f"{scale_out.LOCAL_THREADS} threads / 1: {one / many:.2f}x faster; the same frame: "
          f"{frames[1].equals(frames[scale_out.LOCAL_THREADS])}")
    everything = pl.concat([inputs.train, inputs.validation, inputs.test])
    scorer = launch.LaunchAudience(ranker.articles, everything, ranker.cutoff)
    launches = launch.launches(ranker.articles, everything, ranker.cutoff).to_list()[:args.launches]
    times = {1: [], scale_out.LOCAL_THREADS: []}
    for _ in range(args.repeats):
        for threads in times:
            wall = time.perf_counter()
            frames[threads] = final.launch_pairs(scorer, launches, show_progress=False, threads=threads)
            times[threads].append(time.perf_counter() - wall)
    median = {t: statistics.median(runs) for t, runs in times.items()}
    print(f"launch proposals of {len(launches):,} launches: 1 thread {median[1]:.2f} s, {scale_out.LOCAL_THREADS} "
          f"threads {median[scale_out.LOCAL_THREADS]:.2f} s: {median[1] / median[scale_out.LOCAL_THREADS]:.2f}x; "
          f"the same pairs: {frames[1].equals(frames[scale_out.LOCAL_THREADS])}")


if __name__ == "__main__":
    main()
