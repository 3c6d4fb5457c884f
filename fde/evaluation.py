"""Scoring a week: every strategy's MAP@12, lift, the table, the cold-start slice, and choosing time scales.

Shared by individual_baseline.py, ranker.py and final.py. A week is scored on the customers who
bought something in it (its truth frame); the models are always fitted before the week starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from fde import artifacts as art
from fde import metrics
from fde.strategies import (
    CO_PURCHASE_GRID,
    REPURCHASE_GRID,
    CoPurchase,
    K,
    Popularity,
    PurchaseHistory,
    Recommender,
    Repurchase,
    VisualSimilarity,
)
from fde.visual_index import load_visual_vectors

BASELINE = "popular_last_week"
SCALE_CUSTOMERS = 20_000   # validation customers a time scale is chosen on (a seeded sample above this)
HALF_LIFE_GRID = (7.0, 30.0, 90.0, 365.0)


@dataclass
class Inputs:
    """What the modelling stages read: the catalogue, the customers, the split and the visual artifacts.

    The split's parts are transactions (t_dat, customer_id, article_id, ...); a truth frame holds each
    buyer's unique articles of a held-out week (customer_id, article_ids). twins and visual_vectors are
    None when visual_features.py / visual_reccs.py have not run.
    """

    articles: pl.DataFrame
    customers: pl.DataFrame
    train: pl.DataFrame | None = None
    validation: pl.DataFrame | None = None
    test: pl.DataFrame | None = None
    validation_truth: pl.DataFrame | None = None
    test_truth: pl.DataFrame | None = None
    twins: pl.DataFrame | None = None
    visual_vectors: tuple[np.ndarray, np.ndarray] | None = None


def load_inputs(artifacts: art.Artifacts, quiet: bool = False) -> Inputs:
    """Articles, customers, the split, and the visual twins and vectors (None, said once, when absent)."""
    art.require_fresh(artifacts, "data_optim.py", "split_data.py")  # no result from a split older than the data
    processed, split = artifacts.command("data_optim.py"), artifacts.command("split_data.py")
    visual = VisualSimilarity.load(artifacts, quiet=quiet)
    return Inputs(
        articles=art.read_parquet(artifacts.articles, processed),
        customers=art.read_parquet(artifacts.customers, processed),
        **{part: art.read_parquet(artifacts.split(part), split) for part in ("train", "validation", "test")},
        **{f"{part}_truth": art.read_parquet(artifacts.truth(part), split) for part in ("validation", "test")},
        twins=None if visual is None else visual.twins,
        visual_vectors=load_visual_vectors(artifacts),  # new arrivals fall back to content without them
    )


def week_of(transactions: pl.DataFrame) -> list[str]:
    """[first day, last day] of a held-out week, as ISO dates."""
    return [str(transactions["t_dat"].min()), str(transactions["t_dat"].max())]


def sample_customers(truth: pl.DataFrame, limit: int, seed: int = 0) -> pl.DataFrame:
    """The truth frame, or a seeded sample of `limit` of its customers when it is larger."""
    return truth if truth.height <= limit else truth.sample(limit, seed=seed).sort("customer_id")


def fill_with(recs: pl.DataFrame, filler: pl.DataFrame, customers: pl.DataFrame, k: int = K) -> pl.DataFrame:
    """Complete each customer's list to k with the filler's articles (global list) they do not have yet."""
    frame = customers.select(pl.col("customer_id").cast(pl.UInt64)).unique()
    extra = (frame.join(filler.select("article_id").with_row_index("order"), how="cross")
             .join(recs.select("customer_id", "article_id"), on=["customer_id", "article_id"], how="anti")
             .with_columns(score=pl.lit(-1.0, dtype=pl.Float32)))
    merged = pl.concat([
        recs.select("customer_id", "article_id", "score", order=pl.col("rank").cast(pl.UInt32)),
        extra.select("customer_id", "article_id", "score", order=pl.col("order").cast(pl.UInt32) + 10_000),
    ])
    return (merged.sort("customer_id", "order")
            .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).over("customer_id"))
            .filter(pl.col("rank") <= k).drop("order"))


def score_week(strategies: list[Recommender], truth: pl.DataFrame, seen: pl.Series,
               n_articles: int) -> tuple[dict, int]:
    """Every strategy's metrics on one week; cold start = purchases of articles never sold before it."""
    customers = truth["customer_id"]
    cold = metrics.truth_pairs(truth).filter(~pl.col("article_id").is_in(seen.cast(pl.Int32).implode()))
    results = {}
    for strategy in strategies:
        recs = strategy.recommend(customers, K)
        results[strategy.name] = {**metrics.evaluate(recs, truth, n_articles, K),
                                  "cold_start_hits": metrics.hits_on(recs, cold, K)}
    return results, cold.height


