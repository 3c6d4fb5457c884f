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

import numpy as np
import polars as pl

from fde import metrics
from fde.strategies import (
    ARTICLE,
    CUSTOMER,
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
    Shared,
    VisualSimilarity,
    popularity_strategies,
)

N_CANDIDATES = 24  # candidates per personal source and customer, until the depths are chosen on validation
N_POPULAR = 16     # popular candidates per customer: the fill, and room for trends (idem)
KEYS = ["customer_id", "article_id"]
# Each source's depth is chosen on the validation week (choose_depths) among DEPTHS, from the recall
# curves of the sources' candidates. POOL_ROWS is a cost, not a behaviour: every customer's pool is
# scored for the submission, so its rows per customer (on average) are bounded.
DEPTHS = (12, 24, 50, 100, 200)
POOL_ROWS = 250
DEPTH_CUSTOMERS = 5_000  # validation buyers the curves are measured on (a seeded sample above this)


def score_column(name: str) -> str:
    return f"score__{name}"


def rank_column(name: str) -> str:
    return f"rank__{name}"


def source_column(name: str) -> str:
    return f"source__{name}"


def depth_of(depths: int | dict[str, int], name: str, default: int = N_CANDIDATES) -> int:
    """A source's depth: one number for every source, or a source -> depth map (chosen on validation)."""
    return depths if isinstance(depths, int) else int(depths.get(name, default))


def place_in_list() -> pl.Expr:
    """A source's candidate's place in that customer's list (1 = its best; ties in the source's row order)."""
    return pl.col("score").rank("ordinal", descending=True).over("customer_id")


def proposals(personal: list[Recommender], customers: pl.DataFrame,
              n: int | dict[str, int] = N_CANDIDATES) -> dict[str, pl.DataFrame]:
    """Each fitted personal source's top candidates for these customers (n, or n[source]), by source name."""
    return {strategy.name: strategy.candidates(customers, depth_of(n, strategy.name)) for strategy in personal}


def build(personal: list[Recommender], popular: list[Popularity], customers: pl.DataFrame,
          n_candidates: int | dict[str, int] = N_CANDIDATES, n_popular: int = N_POPULAR,
          proposed: dict[str, pl.DataFrame] | None = None, scored: dict[str, int] | None = None) -> pl.DataFrame:
    """The pool for these customers: the union of every source's candidates with every source's evidence.

    The first popularity prior also proposes its top n_popular to everyone (so every list can be
    filled); every prior scores every pooled row. scored: only the rows some source (or the prior)
    ranks within these depths (the scored pool, training.choose_pool), each still with the evidence
    of every source at its full depth: the rows of the whole pool whose source_rank is within them
    (what choose_pool measured on validation), without annotating the others.
    """
    keys, proposed = pooled_keys(personal, popular, customers, n_candidates, n_popular, proposed, scored)
    return annotate(keys, proposed, popular)


def pooled_keys(personal: list[Recommender], popular: list[Popularity], customers: pl.DataFrame,
                n_candidates: int | dict[str, int] = N_CANDIDATES, n_popular: int = N_POPULAR,
                proposed: dict[str, pl.DataFrame] | None = None,
                scored: dict[str, int] | None = None) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """build's pool before its evidence: its (customer_id, article_id) pairs (unique, any order) and each
    personal source's candidates. annotate(keys, proposed, popular) is build's pool; annotating a subset
    of the keys gives the same rows of it (each row's evidence is its own)."""
    if proposed is None:
        proposed = proposals(personal, customers, n_candidates)
    scored = scored or {}
    parts = [(frame.filter(place_in_list() <= scored[name])
              if name in scored else frame).select(KEYS) for name, frame in proposed.items()]
    if popular:
        parts.append(popular[0].candidates(customers, min(n_popular, scored.get(popular[0].name, n_popular)))
                     .select(KEYS))
    empty = pl.DataFrame(schema={"customer_id": pl.UInt64, "article_id": ARTICLE})
    return (pl.concat(parts).unique() if parts else empty), proposed


