"""Benchmark a cut-off's tables and the explanations against the formulations they replaced.

    python ranker.py --data-dir D                      # a trained ranker and its choices
    python bench/bench_fit.py --data-dir D [--customers 40000] [--repeats 3]

Fits the saved ranker on every transaction (as final.py's submission does) and takes the top 12 of
--customers customers, then measures alternately, --repeats times, each with its previous formulation:
the article table (features.Context._articles: lazy, "bought on two days" as first day < last day; before:
eager group_by with a count of distinct days), ALS's purchase matrix (factors.purchase_matrix: lazy counts,
codes by dense rank; before: eager counts, codes by replace_strict), and the path attributions of the
recommendations (Model.path_contributions with the leaf indices from the trees compiled by lleaves, once
the model has explained ranking.COMPILE_ROWS rows, its compile timed apart; before: LightGBM's pred_leaf
in blocks of PATH_BLOCK_ROWS rows), and a submission batch's top 12 with reasons (final.recommend_batch;
before: the dot products of ALS factors in blocks of 1M pairs, the compiled model fed 250,000 rows at a
time, pred_leaf's leaves). Prints median seconds, the ratio and whether the results are equal.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import final  # noqa: E402
from fde import factors, ranking, reasons  # noqa: E402
from fde.features import SALES_WEEKS  # noqa: E402
from fde.ids import ARTICLE, CUSTOMER  # noqa: E402


def articles_before(context) -> pl.DataFrame:
    """The article table as computed before (eager group_by, distinct days counted)."""
    history, cutoff = context.history, context.cutoff
    sales = [(pl.col("t_dat") >= cutoff - timedelta(weeks=w)).sum().cast(pl.Float32).alias(f"sales_{w}w")
             for w in SALES_WEEKS]
    recent = history.filter(pl.col("t_dat") >= cutoff - timedelta(weeks=max(SALES_WEEKS)))
    price = recent.group_by("article_id").agg(price=pl.col("price").mean().cast(pl.Float32))
    repeat = (history.group_by("article_id", "customer_id").agg(days=pl.col("t_dat").n_unique())
              .group_by("article_id").agg(repeat_buyer_share=(pl.col("days") >= 2).mean().cast(pl.Float32)))
    table = (history.group_by("article_id").agg(
        *sales, days_since_first_sale=(pl.lit(cutoff) - pl.col("t_dat").min()).dt.total_days().cast(pl.Float32))
        .join(price, on="article_id", how="left").join(repeat, on="article_id", how="left"))
    return table.with_columns(trend=((pl.col("sales_1w") + 1) / (pl.col("sales_4w") / 4 + 1)).cast(pl.Float32))


def matrix_before(history: pl.DataFrame, cutoff) -> tuple:
    """ALS's purchase matrix as built before (eager counts, codes by replace_strict)."""
    import scipy.sparse as sp

    tx = history.filter((pl.col("t_dat") < cutoff) & (pl.col("t_dat") >= cutoff - timedelta(days=factors.WINDOW_DAYS)))
    counts = tx.group_by("customer_id", "article_id").agg(n=pl.len())
    users = counts["customer_id"].cast(CUSTOMER).unique().sort()
    items = counts["article_id"].cast(ARTICLE).unique().sort()
    coded = counts.select(
        c=pl.col("customer_id").cast(CUSTOMER).replace_strict(users, pl.int_range(len(users), eager=True)),
        a=pl.col("article_id").cast(ARTICLE).replace_strict(items, pl.int_range(len(items), eager=True)),
        n=pl.col("n").cast(pl.Float32))
    return users.to_numpy(), items.to_numpy(), sp.csr_matrix(
        (coded["n"].to_numpy(), (coded["c"].to_numpy(), coded["a"].to_numpy())), shape=(len(users), len(items)),
        dtype=np.float32)


