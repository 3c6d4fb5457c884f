"""Matrix factorisation of the purchase matrix: customer and article factors at a cut-off (implicit's ALS).

Fitted on the history before a cut-off, as every feature is. A pair's `mf_score` is the dot product
of the customer's and the article's factors: what customers who buy like this customer also buy,
beyond the few articles they share. ALS rather than BPR: on the demo 1.0 s against 5.2 s, validation
MAP@12 of its own top 12 0.0202 against 0.0148, and the same factors on any number of threads (each
row's solve is independent; BPR's Hogwild updates race). bench/factors.py measures both and the fit time.

`implicit` is imported inside `fit` only: loading the app or a stage does not pay for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from fde.files import atomic_path
from fde.ids import ARTICLE, CUSTOMER

FACTORS = 32          # factors per customer and article
ITERATIONS = 8        # ALS sweeps (each solves every customer, then every article)
WARM_ITERATIONS = 1   # sweeps of a fit started from the factors of a cut-off a week or so before (Chain)
REGULARIZATION = 0.05
ALPHA = 5.0           # confidence of a purchase: 1 + ALPHA * count
WINDOW_DAYS = 365     # purchases of the last year: a year back keeps most of the gain at half the cost
THREADS = 2           # the fit's threads (the result does not depend on them)
# pairs per block when taking dot products: the gathered factors (8 MB a side) stay in memory the allocator reuses;
# blocks of 1M pairs (128 MB a side) took 2.0 s against 0.05 s for a 20,000-customer batch's 1.13M pairs at full
# scale, each block's fresh memory being faulted in again (bench/bench_fit.py)
SCORE_BLOCK = 65_536


@dataclass
class Factors:
    """Customer and article factors, each row keyed by its id (sorted)."""

    customer_ids: np.ndarray  # uint64
    article_ids: np.ndarray   # int32
    customers: np.ndarray     # (customers, FACTORS) float32
    articles: np.ndarray      # (articles, FACTORS) float32
    cutoff: date | None = None  # fitted on the purchases before it

    def save(self, path: Path) -> None:
        """One .npz file, written atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, customer_ids=self.customer_ids, article_ids=self.article_ids,
                         customers=self.customers, articles=self.articles,
                         cutoff=np.array(str(self.cutoff) if self.cutoff is not None else ""))

    @classmethod
    def load(cls, path: Path) -> Factors:
        with np.load(path) as saved:
            cutoff = str(saved["cutoff"])
            return cls(saved["customer_ids"], saved["article_ids"], saved["customers"], saved["articles"],
                       date.fromisoformat(cutoff) if cutoff else None)

    def score_pairs(self, keys: pl.DataFrame) -> pl.Series:
        """mf_score of each (customer_id, article_id) row, in order; null where either has no factors."""
        rows = keys.select(
            c=pl.col("customer_id").cast(CUSTOMER).replace_strict(
                self.customer_ids, np.arange(len(self.customer_ids), dtype=np.int64), default=-1,
                return_dtype=pl.Int64),
            a=pl.col("article_id").cast(ARTICLE).replace_strict(
                self.article_ids, np.arange(len(self.article_ids), dtype=np.int64), default=-1,
                return_dtype=pl.Int64))
        c, a = rows["c"].to_numpy(), rows["a"].to_numpy()
        out = np.full(len(c), np.nan, dtype=np.float32)
        known = np.flatnonzero((c >= 0) & (a >= 0))
        for start in range(0, len(known), SCORE_BLOCK):
            part = known[start:start + SCORE_BLOCK]
            out[part] = np.einsum("ij,ij->i", self.customers[c[part]], self.articles[a[part]])
        return pl.Series("mf_score", out).fill_nan(None)

    def top(self, customers: pl.Series, n: int, block: int = 4096) -> pl.DataFrame:
        """Each known customer's n best articles by mf_score (customer_id, article_id, score), best first.

        Blocks of customers against every article (a block x articles product, then argpartition).
        """
        wanted = np.unique(customers.cast(CUSTOMER).to_numpy())
        index = np.minimum(np.searchsorted(self.customer_ids, wanted), len(self.customer_ids) - 1)
        index = index[self.customer_ids[index] == wanted]  # customers without factors get nothing
        n = min(n, len(self.article_ids))
        parts = []
        for start in range(0, len(index), block):
            rows = index[start:start + block]
            scores = self.customers[rows] @ self.articles.T
            best = np.argpartition(-scores, n - 1, axis=1)[:, :n]
            parts.append(pl.DataFrame({
                "customer_id": np.repeat(self.customer_ids[rows], n),
                "article_id": self.article_ids[best].ravel(),
                "score": np.take_along_axis(scores, best, axis=1).ravel()}))
        if not parts:
            return pl.DataFrame(schema={"customer_id": CUSTOMER, "article_id": ARTICLE, "score": pl.Float32})
        return (pl.concat(parts).sort(["customer_id", "score", "article_id"], descending=[False, True, False])
                .with_columns(pl.col("customer_id").cast(CUSTOMER), pl.col("article_id").cast(ARTICLE),
                              pl.col("score").cast(pl.Float32)))