def pair_codes(frame: pl.DataFrame, customers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (customer_id, article_id) as one uint64 that sorts as the pair does: the customer's place among
    `customers` (sorted ids) above the article id (its sign bit flipped, so int32 order is kept); and whether the
    row's customer is among them (a code is only meaningful where it is)."""
    ids = frame["customer_id"].cast(CUSTOMER).to_numpy()
    at = np.searchsorted(customers, ids).clip(0, max(len(customers) - 1, 0))
    known = customers[at] == ids if len(customers) else np.zeros(len(ids), dtype=bool)
    article = frame["article_id"].cast(ARTICLE).to_numpy().view(np.uint32) ^ np.uint32(1 << 31)
    return (at.astype(np.uint64) << np.uint64(32)) | article.astype(np.uint64), known


def annotate(pairs: pl.DataFrame, proposed: dict[str, pl.DataFrame], popular: list[Popularity]) -> pl.DataFrame:
    """Given (customer_id, article_id) pairs with every source's evidence: score__, rank__, source__ columns.

    proposed: each personal source's candidates for (at least) these customers, one row per pair; a pair a
    source did not propose gets score 0 and no rank. Each source's evidence is placed by binary search of
    its pairs' codes (pair_codes) in the sorted pool's: the rows of a left join on KEYS, which took 1.1-1.3x as
    long (bench/bench_batch.py).
    """
    pool = pairs.select(KEYS).with_columns(pl.col("article_id").cast(ARTICLE)).unique().sort(KEYS)
    customers = pool["customer_id"].cast(CUSTOMER).unique().sort().to_numpy()
    codes, _ = pair_codes(pool, customers)  # sorted, as the pool is
    evidence = []
    for name, frame in proposed.items():
        found = frame.select(
            pl.col("score").cast(pl.Float32).alias(score_column(name)),
            place_in_list().cast(pl.UInt16).alias(rank_column(name)),
            pl.col("source_article_id").cast(ARTICLE).alias(source_column(name)))
        wanted, known = pair_codes(frame, customers)
        at = np.searchsorted(codes, wanted).clip(0, max(len(codes) - 1, 0))
        hit = known & (codes[at] == wanted) if len(codes) else known
        take = np.full(len(codes), frame.height, dtype=np.int64)  # the null row below: not proposed
        take[at[hit]] = np.flatnonzero(hit)
        evidence.append(pl.concat([found, found.clear(1)]).select(pl.all().gather(take)))
    pool = pl.concat([pool, *evidence], how="horizontal")
    for prior in popular:
        pool = prior.score_pairs(pool).rename({"score": score_column(prior.name)})
    return pool.with_columns(pl.col(c).fill_null(0.0).cast(pl.Float32) for c in pool.columns if c.startswith("score__"))


def proposer_rank(name: str) -> pl.Expr:
    """A pooled row's place in the proposing prior's list (its score, ties by article id, as the prior orders
    its candidates): the prior proposes its top n to everyone, so within a pool its top n keep these places."""
    return pl.struct(-pl.col(score_column(name)), "article_id").rank("ordinal").over("customer_id")


def source_rank(name: str, proposer: str | None, columns) -> pl.Expr | None:
    """A pooled row's rank among a source's candidates: its rank__ column, or the proposer's place in its
    list; None when the pool has no rank for that source."""
    if name == proposer:
        return proposer_rank(name)
    return pl.col(rank_column(name)) if rank_column(name) in columns else None


def source_names(pool: pl.DataFrame) -> list[str]:
    """The personal sources present in a pool (those with a rank column)."""
    return [c.removeprefix("rank__") for c in pool.columns if c.startswith("rank__")]


def recall(pool: pl.DataFrame, truth: pl.DataFrame,
           proposed: dict[str, pl.DataFrame] | None = None) -> dict[str, float]:
    """Share of the week's purchases (unique customer, article pairs) each source proposed, and the whole pool.

    Computed over the customers in the truth frame: the pool's ceiling, whatever the ranking. proposed:
    the sources' candidates when the pool holds only keys (pooled_keys): the purchased rows alone are annotated.
    """
    bought = metrics.truth_pairs(truth)
    if bought.height == 0:
        return {}
    found = pool.join(bought, on=KEYS, how="semi")
    if proposed is not None:
        found = annotate(found, proposed, [])
    out = {name: found.filter(pl.col(rank_column(name)).is_not_null()).height / bought.height
           for name in source_names(found)}
    out["pool"] = found.height / bought.height
    return out


def labels(pool: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """The pool with label = 1 where the customer bought the article in the truth week, else 0."""
    bought = metrics.truth_pairs(truth).with_columns(label=pl.lit(1, dtype=pl.UInt8))
    return (pool.join(bought, on=KEYS, how="left", maintain_order="left")
            .with_columns(pl.col("label").fill_null(0)))


def recall_curves(sources: list[Recommender], truth: pl.DataFrame,
                  depths: tuple[int, ...] = DEPTHS) -> tuple[pl.DataFrame, dict]:
    """Every fitted source's recall and pool rows per customer at each depth, on one week's buyers.

    Returns (one row per source: recall@d and rows@d for d in depths, each source alone; and what
    choose_depths needs: each candidate pair's rank in every source and whether it was bought).
    """
    customers = truth.select("customer_id")
    bought = metrics.truth_pairs(truth).with_columns(hit=pl.lit(True))
    ranked = []
    for strategy in sources:
        frame = strategy.candidates(customers, max(depths)).select(*KEYS, "score")
        ranked.append(frame.sort(["customer_id", "score", "article_id"], descending=[False, True, False])
                      .select(*KEYS, source=pl.lit(strategy.name),
                              rank=pl.int_range(1, pl.len() + 1).over("customer_id").cast(pl.Int32)))
    long = pl.concat(ranked).with_columns(pl.col("article_id").cast(ARTICLE))
    wide = (long.pivot(on="source", index=KEYS, values="rank", aggregate_function="min")
            .join(bought, on=KEYS, how="left").with_columns(pl.col("hit").fill_null(False)).sort(KEYS))
    names = [s.name for s in sources]
    ranks = np.column_stack([wide[n].fill_null(np.iinfo(np.int32).max).to_numpy() if n in wide.columns
                             else np.full(wide.height, np.iinfo(np.int32).max) for n in names])
    hits = wide["hit"].to_numpy()
    n_customers, n_bought = max(customers.height, 1), max(bought.height, 1)
    rows = []
    for j, name in enumerate(names):
        row = {"source": name}
        for d in depths:
            inside = ranks[:, j] <= d
            row[f"recall@{d}"] = round(float(hits[inside].sum()) / n_bought, 4)
            row[f"rows@{d}"] = round(float(inside.sum()) / n_customers, 1)
        rows.append(row)
    return pl.DataFrame(rows), {"names": names, "ranks": ranks, "hits": hits, "customers": n_customers,
                                "bought": n_bought, "depths": depths}


def choose_depths(curves: dict, budget: float = POOL_ROWS) -> tuple[dict[str, int], dict]:
    """Each source's depth, deepened greedily where the pool gains the most purchases per added row.

    Every source starts at the smallest depth. Each step (one source one depth deeper) adds the
    candidates no other source proposes yet; the step whose added rows were bought most often is
    taken first, until no step adds a purchase or the pool would exceed `budget` rows per customer:
    the most recall the cost allows, wherever the data puts it (a habitual shop's repertoires, a
    fashion shop's similar articles). Returns ({source: depth}, {"pool_recall", "rows_per_customer",
    "precision_deepest", "path"}): the precision of the pool with every source at its deepest, and the
    steps in the order taken (the first: every source at the smallest depth), each with the pool's
    rows per customer and recall after it (ranker.py chooses how far along it to score: training.choose_pool).
    """
    names, ranks, hits, depths = curves["names"], curves["ranks"], curves["hits"], curves["depths"]
    level = {name: 0 for name in names}                 # index into depths
    covered = (ranks <= depths[0]).any(axis=1)
    deepest = (ranks <= depths[-1]).any(axis=1)
    floor = hits[deepest].sum() / max(deepest.sum(), 1)  # precision of the deepest pool
    full = set()  # sources whose next step no longer fits in the budget

    def taken(name: str | None) -> dict:
        return {"source": name, "depth": depths[level[name]] if name else depths[0],
                "rows_per_customer": round(float(covered.sum()) / curves["customers"], 1),
                "pool_recall": round(float(hits[covered].sum()) / curves["bought"], 4)}
    path = [taken(None)]
    while True:
        best = None
        for j, name in enumerate(names):
            if level[name] + 1 >= len(depths) or name in full:
                continue
            step = (ranks[:, j] > depths[level[name]]) & (ranks[:, j] <= depths[level[name] + 1]) & ~covered
            added, gained = int(step.sum()), int(hits[step].sum())
            if gained and (best is None or gained / added > best[0]):
                best = (gained / added, name, step)
        if best is None:
            break
        _, name, step = best
        if (covered.sum() + step.sum()) / curves["customers"] > budget:
            full.add(name)
            continue
        level[name] += 1
        covered |= step
        path.append(taken(name))
    chosen = {name: depths[level[name]] for name in names}
    return chosen, {"pool_recall": path[-1]["pool_recall"], "rows_per_customer": path[-1]["rows_per_customer"],
                    "precision_deepest": round(float(floor), 5), "path": path}


def path_depths(path: list[dict], names: list[str]) -> list[dict[str, int]]:
    """Every source's depth after each step of a choose_depths path."""
    current = {name: path[0]["depth"] for name in names}
    out = []
    for step in path:
        if step["source"] is not None:
            current[step["source"]] = step["depth"]
        out.append(dict(current))
    return out


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
    together = Shared()  # fitted together: what they compute alike is computed once
    for source in personal:
        source.shared = together
    return populars, personal


def week_truth(transactions: pl.DataFrame, start, days: int = 7) -> pl.DataFrame:
    """The unique articles each customer bought in [start, start + days): customer_id, article_ids."""
    return (transactions.filter((pl.col("t_dat") >= start) & (pl.col("t_dat") < start + timedelta(days=days)))
            .group_by("customer_id").agg(article_ids=pl.col("article_id").cast(ARTICLE).unique().sort())
            .sort("customer_id"))