@contextmanager
def previous_leaves_and_blocks(model: ranking.Model):
    """The previous code's way inside: explanations' leaves from LightGBM's pred_leaf (in blocks of PATH_BLOCK_ROWS
    rows), ALS dot products in blocks of 1M pairs, the compiled trees fed 250,000 rows at a time."""
    blocks, leaf_model = (factors.SCORE_BLOCK, ranking.COMPILED_CHUNK_ROWS), model.__dict__.pop("_leaf_model")
    factors.SCORE_BLOCK, ranking.COMPILED_CHUNK_ROWS = 1_000_000, 250_000
    model._rows_explained = -(10 ** 15)  # below COMPILE_ROWS for good: LightGBM's pred_leaf
    try:
        yield
    finally:
        factors.SCORE_BLOCK, ranking.COMPILED_CHUNK_ROWS = blocks
        model._leaf_model, model._rows_explained = leaf_model, 0


def attributions_before(model: ranking.Model, rows: pl.DataFrame, groups: tuple[int, ...]) -> np.ndarray:
    """Path attributions as computed before: LightGBM's pred_leaf in blocks of PATH_BLOCK_ROWS rows."""
    with previous_leaves_and_blocks(model):
        return model.path_contributions(rows, groups)


def batch_before(ranker, batch: pl.DataFrame) -> pl.DataFrame:
    """A submission batch's top 12 with reasons as the previous code made them."""
    with previous_leaves_and_blocks(ranker.model):
        return final.recommend_batch(ranker, batch)


def same_matrix(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and (a[2] != b[2]).nnz == 0


def submission_setup(description: str) -> tuple[argparse.Namespace, object, ranking.LearnedRanker, pl.DataFrame]:
    """What these benchmarks start from: --data-dir, --customers and --repeats; the saved ranker fitted on every
    transaction (final.submission_ranker); a seeded sample of --customers customers.
    Returns (arguments, inputs, ranker, customers)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--customers", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _, inputs, ranker = final.submission_ranker(args.data_dir)
    ids = ranking.as_customer_frame(inputs.customers["customer_id"]).sample(
        min(args.customers, inputs.customers.height), seed=0)
    return args, inputs, ranker, ids


def main() -> None:
    args, inputs, ranker, ids = submission_setup(__doc__)
    context, model = ranker.context, ranker.model
    top = ranker.scored(ids, 12)
    batch = ids.head(final.batch_customers(ranker))  # the size of the submission's batches
    model.compiled()
    final.recommend_batch(ranker, batch)  # its look-alikes looked up before either way is timed
    _, groups = reasons.family_groups(model.features)
    start = time.perf_counter()
    model.leaf_model()  # what a submission compiles once it has explained COMPILE_ROWS rows
    print(f"the leaf model of {model.booster.num_trees()} trees compiled in {time.perf_counter() - start:.2f} s")
    pairs = {
        "article table": (lambda: articles_before(context), lambda: context._articles(context.history)[0],
                          lambda a, b: a.sort("article_id").equals(b.sort("article_id"))),
        "ALS purchase matrix": (lambda: matrix_before(context.history, context.cutoff),
                                lambda: factors.purchase_matrix(context.history, context.cutoff, factors.WINDOW_DAYS),
                                same_matrix),
        f"path attributions of {top.height:,} rows": (lambda: attributions_before(model, top, groups),
                                                      lambda: model.path_contributions(top, groups), np.array_equal),
        f"a {batch.height:,}-customer batch's top 12 with reasons": (
            lambda: batch_before(ranker, batch), lambda: final.recommend_batch(ranker, batch),
            lambda a, b: a.equals(b)),
    }
    print(f"{context.history.height:,} transactions before {context.cutoff}; {ids.height:,} customers' top 12")
    compare(pairs, args.repeats)


def compare(pairs: dict, repeats: int) -> None:
    """For each name -> (before, after, equal): both ways run alternately `repeats` times; prints their median
    seconds, the ratio and whether their last results are equal."""
    for name, (before, after, equal) in pairs.items():
        times: dict[str, list[float]] = {"before": [], "after": []}
        results = {}
        for _ in range(repeats):
            for which, run in (("before", before), ("after", after)):
                start = time.perf_counter()
                results[which] = run()
                times[which].append(time.perf_counter() - start)
        median = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}: before median {median['before']:.2f} s, after {median['after']:.2f} s: "
              f"{median['before'] / median['after']:.2f}x; the same: {equal(results['before'], results['after'])} "
              f"(runs: {', '.join(f'{b:.2f}/{a:.2f}' for b, a in zip(times['before'], times['after']))})", flush=True)


if __name__ == "__main__":
    main()
