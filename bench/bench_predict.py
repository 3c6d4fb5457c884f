"""Benchmark the ranker's scoring: LightGBM's own predict against the model compiled by lleaves, on a real pool.

    python ranker.py --data-dir D            # a trained ranker (results/ranker/model.txt)
    python bench/bench_predict.py --data-dir D [--customers 20000] [--repeats 3]

Fits the saved ranker's sources and features on every transaction (as final.py's submission does), builds
one batch's pool with its features (the submission's batch: SCORE_ROWS // POOL_ROWS customers), then scores
it alternately with each, --repeats times: median seconds, rows a second, the ratio, the largest score
difference and whether each customer's top 12 is the same. Compiling is timed apart (once per process).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import final  # noqa: E402
from fde import candidates, ranking  # noqa: E402
from fde.strategies import K, top_k  # noqa: E402


def top_lists(frame: pl.DataFrame, scores: np.ndarray) -> pl.DataFrame:
    return top_k(frame.select("customer_id", "article_id").with_columns(score=pl.Series(scores, dtype=pl.Float32)), K)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--customers", type=int, default=ranking.SCORE_ROWS // candidates.POOL_ROWS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    artifacts, inputs, ranker = final.submission_ranker(args.data_dir)
    model = ranker.model
    ids = ranking.as_customer_frame(inputs.customers["customer_id"]).sample(
        min(args.customers, inputs.customers.height), seed=0)
    frame = ranker.frame(ids)
    x = model.matrix(frame)
    start = time.perf_counter()
    model.compiled()
    compile_s = time.perf_counter() - start
    times: dict[str, list[float]] = {"lightgbm": [], "compiled": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        plain = model.booster.predict(x, num_threads=0)
        times["lightgbm"].append(time.perf_counter() - start)
        start = time.perf_counter()
        compiled = model.predict(frame)  # the compiled path: the model is compiled
        times["compiled"].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    same = top_lists(frame, plain).equals(top_lists(frame, compiled))
    print(f"{frame.height:,} pool rows of {ids.height:,} customers, {len(model.features)} features, "
          f"{model.booster.num_trees()} trees; compile {compile_s:.1f} s")
    for name, seconds in median.items():
        print(f"{name:<9} median {seconds:6.2f} s  {frame.height / seconds / 1e6:5.2f} M rows/s  "
              f"(runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"compiled / lightgbm: {median['lightgbm'] / median['compiled']:.1f}x faster; largest score difference "
          f"{float(np.abs(plain - compiled).max()):.1e}; same top {K} for every customer: {same}")


if __name__ == "__main__":
    main()