def add_lift(results: dict) -> dict:
    """Lift of every strategy over the last-week popularity baseline (None when the baseline scores 0)."""
    base = results.get(BASELINE, {}).get("map12", 0.0)
    for scores in results.values():
        scores["lift"] = scores["map12"] / base if base > 0 else None
    return results


def table_of(results: dict, validation: dict) -> pl.DataFrame:
    """The table the user reads: one row per strategy, in the order given (hybrid and ranker last)."""
    rows = [{"strategy": name, "val MAP@12": validation.get(name, {}).get("map12"), "MAP@12": s["map12"],
             "lift": s["lift"], "recall@12": s["recall12"], "coverage": s["coverage"],
             "cold-start hits": s["cold_start_hits"]} for name, s in results.items()]
    return pl.DataFrame(rows, schema_overrides={"val MAP@12": pl.Float64, "lift": pl.Float64})


def print_table(table: pl.DataFrame) -> None:
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, float_precision=4,
                   tbl_rows=50, tbl_width_chars=160):
        print(table)


def filled_map(strategy: Recommender, truth: pl.DataFrame, filler: pl.DataFrame) -> float:
    """MAP@12 of a fitted strategy's lists completed with a popular list, on one week."""
    customers = truth.select("customer_id")
    recs = fill_with(strategy.recommend(customers["customer_id"], K), filler, customers, K)
    return metrics.map_at_k(recs, truth, K)


def choose_scales(history: pl.DataFrame, articles: pl.DataFrame, truth: pl.DataFrame, cutoff,
                  progress=None) -> tuple[dict, dict]:
    """The time scales of the repurchase sources and the co-purchase window, chosen on one week (validation).

    Each candidate scale is fitted on the history before the cut-off and scored by the MAP@12 of
    its lists filled with last week's top sellers, on (a sample of) that week's buyers. Returns
    ({source: constructor arguments}, {source: {setting: MAP@12}}) so the choice can be shown.
    """
    truth = sample_customers(truth, SCALE_CUSTOMERS)
    filler = Popularity(window_days=7).fit(history, articles, cutoff).top_articles(K)
    grids = {
        "repurchase": [({"kernel": kernel, "scale_days": scale}, Repurchase(kernel, scale))
                       for kernel, scale in REPURCHASE_GRID],
        "purchase_history": [({"half_life_days": h, "window_days": None}, PurchaseHistory(h, window_days=None))
                             for h in HALF_LIFE_GRID],
        "co_purchase": [({"pair_days": d}, CoPurchase(pair_days=d)) for d in CO_PURCHASE_GRID],
    }
    chosen, scores = {}, {}
    for source, options in grids.items():
        tried = []
        for args, strategy in options:
            if progress is not None:
                progress.set_postfix_str(f"choose {source} scale")
            # the tables of each customer's own purchases for the sampled buyers only: the same lists
            fitted = strategy.fit(history, articles, cutoff, truth.select("customer_id"))
            tried.append((filled_map(fitted, truth, filler), args))
            if progress is not None:
                progress.update(1)
        best = max(tried, key=lambda t: t[0])  # ties keep the first (shortest) scale
        chosen[source] = best[1]
        scores[source] = {" ".join(f"{k}={v}" for k, v in args.items()): round(value, 5) for value, args in tried}
    return chosen, scores


def scale_steps() -> int:
    """How many fits `choose_scales` makes (for progress bars)."""
    return len(REPURCHASE_GRID) + len(HALF_LIFE_GRID) + len(CO_PURCHASE_GRID)
