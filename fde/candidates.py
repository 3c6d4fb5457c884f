"""The candidate pool: what every source proposes to each customer, one row per (customer, article).

The first stage of the two-stage recommender (the hybrid blends the pool by weight, the ranker
ranks it with LightGBM). Columns are named after the strategy they come from, never by position,
so a column keeps its meaning when an optional strategy (visual, without images) is absent:

    customer_id, article_id,
    score__<source>   the source's score in [0, 1] (0 when it did not propose the article),
    rank__<source>    its rank in that customer's list (null when not proposed),
    source__<source>  the purchase that explains it (null when none does),
    score__<prior>    each popularity prior's score of every pooled article.
"""
from __future__ import annotations

from datetime import timedelta

import polars as pl

from fde import metrics
from fde.strategies import (
    ARTICLE,
    CategoryPopularity,
    Colourways,
    ContentSimilarity,
    CoPurchase,
    LocalPopularity,
    NewArrivals,
    Popularity,
    PurchaseHistory,
    Recommender,
    Repurchase,
    VisualSimilarity,
    popularity_strategies,
)

N_CANDIDATES = 24  # candidates per personal source and customer
N_POPULAR = 16     # popular candidates per customer: the fill, and room for trends
KEYS = ["customer_id", "article_id"]


def score_column(name: str) -> str:
    return f"score__{name}"


def rank_column(name: str) -> str:
    return f"rank__{name}"


def source_column(name: str) -> str:
    return f"source__{name}"


def proposals(personal: list[Recommender], customers: pl.DataFrame, n: int = N_CANDIDATES) -> dict[str, pl.DataFrame]:
    """Each fitted personal source's top n candidates for these customers, by source name."""
    return {strategy.name: strategy.candidates(customers, n) for strategy in personal}


def build(personal: list[Recommender], popular: list[Popularity], customers: pl.DataFrame,
          n_candidates: int = N_CANDIDATES, n_popular: int = N_POPULAR,
          proposed: dict[str, pl.DataFrame] | None = None) -> pl.DataFrame:
    """The pool for these customers: the union of every source's candidates with every source's evidence.

    The first popularity prior also proposes its top n_popular to everyone (so every list can be
    filled); every prior scores every pooled row.
    """
    if proposed is None:
        proposed = proposals(personal, customers, n_candidates)
    parts = [frame.select(KEYS) for frame in proposed.values()]
    if popular:
        parts.append(popular[0].candidates(customers, n_popular).select(KEYS))
    empty = pl.DataFrame(schema={"customer_id": pl.UInt64, "article_id": ARTICLE})
    pool = pl.concat(parts).unique() if parts else empty
    return annotate(pool, proposed, popular)


def annotate(pairs: pl.DataFrame, proposed: dict[str, pl.DataFrame], popular: list[Popularity]) -> pl.DataFrame:
    """Given (customer_id, article_id) pairs with every source's evidence: score__, rank__, source__ columns.

    proposed: each personal source's candidates for (at least) these customers; a pair a source did
    not propose gets score 0 and no rank.
    """
    pool = pairs.select(KEYS).with_columns(pl.col("article_id").cast(ARTICLE)).unique().sort(KEYS)
    for name, frame in proposed.items():
        pool = pool.join(frame.select(
            *KEYS,
            pl.col("score").cast(pl.Float32).alias(score_column(name)),
            pl.col("score").rank("ordinal", descending=True).over("customer_id").cast(pl.UInt16)
            .alias(rank_column(name)),
            pl.col("source_article_id").cast(ARTICLE).alias(source_column(name)),
        ), on=KEYS, how="left", maintain_order="left")
    for prior in popular:
        pool = prior.score_pairs(pool).rename({"score": score_column(prior.name)})
    return pool.with_columns(pl.col(c).fill_null(0.0).cast(pl.Float32) for c in pool.columns if c.startswith("score__"))


def source_names(pool: pl.DataFrame) -> list[str]:
    """The personal sources present in a pool (those with a rank column)."""
    return [c.removeprefix("rank__") for c in pool.columns if c.startswith("rank__")]


def recall(pool: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float]:
    """Share of the week's purchases (unique customer, article pairs) each source proposed, and the whole pool.

    Computed over the customers in the truth frame: the pool's ceiling, whatever the ranking.
    """
    bought = metrics.truth_pairs(truth)
    if bought.height == 0:
        return {}
    found = pool.join(bought, on=KEYS, how="semi")
    out = {name: found.filter(pl.col(rank_column(name)).is_not_null()).height / bought.height
           for name in source_names(pool)}
    out["pool"] = found.height / bought.height
    return out


def labels(pool: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """The pool with label = 1 where the customer bought the article in the truth week, else 0."""
    bought = metrics.truth_pairs(truth).with_columns(label=pl.lit(1, dtype=pl.UInt8))
    return (pool.join(bought, on=KEYS, how="left", maintain_order="left")
            .with_columns(pl.col("label").fill_null(0)))


def make_sources(customers: pl.DataFrame | None = None, twins: pl.DataFrame | None = None,
                 visual_vectors=None, scales: dict | None = None) -> tuple[list[Popularity], list[Recommender]]:
    """Fresh popularity lists and personal candidate sources (visual only with twins; new arrivals always;
    popularity by age band x postal code when customers have postal codes).

    scales: the time scales chosen on the validation week (evaluation.choose_scales), by source name.
    """
    scales = scales or {}
    populars = popularity_strategies(customers)
    personal = [PurchaseHistory(**scales.get("purchase_history", {})), Repurchase(**scales.get("repurchase", {})),
                Colourways(**scales.get("repurchase", {})), CoPurchase(**scales.get("co_purchase", {})),
                ContentSimilarity(), CategoryPopularity()]
    if twins is not None:
        personal.append(VisualSimilarity(twins))
    personal.append(NewArrivals(visual_vectors))
    if customers is not None and "postal_code" in customers.columns:
        personal.append(LocalPopularity(customers))
    return populars, personal


def week_truth(transactions: pl.DataFrame, start, days: int = 7) -> pl.DataFrame:
    """The unique articles each customer bought in [start, start + days): customer_id, article_ids."""
    return (transactions.filter((pl.col("t_dat") >= start) & (pl.col("t_dat") < start + timedelta(days=days)))
            .group_by("customer_id").agg(article_ids=pl.col("article_id").cast(ARTICLE).unique().sort())
            .sort("customer_id"))
