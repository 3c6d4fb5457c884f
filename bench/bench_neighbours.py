"""Benchmark the look-alike sources' neighbour look-ups: float32 candidates rescored in float64, against every
product taken in float64 (what they replaced).

    python bench/bench_neighbours.py --data-dir D [--repeats 3]

Fits the content source (ContentSimilarity) and the new arrivals (NewArrivals: the image vectors when
visual_features.py has run, else the content vectors) on the training part of the split, as the validation
week's fit does, then looks up every recently bought article's neighbours with each formulation alternately,
--repeats times: median seconds, the ratio, the peak memory each allocates (traced in one more call each), and
whether the tables are equal (they must be: both are the float64 products rounded to float32).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fde import artifacts as art  # noqa: E402
from fde import evaluation, strategies  # noqa: E402
from fde.strategies import top_n  # noqa: E402


def neighbours_before(query_vectors, query_ids, target_vectors, target_ids, n, block=1024, target_weights=None):
    """strategies.nearest_neighbours as it was: every product of the block taken in float64, rounded to float32."""
    empty = pl.DataFrame(schema={"article_id": pl.Int32, "neighbour_id": pl.Int32, "similarity": pl.Float32})
    n_eff = min(n + 1, len(target_ids))
    if len(query_ids) == 0 or n_eff == 0:
        return empty
    target_vectors, target_ids, target_weights, ends = strategies.heaviest_first(target_vectors, target_ids,
                                                                                 target_weights)
    self_col = strategies.own_columns(query_ids, target_ids)
    query_vectors, target_vectors = query_vectors.astype(np.float64), target_vectors.astype(np.float64)
    parts = []
    for start in range(0, len(query_ids), block):
        ids, own = query_ids[start:start + block], self_col[start:start + block]
        active, lo = np.arange(len(ids)), 0
        rows, cols, values = [], [], []
        for end in ends:
            sims = (query_vectors[start:start + block][active] @ target_vectors[lo:end].T).astype(np.float32)
            if target_weights is not None:
                sims *= target_weights[None, lo:end]
            inside = np.flatnonzero((own[active] >= lo) & (own[active] < end))
            sims[inside, own[active][inside] - lo] = -np.inf
            r, c = top_n(sims, min(n_eff, end - lo), above=0.0)
            rows.append(active[r])
            cols.append(c + lo)
            values.append(sims[r, c])
            if end == len(target_ids):
                break
            active, lo = strategies.still_open(active, rows, values, len(ids), n, target_weights[end]), end
            if len(active) == 0:
                break
        parts.append(strategies.block_neighbours(ids, rows, target_ids, cols, values))
    return strategies.best_neighbours(parts, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    inputs = evaluation.load_inputs(art.from_args(args), quiet=True)
    now = strategies.nearest_neighbours
    for source in (strategies.ContentSimilarity(), strategies.NewArrivals(inputs.visual_vectors)):
        source.fit(inputs.train, inputs.articles)
        queries = source.recent["article_id"].unique().sort()
        source.neighbour_table(queries[:1], source.weighted, source.articles)  # the content vectors, made once
        times: dict[str, list[float]] = {"before": [], "now": []}
        tables = {}
        for _ in range(args.repeats):
            for name, look_up in (("before", neighbours_before), ("now", now)):
                strategies.nearest_neighbours = look_up  # neighbour_table calls the module's function
                try:
                    start = time.perf_counter()
                    tables[name] = source.neighbour_table(queries, source.weighted, source.articles)
                    times[name].append(time.perf_counter() - start)
                finally:
                    strategies.nearest_neighbours = now
        peaks = {}
        for name, look_up in (("before", neighbours_before), ("now", now)):  # once more each, memory traced
            strategies.nearest_neighbours = look_up
            tracemalloc.start()
            try:
                source.neighbour_table(queries, source.weighted, source.articles)
                peaks[name] = tracemalloc.get_traced_memory()[1] / 2 ** 20
            finally:
                tracemalloc.stop()
                strategies.nearest_neighbours = now
        before, after = statistics.median(times["before"]), statistics.median(times["now"])
        print(f"{source.name}: {len(queries):,} queries x {source.weighted.height:,} targets, "
              f"{tables['now'].height:,} pairs: float64 products {before:.2f} s and {peaks['before']:,.0f} MB, "
              f"float32 + rescoring {after:.2f} s ({after / before:.2f}x) and {peaks['now']:,.0f} MB, "
              f"equal: {tables['now'].equals(tables['before'])}", flush=True)


if __name__ == "__main__":
    main()
