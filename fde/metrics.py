"""MAP@12, recall@12 and coverage of ranked recommendations, as the H&M competition scores them.

Recommendations are a frame [customer_id, article_id, rank] (rank 1-based, several rows per
customer); the truth is a frame [customer_id, article_ids: List] with the *unique* articles each
customer bought in the held-out week. Definitions (see ../shared/hm_dataset_facts.md):

- AP@k(u) = (1 / min(m_u, k)) * sum_{i<=k} P(i) * rel(i), m_u = number of unique articles bought;
  a prediction repeated in one list occupies its slot but earns nothing the second time (as
  ml_metrics.apk does).
- MAP@k averages AP@k over the customers of the truth frame only (those who bought something);
  a customer with no recommendation counts with 0.
- recall@k averages hits / m_u over the same customers.
- coverage is the share of the catalogue that appears in at least one customer's top k.
"""
from __future__ import annotations

import numpy as np
import polars as pl

K = 12


def _top_k_positions(recs: pl.DataFrame, k: int) -> pl.DataFrame:
    """Each customer's first k predictions with their list position (1-based) and first-occurrence flag."""
    return (
        recs.select("customer_id", "article_id", "rank")
        .sort("customer_id", "rank", maintain_order=True)
        # position in the list, not the rank value, so gaps or ties in rank cannot change the score
        .with_columns(position=pl.int_range(1, pl.len() + 1).over("customer_id"))
        .filter(pl.col("position") <= k)
        .with_columns(first=pl.col("position") == pl.col("position").min().over("customer_id", "article_id"))
    )


def truth_pairs(truth: pl.DataFrame) -> pl.DataFrame:
    """A truth week [customer_id, article_ids] as its unique (customer_id, article_id Int32) pairs.

    The one reading of a truth frame: the metric's m_u, the pool's labels and recall, the cold-start slice.
    Customers who bought nothing have no pair.
    """
    return (truth.select("customer_id", article_id=pl.col("article_ids")).explode("article_id")
            .drop_nulls("article_id").with_columns(pl.col("article_id").cast(pl.Int32)).unique())


def per_customer(recs: pl.DataFrame, truth: pl.DataFrame, k: int = K) -> pl.DataFrame:
    """AP@k, hits and m_u for every customer of the truth frame (missing recommendations score 0)."""
    pairs = truth_pairs(truth).with_columns(hit=pl.lit(True))
    customers = pairs.group_by("customer_id").agg(n_truth=pl.len())
    top = _top_k_positions(recs.with_columns(pl.col("article_id").cast(pl.Int32)), k)
    scored = (
        top.join(customers, on="customer_id", how="semi")
        .join(pairs.select("customer_id", "article_id", "hit"), on=["customer_id", "article_id"], how="left")
        .with_columns(hit=pl.col("hit").fill_null(False) & pl.col("first"))
        .sort("customer_id", "position")
        .with_columns(hits_so_far=pl.col("hit").cast(pl.UInt32).cum_sum().over("customer_id"))
        .group_by("customer_id")
        .agg(
            precision_sum=(pl.col("hits_so_far") / pl.col("position")).filter(pl.col("hit")).sum(),
            hits=pl.col("hit").sum(),
        )
    )
    return (
        customers.join(scored, on="customer_id", how="left")
        .with_columns(pl.col("precision_sum").fill_null(0.0), pl.col("hits").fill_null(0).cast(pl.UInt32))
        .with_columns(
            ap=pl.col("precision_sum") / pl.min_horizontal(pl.col("n_truth"), pl.lit(k)),
            recall=pl.col("hits") / pl.col("n_truth"),
        )
        .select("customer_id", "n_truth", "hits", "ap", "recall")
        .sort("customer_id")
    )


def map_at_k(recs: pl.DataFrame, truth: pl.DataFrame, k: int = K) -> float:
    """Mean AP@k over the customers who bought something in the truth week."""
    scores = per_customer(recs, truth, k)
    return float(scores["ap"].mean()) if scores.height else 0.0


def coverage(recs: pl.DataFrame, n_articles: int, k: int = K) -> float:
    """Share of the catalogue's n_articles that appears in some customer's top k."""
    if n_articles <= 0:
        return 0.0
    shown = _top_k_positions(recs, k)["article_id"].n_unique()
    return shown / n_articles


def hits_on(recs: pl.DataFrame, pairs: pl.DataFrame, k: int = K) -> int:
    """How many of the (customer_id, article_id) pairs appear in those customers' top k."""
    top = _top_k_positions(recs, k).filter("first").select("customer_id", pl.col("article_id").cast(pl.Int32))
    return top.join(pairs.select("customer_id", pl.col("article_id").cast(pl.Int32)).unique(),
                     on=["customer_id", "article_id"], how="semi").height