def purchase_matrix(history: pl.DataFrame, cutoff, window_days: int | None = WINDOW_DAYS):
    """(customer ids, article ids, customers x articles CSR matrix of purchase counts) of the window before the
    cut-off, ids sorted; None when the window holds no purchase."""
    import scipy.sparse as sp

    tx = history.filter(pl.col("t_dat") < cutoff)
    if window_days:
        tx = tx.filter(pl.col("t_dat") >= cutoff - timedelta(days=window_days))
    # lazy: polars' eager group_by of a year's pairs took twice as long (full scale: 2.2 s against 1.0 s)
    counts = (tx.lazy().group_by("customer_id", "article_id").agg(n=pl.len())
              .with_columns(pl.col("customer_id").cast(CUSTOMER), pl.col("article_id").cast(ARTICLE)).collect())
    if counts.height == 0:
        return None
    customer_ids = counts["customer_id"].unique().sort()
    article_ids = counts["article_id"].unique().sort()
    # an id's row is its place among the sorted unique ids: its dense rank, less one
    coded = counts.select(c=pl.col("customer_id").rank("dense") - 1, a=pl.col("article_id").rank("dense") - 1,
                          n=pl.col("n").cast(pl.Float32))
    matrix = sp.csr_matrix((coded["n"].to_numpy(), (coded["c"].to_numpy(), coded["a"].to_numpy())),
                           shape=(len(customer_ids), len(article_ids)), dtype=np.float32)
    return customer_ids.to_numpy(), article_ids.to_numpy(), matrix


def start_rows(ids: np.ndarray, known_ids: np.ndarray, known: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Starting factors for ids (sorted): the known factors of ids that have them, implicit's random start
    (uniform in [0, 0.01)) for the others."""
    out = rng.random((len(ids), known.shape[1]), dtype=np.float32) * 0.01
    at = np.minimum(np.searchsorted(known_ids, ids), len(known_ids) - 1)
    found = known_ids[at] == ids
    out[found] = known[at[found]]
    return out


def fit(history: pl.DataFrame, cutoff, factors: int = FACTORS, iterations: int = ITERATIONS,
        regularization: float = REGULARIZATION, alpha: float = ALPHA, window_days: int | None = WINDOW_DAYS,
        threads: int = THREADS, seed: int = 0, model: str = "als", start: Factors | None = None) -> Factors | None:
    """Factors of the purchases in the window before the cut-off; None when there are none.

    model: "als" (the default) or "bpr" (for the comparison in bench/factors.py). start: factors fitted at
    an earlier cut-off (ALS only) that the sweeps start from instead of random ones, customers and articles
    new since then starting at random.
    """
    import warnings

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    if start is not None and start.cutoff is not None and start.cutoff > as_date(cutoff):
        raise ValueError(f"factors fitted before {start.cutoff} cannot start a fit at the earlier cut-off {cutoff}: "
                         "they hold purchases made after it")
    built = purchase_matrix(history, cutoff, window_days)
    if built is None:
        return None
    customer_ids, article_ids, matrix = built
    # implicit warns when BLAS runs threads of its own; the fit below runs with one BLAS thread
    warnings.filterwarnings("ignore", message=".*BLAS.*", category=RuntimeWarning, module="implicit")
    if model == "als":
        learner = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                          iterations=iterations, random_state=seed, num_threads=threads)
    elif model == "bpr":
        learner = BayesianPersonalizedRanking(factors=factors, iterations=iterations, random_state=seed,
                                              num_threads=threads)
        matrix.data[:] = 1.0
    else:
        raise ValueError(f"model must be 'als' or 'bpr', got {model!r}")
    if start is not None and model == "als" and start.customers.shape[1] == factors:
        rng = np.random.default_rng(seed)
        learner.user_factors = start_rows(customer_ids, start.customer_ids, start.customers, rng)
        learner.item_factors = start_rows(article_ids, start.article_ids, start.articles, rng)
    with threadpool_limits(1, "blas"):
        learner.fit(matrix, show_progress=False)
    return Factors(customer_ids, article_ids,
                   np.ascontiguousarray(learner.user_factors, dtype=np.float32),
                   np.ascontiguousarray(learner.item_factors, dtype=np.float32), as_date(cutoff))


def as_date(cutoff) -> date:
    """A cut-off as a date (polars gives datetime.date; a datetime's date part)."""
    return cutoff.date() if hasattr(cutoff, "date") and callable(cutoff.date) else cutoff


class Chain:
    """Factors fitted at cut-offs in time order, each started from the last one fitted before it.

    A cut-off's factors are fitted from random ones over ITERATIONS sweeps; a later cut-off's start from
    the last factors of the chain and take WARM_ITERATIONS sweeps: a week more of purchases moves the
    factors little. The ranker's training weeks, validation, test and submission cut-offs follow each
    other a week apart, so one cold fit serves them all (ranker.py saves the validation cut-off's factors,
    final.py continues from them). A cut-off before the last fitted one is fitted cold, never from
    factors that hold its future.
    """

    def __init__(self, last: Factors | None = None):
        self.last = last

    def fit(self, history: pl.DataFrame, cutoff) -> Factors | None:
        last = self.last
        start = last if last is not None and last.cutoff is not None and last.cutoff <= as_date(cutoff) else None
        fitted = fit(history, cutoff, iterations=WARM_ITERATIONS if start is not None else ITERATIONS, start=start)
        if fitted is not None:
            self.last = fitted
        return fitted
