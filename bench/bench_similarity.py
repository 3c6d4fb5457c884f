"""Benchmark the similarity features' block size: features.SIMILARITY_ROWS against 166,666-row blocks (the old size).

    python ranker.py --data-dir D                      # a trained ranker and its choices
    python bench/bench_similarity.py --data-dir D [--customers 20000] [--repeats 3]

Fits the saved ranker's sources and features on every transaction (as final.py's submission does), builds the
pool of --customers customers (the submission's batch by default), then measures every vector kind's
similarity features (Context.similarity) with each block size alternately, --repeats times: median seconds,
the ratio, and whether the features are equal.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import final  # noqa: E402
from fde import candidates, features, ranking  # noqa: E402

OLD_ROWS = 1_000_000 // features.RECENT_ITEMS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--customers", type=int, default=ranking.SCORE_ROWS // candidates.POOL_ROWS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    artifacts, inputs, ranker = final.submission_ranker(args.data_dir)
    ids = ranking.as_customer_frame(inputs.customers["customer_id"]).sample(
        min(args.customers, inputs.customers.height), seed=0)
    pool = ranker.pool(ids)
    context = ranker.context
    recent = context.customer_tables(pool["customer_id"]).recent
    new = features.SIMILARITY_ROWS
    times: dict[int, list[float]] = {OLD_ROWS: [], new: []}
    out = {}
    for _ in range(args.repeats):
        for rows in times:
            features.SIMILARITY_ROWS = rows
            start = time.perf_counter()
            out[rows] = [context.similarity(pool, kind, recent) for kind in context.vectors]
            times[rows].append(time.perf_counter() - start)
    median = {rows: statistics.median(t) for rows, t in times.items()}
    print(f"{pool.height:,} pool rows of {ids.height:,} customers; vector kinds: {', '.join(context.vectors)}")
    for rows, seconds in median.items():
        runs = ", ".join(f"{t:.2f}" for t in times[rows])
        print(f"blocks of {rows:>7,} rows: median {seconds:6.2f} s (runs: {runs})")
    print(f"{new:,} / {OLD_ROWS:,} rows: {median[OLD_ROWS] / median[new]:.2f}x faster; the same features: "
          f"{all(a.equals(b) for a, b in zip(out[OLD_ROWS], out[new]))}")


if __name__ == "__main__":
    main()
