"""Benchmark the submission's batches scored one at a time against scale_out.LOCAL_THREADS at a time.

    python ranker.py --data-dir D && python final.py --data-dir D    # a trained ranker and its choices
    python bench/bench_threads.py --data-dir D [--batches 6] [--repeats 2]

Fits the saved ranker on every transaction (as final.py's submission does), scores two batches to warm it up
(the compiled trees, the look-alikes of the first customers' purchases), then scores the same --batches
batches of SCORE_ROWS // POOL_ROWS customers (final.py's batch) alternately with 1 and LOCAL_THREADS
threads, --repeats times: median seconds, CPU seconds, the ratio, and whether the frames are equal.
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
from fde import artifacts as art  # noqa: E402
from fde import candidates, evaluation, ranking, scale_out  # noqa: E402
from fde.training import load_vectors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    artifacts = art.Artifacts(Path(args.data_dir))
    inputs = evaluation.load_inputs(artifacts, quiet=True)
    model = ranking.Model.load(artifacts)
    transactions = pl.concat([inputs.train, inputs.validation, inputs.test])
    populars, personal = candidates.make_sources(inputs.customers, inputs.twins, inputs.visual_vectors,
                                                 model.meta["scales"])
    ranker = final.make_ranker(model, populars, personal, inputs, load_vectors(artifacts, inputs.articles))
    ranker.fit(transactions, inputs.articles)
    step = ranking.SCORE_ROWS // candidates.POOL_ROWS
    ids = pl.read_parquet(artifacts.customer_ids)["customer_id"]
    final.recommend_everyone(ranker, ids.head(2 * step), show_progress=False, chunk=step, threads=1)  # warm up
    ids = ids.slice(2 * step, args.batches * step)
    times: dict[int, list[tuple[float, float]]] = {1: [], scale_out.LOCAL_THREADS: []}
    frames = {}
    for _ in range(args.repeats):
        for threads in times:
            wall, cpu = time.perf_counter(), time.process_time()
            frames[threads] = final.recommend_everyone(ranker, ids, show_progress=False, chunk=step, threads=threads)
            times[threads].append((time.perf_counter() - wall, time.process_time() - cpu))
    median = {t: statistics.median(w for w, _ in runs) for t, runs in times.items()}
    print(f"{ids.len():,} customers in {-(-ids.len() // step)} batches of {step:,}; {inputs.customers.height:,} "
          "customers fitted")
    for threads, runs in times.items():
        print(f"{threads} thread(s): median {median[threads]:6.1f} s (runs: "
              f"{', '.join(f'{w:.1f} s, cpu {c:.1f} s' for w, c in runs)})")
    one, many = median[1], median[scale_out.LOCAL_THREADS]
    print(f"{scale_out.LOCAL_THREADS} threads / 1: {one / many:.2f}x faster; the same frame: "
          f"{frames[1].equals(frames[scale_out.LOCAL_THREADS])}")


if __name__ == "__main__":
    main()