def evaluate(recs: pl.DataFrame, truth: pl.DataFrame, n_articles: int, k: int = K) -> dict:
    """map12, recall12 and coverage of one strategy's recommendations against a truth week."""
    scores = per_customer(recs, truth, k)
    return {
        "map12": float(scores["ap"].mean()) if scores.height else 0.0,
        "recall12": float(scores["recall"].mean()) if scores.height else 0.0,
        "coverage": coverage(recs, n_articles, k),
    }


PAIRS_PER_BLOCK = 4_000_000  # memory bound of group_map: (purchase, row) comparisons per block
# A cost: the comparisons GroupMap keeps between calls (LightGBM calls it after every round with the same
# groups); 16M pairs hold 80 MB (an int32 row and a flag each), the rest are worked out again at each call.
KEPT_PAIRS = 16_000_000


def group_map(scores: np.ndarray, labels: np.ndarray, sizes: np.ndarray, n_truth: np.ndarray,
              n_customers: int | None = None, k: int = K) -> float:
    """MAP@k of contiguous groups ranked by score: n_truth = each customer's unique purchases that week.

    Customers of the week missing from the groups (nothing pooled) count 0 when n_customers says how many.
    Only the purchased rows are ranked (against every row of their group, ties kept in row order as a
    stable sort would), so it costs (purchases x group size), not a sort of every row. GroupMap keeps
    what does not depend on the scores for calls on the same groups (LightGBM's after every round).
    """
    return GroupMap(labels, sizes, n_truth, n_customers, k, kept_pairs=0)(scores)


class GroupMap:
    """group_map of fixed groups, labels and truth counts for any scores: the purchased rows, their groups and the
    (purchase, row) pairs they are compared over are worked out once (up to kept_pairs pairs)."""

    def __init__(self, labels: np.ndarray, sizes: np.ndarray, n_truth: np.ndarray, n_customers: int | None = None,
                 k: int = K, kept_pairs: int = KEPT_PAIRS):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.k, self.n_truth = k, n_truth
        self.n_customers = n_customers or len(self.sizes)
        self.starts = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(self.sizes)[:-1]])
        self.index_type = np.int32 if self.sizes.sum() < 2**31 else np.int64
        self.hit_rows = np.flatnonzero(labels)
        self.hit_group = np.searchsorted(self.starts, self.hit_rows, side="right") - 1
        self.gain = np.asarray(labels, dtype=np.float64)[self.hit_rows]
        # each purchased row against the rows of its group, PAIRS_PER_BLOCK comparisons at a time
        reach = np.cumsum(self.sizes[self.hit_group])
        bounds = np.searchsorted(reach, np.arange(0, reach[-1] if len(reach) else 0, PAIRS_PER_BLOCK), side="right")
        self.blocks = [(lo, hi, None) for lo, hi in zip(bounds, [*bounds[1:], len(self.hit_rows)])]
        kept = 0
        for i, (lo, hi, _) in enumerate(self.blocks):
            pairs = int(self.sizes[self.hit_group[lo:hi]].sum())
            if kept + pairs > kept_pairs:
                break
            self.blocks[i] = (lo, hi, self._pairs(lo, hi))
            kept += pairs

    def _pairs(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The block's comparisons: (span: its purchases' group sizes, start: where each purchase's pairs begin,
        other: the row each pair compares with, earlier: whether that row comes first in the group)."""
        group = self.hit_group[lo:hi]
        span = self.sizes[group]
        start = np.cumsum(span) - span
        other = np.repeat(self.starts[group] - start, span) + np.arange(span.sum())
        earlier = other < np.repeat(self.hit_rows[lo:hi], span)
        return span, start, other.astype(self.index_type), earlier

    def __call__(self, scores: np.ndarray) -> float:
        if len(self.sizes) == 0:
            return 0.0
        hit_rows, hit_group = self.hit_rows, self.hit_group
        rank = np.empty(len(hit_rows), dtype=np.int64)
        for lo, hi, pairs in self.blocks:
            span, start, other, earlier = pairs if pairs is not None else self._pairs(lo, hi)
            mine = np.repeat(scores[hit_rows[lo:hi]], span)
            theirs = scores[other]
            # rows above the purchase: a higher score, or the same score earlier in the group (a stable sort's order)
            above = (theirs > mine) | ((theirs == mine) & earlier)
            rank[lo:hi] = np.add.reduceat(above, start, dtype=np.int64) + 1
        # precision at each purchase's rank: the purchases ranked at or above it in its group, over its rank
        order = np.lexsort((rank, hit_group))
        rank, group, gain = rank[order], hit_group[order], self.gain[order].copy()
        gain[rank > self.k] = 0.0
        cumulative = np.cumsum(gain)
        first = np.concatenate([[True], group[1:] != group[:-1]]) if len(group) else np.zeros(0, bool)
        before = np.maximum.accumulate(np.where(first, np.arange(len(gain)), 0))
        in_group = cumulative - np.concatenate([[0.0], cumulative])[before]
        ap = np.bincount(group, weights=in_group / rank * gain, minlength=len(self.sizes)) / np.minimum(
            self.n_truth, self.k)
        return float(ap.sum() / self.n_customers)
