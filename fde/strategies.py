"""Recommender strategies behind one interface: popularity, trending in your departments, content, visual twins.

Every strategy answers the same question the same way (see `Recommender`):

    strategy.fit(transactions, articles, cutoff)  # only the transactions before the cut-off are used
    strategy.recommend(customers, k=12)           # -> customer_id, article_id, score, rank

A single strategy's scores lie in [0, 1] and mean the same for every customer (it never
rescales one customer's list on its own), so the hybrid (hybrid.py) can blend them by weight and
the ranker (ranker.py) can use them as features. The cut-off is explicit because the ranker fits
every strategy at several past cut-offs; without one, it is the day after the last transaction.

Content and visual similarity recommend only articles that are *available* at the cut-off:
sold in the last `active_days`, or never sold at all (launches: the cold-start case, which
popularity can never reach). An article last sold a year ago is out of the shop.
"""
from __future__ import annotations

import hashlib
import math
import threading
import weakref
from datetime import timedelta

import numpy as np
import polars as pl

from fde import metrics
from fde.errors import UserError
from fde.ids import ARTICLE, CUSTOMER, article_id_text
from fde.visual_index import load_twins, normalize

K = metrics.K  # one list length: the competition's 12, defined with the metric
OUTPUT_SCHEMA = {"customer_id": pl.UInt64, "article_id": pl.Int32, "score": pl.Float32, "rank": pl.UInt16}
CANDIDATE_SCHEMA = {"customer_id": pl.UInt64, "article_id": pl.Int32, "score": pl.Float32,
                    "source_article_id": pl.Int32}

# Kaggle article columns that describe what a garment is (the content strategy's vocabulary).
CONTENT_COLUMNS = ("product_type_name", "colour_group_name", "department_name",
                   "graphical_appearance_name", "index_group_name")


# ---------------------------------------------------------------------------- shared helpers

def as_customer_frame(customers) -> pl.DataFrame:
    """One-column frame of unique UInt64 customer ids from a Series, list or frame."""
    if isinstance(customers, pl.DataFrame):
        customers = customers["customer_id"]
    series = pl.Series("customer_id", customers).cast(CUSTOMER)
    return series.unique().sort().to_frame()


def cutoff_of(transactions: pl.DataFrame):
    """The first day a model fitted on these transactions predicts: the day after the last one."""
    if transactions.height == 0:
        raise UserError("no transactions before the cut-off: cannot fit a recommender on an empty history")
    return transactions["t_dat"].max() + timedelta(days=1)


def before(transactions: pl.DataFrame, cutoff=None) -> tuple[pl.DataFrame, object]:
    """The transactions before the cut-off, and the cut-off (the day after the last one when not given)."""
    if cutoff is None:
        return transactions, cutoff_of(transactions)
    history = transactions.filter(pl.col("t_dat") < cutoff)
    if history.height == 0:
        raise UserError(f"no transactions before the cut-off {cutoff}: cannot fit a recommender on an empty history")
    return history, cutoff


def own_purchases(transactions: pl.DataFrame, customers: pl.DataFrame | None) -> pl.DataFrame:
    """The transactions of these customers (all of them when customers is None): the input of a
    source's tables of each customer's own purchases, while what every customer's purchases say
    (sales, co-purchases) is still learnt from everyone."""
    if customers is None:
        return transactions
    return transactions.join(as_customer_frame(customers), on="customer_id", how="semi")


class Shared:
    """What several sources fitted on the same transactions and customers at the same cut-off compute alike,
    computed by the first to ask and read by the others: colourways reads repurchase's table, the look-alike
    sources and co-purchase the same recent purchases. make_sources gives its sources one (Recommender.shared).

    An entry is kept for the frames it was computed from, compared by identity through weak references (a
    frame that is gone matches nothing; the entry does not keep it alive), and the values of its parameters.
    """

    def __init__(self):
        self._entries: dict[str, tuple] = {}

    def get(self, name: str, frames: tuple, params: tuple, compute):
        entry = self._entries.get(name)
        if entry is None or entry[1] != params or not all(
                (ref is None and frame is None) or (ref is not None and ref() is frame)
                for ref, frame in zip(entry[0], frames)):
            entry = (tuple(None if f is None else weakref.ref(f) for f in frames), params, compute())
            self._entries[name] = entry
        return entry[2]

    def __getstate__(self) -> dict:
        """Pickled empty (for Ray's workers): weak references do not travel, and workers only read fitted tables."""
        return {"_entries": {}}


def shared(source, name: str, frames: tuple, params: tuple, compute):
    """compute(), or what a source fitted alongside already computed from the same frames and parameters."""
    return compute() if source.shared is None else source.shared.get(name, frames, params, compute)


def by_customer(table: pl.DataFrame) -> pl.DataFrame:
    """A table of customers' rows sorted by customer_id (customer_rows finds a customer's rows by binary search)."""
    return table.sort("customer_id", maintain_order=True).rechunk()


def customer_rows(table: pl.DataFrame, customers: pl.DataFrame) -> pl.DataFrame:
    """`table.join(customers, on="customer_id", how="semi")` for a table sorted by customer_id (by_customer): the
    same rows in the same order, found by binary search rather than a pass over the table (a submission asks
    for 10,000 customers at a time of 28M rows)."""
    ids = table["customer_id"]
    if not ids.flags["SORTED_ASC"]:
        raise ValueError("customer_rows needs a table sorted by customer_id (strategies.by_customer)")
    ids = ids.to_numpy()
    wanted = as_customer_frame(customers)["customer_id"].cast(table.schema["customer_id"]).to_numpy()  # unique, sorted
    starts, ends = np.searchsorted(ids, wanted, side="left"), np.searchsorted(ids, wanted, side="right")
    lengths = ends - starts
    rows = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    return table[rows]


def age_days(cutoff) -> pl.Expr:
    """Days between a transaction and the cut-off (1 for the day before it)."""
    return (pl.lit(cutoff) - pl.col("t_dat")).dt.total_days().cast(pl.Float32)


def decay(cutoff, half_life_days: float | None) -> pl.Expr:
    """Weight of a transaction that halves every half_life_days before the cut-off (1 without decay)."""
    if not half_life_days:
        return pl.lit(1.0, dtype=pl.Float32)
    return (-math.log(2) / half_life_days * age_days(cutoff)).exp().cast(pl.Float32)


FIXED_POINT = 2.0 ** 32  # weights are added as whole multiples of 2^-32: integers, so in any order the same


def exact_sum(expr: pl.Expr) -> pl.Expr:
    """The sum of non-negative weights (each at most a few, totals under 2^31), the same in every run (Float32).

    Float addition depends on its order, and polars' lazy group_by adds partial sums in an order that
    changes from run to run (hash partitions, threads): a score's 8th digit, then a broken tie, then
    another model. Integers add exactly in any order; rounding each weight to 2^-32 (2e-10) is far
    below float32's resolution.
    """
    return ((expr.cast(pl.Float64) * FIXED_POINT).round().cast(pl.Int64).sum() / FIXED_POINT).cast(pl.Float32)


def saturate(expr: pl.Expr) -> pl.Expr:
    """Map a non-negative evidence sum to [0, 1): one fresh purchase gives 0.63, two give 0.86."""
    return (1.0 - (-expr).exp()).cast(pl.Float32)


def top_k(scored: pl.DataFrame, k: int) -> pl.DataFrame:
    """Each customer's k best rows by score (ties by article id), numbered 1..k, sorted by customer and rank."""
    if scored.height == 0:
        return scored.with_columns(rank=pl.lit(0, dtype=pl.UInt16)).clear()
    return (
        scored.sort(["customer_id", "score", "article_id"], descending=[False, True, False])
        .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).over("customer_id"))
        .filter(pl.col("rank") <= k)
    )


def empty_candidates() -> pl.DataFrame:
    """A candidate frame with no rows."""
    return pl.DataFrame(schema=CANDIDATE_SCHEMA)


def available_articles(transactions: pl.DataFrame, articles: pl.DataFrame, cutoff, active_days: int) -> pl.Series:
    """Articles one can still buy at the cut-off: sold in the last active_days, or never sold (launches)."""
    recent = transactions.filter(pl.col("t_dat") >= cutoff - timedelta(days=active_days))["article_id"].unique()
    ever = transactions["article_id"].unique()
    never = articles.filter(~pl.col("article_id").is_in(ever.implode()))["article_id"]
    return pl.concat([recent.cast(ARTICLE), never.cast(ARTICLE)]).unique().sort()


def last_purchases(transactions: pl.DataFrame, cutoff, days: int, per_customer: int) -> pl.DataFrame:
    """Each customer's last `per_customer` distinct articles of the last `days` with the day of the last purchase
    (customer_id, article_id, t_dat; latest first, ties by article id)."""
    return (
        transactions.lazy()
        .filter(pl.col("t_dat") >= cutoff - timedelta(days=days))
        .group_by("customer_id", "article_id")
        .agg(pl.col("t_dat").max())
        .sort(["customer_id", "t_dat", "article_id"], descending=[False, True, False])
        .group_by("customer_id", maintain_order=True).head(per_customer)
        .select("customer_id", pl.col("article_id").cast(ARTICLE), "t_dat")
        .collect()
    )


def shared_recent(source, given: pl.DataFrame, transactions: pl.DataFrame, customers: pl.DataFrame | None,
                  days: int, per_customer: int, half_life_days: float) -> pl.DataFrame:
    """Each of these customers' last `per_customer` distinct articles of the last `days` before a fitted source's
    cut-off, weighted by recency (customer_id, article_id, weight); the last purchases are shared with the
    sources fitted alongside (given: the transactions its fit was given, transactions: those before the cut-off)."""
    last = shared(source, "last_purchases", (given, customers), (source.cutoff, days, per_customer),
                  lambda: last_purchases(own_purchases(transactions, customers), source.cutoff, days, per_customer))
    return last.select("customer_id", "article_id", weight=decay(source.cutoff, half_life_days))


# ---------------------------------------------------------------------------- the interface

class Recommender:
    """Base of every strategy: `fit` on the history before a cut-off, `recommend` top-k per customer.

    Subclasses implement `fit` and `candidates(customers, n)`, which returns up to n scored
    candidates per customer with the purchase that explains each one (source_article_id, null
    when none does). `reason` turns a source into the words the app shows.
    """

    name = "recommender"
    shared: Shared | None = None  # what the sources fitted alongside compute alike (make_sources sets it)
    proposes_unsold = True  # whether its candidates may hold articles never sold before the cut-off (launches)

    def fit(self, transactions: pl.DataFrame, articles: pl.DataFrame, cutoff=None,
            customers: pl.DataFrame | None = None) -> Recommender:
        """Learn from the transactions before the cut-off (and the article catalogue).

        customers (customer_id): the only customers `candidates` will be asked about, when known (a
        training week's buyers, a sample): the tables of each customer's own purchases then hold only
        theirs (`own_purchases`), and they get the same candidates as from a fit on everyone.
        """
        raise NotImplementedError

    def candidates(self, customers: pl.DataFrame, n: int) -> pl.DataFrame:
        """Up to n scored candidates per customer: customer_id, article_id, score, source_article_id."""
        raise NotImplementedError

    def reason(self, article_id: pl.Expr, source: pl.Expr) -> pl.Expr:
        """Why an article is recommended, in words, from its source purchase."""
        return pl.lit(self.name)

    def recommend(self, customers, k: int = K, with_source: bool = False) -> pl.DataFrame:
        """Top-k articles per customer: customer_id, article_id, score, rank (1-based), sorted by customer, rank."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        frame = as_customer_frame(customers)
        ranked = top_k(self.candidates(frame, k).cast(CANDIDATE_SCHEMA), k)
        columns = list(OUTPUT_SCHEMA) + (["source_article_id"] if with_source else [])
        return ranked.select(columns)


# ---------------------------------------------------------------------------- the customer's own purchases

# Starting points only: hybrid.py chooses the half-life on the validation week (they are knobs, not facts).
HALF_LIFE_DAYS = 7.0
COLOURWAY_WEIGHT = 0.3
WINDOW_DAYS = 180


class PurchaseHistory(Recommender):
    """Repurchase (recency x frequency) plus the same product's other colourways as neighbours."""

    name = "purchase_history"

    def __init__(self, half_life_days: float = HALF_LIFE_DAYS, colourway_weight: float = COLOURWAY_WEIGHT,
                 window_days: int | None = WINDOW_DAYS):
        self.half_life_days = half_life_days
        self.colourway_weight = colourway_weight
        self.window_days = window_days

    def fit(self, transactions, articles, cutoff=None, customers=None):
        """Sum the decayed purchases of each (customer, article) in the window before the cut-off."""
        transactions, self.cutoff = before(transactions, cutoff)
        tx = own_purchases(transactions, customers)
        if self.window_days:
            tx = tx.filter(pl.col("t_dat") >= self.cutoff - timedelta(days=self.window_days))
        self.history = by_customer(
            tx.lazy().group_by("customer_id", "article_id")
            .agg(evidence=exact_sum(decay(self.cutoff, self.half_life_days)))
            .with_columns(pl.col("article_id").cast(ARTICLE))
            .collect()
        )
        # colourways are limited to ones still sold (or never sold: a new colour of a bought product)
        sold = transactions.group_by("article_id").agg(last=pl.col("t_dat").max())
        self.products = (
            articles.select(pl.col("article_id").cast(ARTICLE), pl.col("product_code").cast(pl.Int32))
            .join(sold.with_columns(pl.col("article_id").cast(ARTICLE)), on="article_id", how="left")
            .filter(pl.col("last").is_null() | (pl.col("last") >= self.cutoff - timedelta(days=28)))
            .select("article_id", "product_code")
        )
        self.article_product = articles.select(pl.col("article_id").cast(ARTICLE),
                                               pl.col("product_code").cast(pl.Int32))
        return self

    def candidates(self, customers, n):
        """Own purchases (source = the article itself) and colourways (source = the bought colourway)."""
        own = customer_rows(self.history, customers)
        if own.height == 0:
            return empty_candidates()
        colourways = (
            # a purchase older than 8 half-lives lends its colourways under 0.4% of a fresh one's
            # evidence: skipping those keeps the expansion small on a long history
            own.filter(pl.col("evidence") >= 2.0 ** -8)
            .join(self.article_product, on="article_id", how="inner")
            .join(self.products.rename({"article_id": "colourway_id"}), on="product_code", how="inner")
            .filter(pl.col("colourway_id") != pl.col("article_id"))
            .select("customer_id", article_id="colourway_id", source_article_id="article_id",
                    evidence=pl.col("evidence") * self.colourway_weight)
        )
        # evidence adds up over the purchase and its colourways; only each customer's top n are explained:
        # by the purchase itself when there is one, else by the colourway bought with the most evidence
        keys = ["customer_id", "article_id"]
        total = (pl.concat([own.select(*keys, "evidence"), colourways.select(*keys, "evidence")])
                 .group_by(keys).agg(score=saturate(exact_sum(pl.col("evidence")))))
        top = top_k(total, n)
        explained = (colourways.join(top.select(keys), on=keys, how="semi")
                     .sort([*keys, "evidence", "source_article_id"], descending=[False, False, True, False])
                     .unique(keys, keep="first", maintain_order=True)
                     .select(*keys, colourway_of="source_article_id"))
        return (top.join(own.select(*keys, bought=pl.lit(True)), on=keys, how="left")
                .join(explained, on=keys, how="left")
                .select(*keys, "score", source_article_id=pl.when(pl.col("bought")).then(pl.col("article_id"))
                        .otherwise(pl.col("colourway_of")))
                .sort(["customer_id", "score", "article_id"], descending=[False, True, False]))

    def reason(self, article_id, source):
        return (pl.when(article_id == source).then(pl.lit("bought before"))
                .otherwise(pl.format("colourway of {}", article_id_text(source))))




KERNELS = ("hyperbolic", "exponential")
# the time scales the repurchase baseline chooses from on the validation week: a week to a year
REPURCHASE_GRID = tuple((kernel, scale) for kernel in KERNELS for scale in (7.0, 30.0, 90.0, 365.0))


def recency_weight(cutoff, kernel: str, scale_days: float) -> pl.Expr:
    """Weight of a purchase `age_days` before the cut-off: 1 / (1 + age / scale), or halving every scale days."""
    if kernel == "hyperbolic":
        return (1.0 / (1.0 + age_days(cutoff) / scale_days)).cast(pl.Float32)
    if kernel == "exponential":
        return decay(cutoff, scale_days)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


class Repurchase(Recommender):
    """The long-horizon repurchase baseline: every past purchase of an article counts, weighted by its age.

    score(customer, article) = saturate(sum over the customer's purchases of it of recency_weight(age)),
    over the whole history. The kernel and its scale are not fixed by hand: `evaluation.choose_scale`
    picks them on the validation week from REPURCHASE_GRID.
    """

    name = "repurchase"
    proposes_unsold = False  # what the customer bought

    def __init__(self, kernel: str = "hyperbolic", scale_days: float = 30.0):
        recency_weight(None, kernel, scale_days)  # validates the kernel name
        self.kernel = kernel
        self.scale_days = scale_days

    def fit(self, transactions, articles=None, cutoff=None, customers=None):
        """Sum each (customer, article)'s purchases, weighted by age (colourways fitted alongside reads the same)."""
        given = transactions
        transactions, self.cutoff = before(transactions, cutoff)
        self.history = shared(self, "repurchase", (given, customers), (self.cutoff, self.kernel, self.scale_days),
                              lambda: by_customer(
                                  own_purchases(transactions, customers).lazy().group_by("customer_id", "article_id")
                                  .agg(evidence=exact_sum(recency_weight(self.cutoff, self.kernel, self.scale_days)))
                                  .with_columns(pl.col("article_id").cast(ARTICLE))
                                  .collect()))
        return self

    def candidates(self, customers, n):
        own = customer_rows(self.history, customers)
        scored = own.select("customer_id", "article_id", score=saturate(pl.col("evidence")),
                            source_article_id="article_id")
        return top_k(scored, n).select(list(CANDIDATE_SCHEMA))

    def reason(self, article_id, source):
        return pl.lit("bought before")


class Colourways(Repurchase):
    """Other colourways (same product_code) of the products a customer bought, weighted like repurchase."""

    name = "colourways"
    proposes_unsold = True  # a new colour of a bought product

    def fit(self, transactions, articles, cutoff=None, customers=None):
        super().fit(transactions, articles, cutoff, customers)
        self.article_product = articles.select(pl.col("article_id").cast(ARTICLE),
                                               pl.col("product_code").cast(pl.Int32))
        return self

    def candidates(self, customers, n):
        """A colourway the customer did not buy gets the evidence of every bought article of its product (and the
        one with the most, ties by the lowest id, as its source): summed per product, then given to its colours."""
        own = customer_rows(self.history, customers)
        products = (
            own.join(self.article_product, on="article_id", how="inner")
            .sort(["customer_id", "product_code", "evidence", "article_id"], descending=[False, False, True, False])
            .group_by("customer_id", "product_code", maintain_order=True)
            .agg(evidence=exact_sum(pl.col("evidence")), source_article_id=pl.col("article_id").first())
        )
        scored = (
            products.join(self.article_product, on="product_code", how="inner")
            # never propose what the customer already bought: that is repurchase's evidence
            .join(own.select("customer_id", "article_id"), on=["customer_id", "article_id"], how="anti")
            .select("customer_id", "article_id", score=saturate(pl.col("evidence")),
                    source_article_id="source_article_id")
        )
        return top_k(scored, n).select(list(CANDIDATE_SCHEMA))

    def reason(self, article_id, source):
        return pl.format("colourway of {}", article_id_text(source))


class CoPurchase(Recommender):
    """Item-to-item collaborative filtering: what other customers bought close in time to what you bought.

    Pairs (a, b) of different articles bought by one customer within `pair_days` of each other in the
    last `history_days` count with the recency weight of the later purchase (half-life
    `half_life_days`); P(b | a) = pair weight / a's buyers' weight. Each customer's last
    `per_customer` distinct purchases propose their `neighbours` best b:
    score(customer, b) = max over recent purchases a of P(b | a) x recency(a). The pair window is
    chosen on the validation week (evaluation.choose_scale over CO_PURCHASE_GRID).
    """

    name = "co_purchase"
    proposes_unsold = False  # articles bought with others

    def __init__(self, pair_days: int = 7, history_days: int = 84, half_life_days: float = 28.0,
                 recent_days: int = 365, per_customer: int = 6, neighbours: int = 12):
        self.pair_days = pair_days
        self.history_days = history_days
        self.half_life_days = half_life_days
        self.recent_days = recent_days
        self.per_customer = per_customer
        self.neighbours = neighbours

    def fit(self, transactions, articles=None, cutoff=None, customers=None):
        """Count recency-weighted co-purchases (everyone's) and keep each article's best neighbours."""
        given = transactions
        transactions, self.cutoff = before(transactions, cutoff)
        days = (transactions.lazy()
                .filter(pl.col("t_dat") >= self.cutoff - timedelta(days=self.history_days))
                .select("customer_id", pl.col("article_id").cast(ARTICLE), "t_dat").unique()
                .collect())
        weight = recency_weight(self.cutoff, "exponential", self.half_life_days)
        buyers = (days.lazy().group_by("article_id").agg(buyers=exact_sum(weight)))
        pairs = (
            days.lazy().join(days.lazy().rename({"article_id": "neighbour_id", "t_dat": "t_b"}), on="customer_id")
            .filter((pl.col("article_id") != pl.col("neighbour_id"))
                    & ((pl.col("t_dat") - pl.col("t_b")).dt.total_days().abs() <= self.pair_days))
            # one customer counts once per pair, at their latest co-purchase
            .group_by("customer_id", "article_id", "neighbour_id").agg(t_dat=pl.max_horizontal("t_dat", "t_b").max())
            .group_by("article_id", "neighbour_id").agg(pair=exact_sum(weight), customers=pl.len())
            .filter(pl.col("customers") >= 2)  # a pair seen once is an anecdote, not a pattern
            .join(buyers, on="article_id")
            .with_columns(similarity=(pl.col("pair") / pl.col("buyers")).clip(0.0, 1.0).cast(pl.Float32))
            .sort(["article_id", "similarity", "neighbour_id"], descending=[False, True, False])
            .group_by("article_id", maintain_order=True).head(self.neighbours)
            .select("article_id", "neighbour_id", "similarity")
        )
        self.neighbour_pairs = pairs.collect()
        self.recent = shared_recent(self, given, transactions, customers, self.recent_days, self.per_customer,
                                    self.half_life_days)
        return self

    def candidates(self, customers, n):
        joined = (self.recent.join(customers, on="customer_id", how="semi")
                  .join(self.neighbour_pairs, on="article_id", how="inner")
                  .with_columns(score=(pl.col("similarity") * pl.col("weight")).cast(pl.Float32)))
        if joined.height == 0:
            return empty_candidates()
        best = (joined.sort(["customer_id", "score", "neighbour_id", "article_id"],
                            descending=[False, True, False, False])
                .unique(["customer_id", "neighbour_id"], keep="first", maintain_order=True)
                .select("customer_id", article_id="neighbour_id", score="score", source_article_id="article_id"))
        return top_k(best, n).select(list(CANDIDATE_SCHEMA))

    def reason(self, article_id, source):
        return pl.format("often bought with {}", article_id_text(source))


CO_PURCHASE_GRID = (1, 7, 28)  # pair windows in days: the same trip, the same week, the same month


# ---------------------------------------------------------------------------- popularity

AGE_BANDS = (25, 35, 45, 55, 65)  # band edges: <25, 25-34, ..., 65+ (the real ages are bimodal)


def age_band(col: str = "age") -> pl.Expr:
    """Age band index 0..len(AGE_BANDS) of an age column, null for unknown ages."""
    band = pl.lit(0, dtype=pl.Int8)
    for edge in AGE_BANDS:
        band = band + (pl.col(col) >= edge).cast(pl.Int8)
    return pl.when(pl.col(col).is_null()).then(None).otherwise(band).alias("band")


def age_band_label(age: pl.Expr) -> pl.Expr:
    """'under 25', '25-34', ..., '65+', 'unknown' of an age expression: the bands of age_band, in words."""
    expr = pl.when(age.is_null()).then(pl.lit("unknown")).when(age < AGE_BANDS[0]).then(pl.lit(f"under {AGE_BANDS[0]}"))
    for low, high in zip(AGE_BANDS, AGE_BANDS[1:]):
        expr = expr.when(age < high).then(pl.lit(f"{low}-{high - 1}"))
    return expr.otherwise(pl.lit(f"{AGE_BANDS[-1]}+"))


class Popularity(Recommender):
    """The most bought articles: all-time, over a recent window, time-decayed, optionally per age band.

    Every customer gets the same list (or their age band's list; unknown ages get the global
    one). `article_scores` is the score of every article sold, which the hybrid uses as a prior.
    """

    def __init__(self, name: str = "popular_decayed", window_days: int | None = None,
                 half_life_days: float | None = None, customers: pl.DataFrame | None = None,
                 reason_text: str = "trending", prior_weight: float = 50.0):
        self.name = name
        self.prior_weight = prior_weight
        self.window_days = window_days
        self.half_life_days = half_life_days
        self.customer_ages = None if customers is None else customers.select("customer_id", "age")
        self.reason_text = reason_text

    def fit(self, transactions, articles=None, cutoff=None, customers=None):
        """Score each article by its (decayed) sales before the cut-off, overall and per age band."""
        transactions, self.cutoff = before(transactions, cutoff)
        tx = transactions
        # with a half-life, sales older than 10 half-lives weigh under 0.1%: skip them
        window = self.window_days or (math.ceil(10 * self.half_life_days) if self.half_life_days else None)
        if window:
            tx = tx.filter(pl.col("t_dat") >= self.cutoff - timedelta(days=window))
        tx = tx.select("customer_id", "article_id", weight=decay(self.cutoff, self.half_life_days))
        self.article_scores = self._scores(tx)
        if self.customer_ages is not None:
            self.band_scores = self._band_scores(tx)
        return self

    def _band_scores(self, tx: pl.DataFrame) -> pl.DataFrame:
        """Per age band scores, shrunk towards the global ones so that small bands still rank every article.

        score(band, a) = w_band(a) + prior_weight * share_global(a), scaled so each band's best is 1;
        band -1 (unknown age) is the global list.
        """
        banded = (tx.join(self.customer_ages.select("customer_id", age_band()), on="customer_id", how="inner")
                  .filter(pl.col("band").is_not_null())
                  .group_by("band", "article_id").agg(w=exact_sum(pl.col("weight"))))
        share = (tx.group_by("article_id").agg(g=exact_sum(pl.col("weight")))
                 .with_columns(g=pl.col("g") / exact_sum(pl.col("g"))))
        bands = pl.DataFrame({"band": pl.Series(range(-1, len(AGE_BANDS) + 1), dtype=pl.Int8)})
        return (
            bands.join(share, how="cross")
            .join(banded.with_columns(pl.col("band").cast(pl.Int8)), on=["band", "article_id"], how="left")
            .with_columns(score=pl.col("w").fill_null(0.0) + self.prior_weight * pl.col("g"))
            .with_columns(score=(pl.col("score") / pl.col("score").max().over("band")).cast(pl.Float32),
                          article_id=pl.col("article_id").cast(ARTICLE))
            .sort(["band", "score", "article_id"], descending=[False, True, False])
            .select("band", "article_id", "score")
        )

    @staticmethod
    def _scores(tx: pl.DataFrame) -> pl.DataFrame:
        """Summed weight per article, scaled so the best article scores 1, best first."""
        return (
            tx.group_by("article_id").agg(score=exact_sum(pl.col("weight")))
            .with_columns(score=(pl.col("score") / pl.col("score").max()).cast(pl.Float32),
                          article_id=pl.col("article_id").cast(ARTICLE))
            .sort(["score", "article_id"], descending=[True, False])
        )

    def _bands(self, customers: pl.DataFrame) -> pl.DataFrame:
        """customer_id -> band (-1 = global list)."""
        ages = self.customer_ages.select("customer_id", age_band())
        return (customers.join(ages, on="customer_id", how="left", maintain_order="left")
                .with_columns(pl.col("band").cast(pl.Int8).fill_null(-1)))

    def groups(self, customers: pl.DataFrame) -> pl.DataFrame:
        """customers with a `group` column: customers of one group get the same list (their age band, or 0)."""
        if self.customer_ages is None:
            return customers.with_columns(group=pl.lit(0, dtype=pl.Int8))
        return self._bands(customers).rename({"band": "group"})

    def top_articles(self, n: int) -> pl.DataFrame:
        """The global top n: article_id, score."""
        return self.article_scores.head(n)

    def candidates(self, customers, n):
        """Every customer gets the top n of their list (a cross join: a cheap one, n rows each)."""
        if self.customer_ages is None:
            top = self.top_articles(n)
            return customers.join(top, how="cross").with_columns(source_article_id=pl.lit(None, dtype=ARTICLE))
        tops = self.band_scores.group_by("band", maintain_order=True).head(n)
        return (self._bands(customers).join(tops, on="band", how="inner")
                .select("customer_id", "article_id", "score", source_article_id=pl.lit(None, dtype=ARTICLE)))

    def score_pairs(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """The pairs (customer_id, article_id, ...) with this strategy's score added (0 for unsold articles)."""
        if self.customer_ages is None:
            scored = pairs.join(self.article_scores, on="article_id", how="left", maintain_order="left")
        else:
            # a band that never bought the article still has the global share as prior
            scored = (self._bands(pairs)
                      .join(self.band_scores, on=["band", "article_id"], how="left", maintain_order="left")
                      .drop("band"))
        return scored.with_columns(pl.col("score").fill_null(0.0))

    def reason(self, article_id, source):
        return pl.lit(self.reason_text)


def popularity_strategies(customers: pl.DataFrame | None = None, half_life_days: float = 7.0) -> list[Popularity]:
    """The popularity baselines: all-time, last week, time-decayed, and per age band when ages are known."""
    strategies = [
        Popularity("popular_all_time", reason_text="bestseller"),
        Popularity("popular_last_week", window_days=7, reason_text="trending"),
        Popularity("popular_decayed", half_life_days=half_life_days, reason_text="trending"),
    ]
    if customers is not None and "age" in customers.columns:
        strategies.append(Popularity("popular_age", half_life_days=half_life_days, customers=customers,
                                     reason_text="popular at your age"))
    return strategies


class CategoryPopularity(Recommender):
    """What is trending in the categories (departments) a customer buys from.

    score(customer, article) = share of the customer's purchases of the last `history_days` in
    the article's category (decayed, half-life `half_life_days`) x the article's recent sales
    (decayed, half-life 7 days, over `trend_days`; the best seller scores 1). Each customer's
    `top_categories` categories and each category's `per_category` best sellers are candidates.
    """

    name = "popular_department"
    proposes_unsold = False  # articles selling now

    def __init__(self, column: str = "department_name", history_days: int = 365, half_life_days: float = 120.0,
                 trend_days: int = 28, per_category: int = 12, top_categories: int = 5):
        self.column = column
        self.history_days = history_days
        self.half_life_days = half_life_days
        self.trend_days = trend_days
        self.per_category = per_category
        self.top_categories = top_categories

    def fit(self, transactions, articles, cutoff=None, customers=None):
        """Each customer's category shares and each category's trending articles before the cut-off."""
        if self.column not in articles.columns:
            raise UserError(f"articles lack the column {self.column}: rerun data_optim.py")
        transactions, self.cutoff = before(transactions, cutoff)
        category = articles.select(pl.col("article_id").cast(ARTICLE),
                                   category=pl.col(self.column).cast(pl.String).fill_null("unknown"))
        self.article_category = category
        self.shares = (
            own_purchases(transactions, customers).lazy()
            .filter(pl.col("t_dat") >= self.cutoff - timedelta(days=self.history_days))
            .select("customer_id", pl.col("article_id").cast(ARTICLE), weight=decay(self.cutoff, self.half_life_days))
            .join(category.lazy(), on="article_id", how="inner")
            .group_by("customer_id", "category").agg(exact_sum(pl.col("weight")))
            .with_columns(share=(pl.col("weight") / exact_sum(pl.col("weight")).over("customer_id")).cast(pl.Float32))
            .sort(["customer_id", "share", "category"], descending=[False, True, False])
            .group_by("customer_id", maintain_order=True).head(self.top_categories)
            .select("customer_id", "category", "share")
            .collect()
        )
        sales = (transactions.filter(pl.col("t_dat") >= self.cutoff - timedelta(days=self.trend_days))
                 .group_by(pl.col("article_id").cast(ARTICLE)).agg(sales=exact_sum(decay(self.cutoff, 7.0))))
        self.trending = (
            sales.with_columns(trend=(pl.col("sales") / pl.col("sales").max()).cast(pl.Float32))
            .join(category, on="article_id", how="inner")
            .sort(["category", "trend", "article_id"], descending=[False, True, False])
            .group_by("category", maintain_order=True).head(self.per_category)
            .select("category", "article_id", "trend")
        )
        return self

    def candidates(self, customers, n):
        """Join each customer's categories to their trending articles."""
        scored = (self.shares.join(customers, on="customer_id", how="semi")
                  .join(self.trending, on="category", how="inner")
                  .select("customer_id", "article_id", score=(pl.col("share") * pl.col("trend")).cast(pl.Float32),
                          source_article_id=pl.lit(None, dtype=ARTICLE)))
        return top_k(scored, n).select(list(CANDIDATE_SCHEMA))

    def reason(self, article_id, source):
        names = self.article_category
        return pl.format("trending in {}", article_id.replace_strict(names["article_id"], names["category"],
                                                                     default="your departments"))


MIN_GROUP_SALES = 5        # fewer purchases in the window are one household's basket: the group proposes nothing
LOCAL_WINDOW_DAYS = 14     # two weeks: one week leaves most groups under MIN_GROUP_SALES


def age_postal_groups(customers: pl.DataFrame) -> pl.DataFrame:
    """customer_id, postal_code, band (age_band; null for an unknown age) of the customers with a postal code."""
    ages = age_band() if "age" in customers.columns else pl.lit(None, dtype=pl.Int8).alias("band")
    return customers.filter(pl.col("postal_code").is_not_null()).select("customer_id", "postal_code", ages)


class LocalPopularity(Recommender):
    """What customers of the same age band and postal code bought lately (2nd place's strongest source on Kaggle).

    score(customer, article) = the article's share of the purchases of the customer's group (age
    band x postal code) in the last `window_days`. A group with fewer than `min_sales` purchases
    there proposes nothing, and so does a customer without an age or a postal code: never the
    global list, which the popularity sources already give.
    """

    name = "popular_age_postal"
    proposes_unsold = False  # articles selling now

    def __init__(self, customers: pl.DataFrame, window_days: int = LOCAL_WINDOW_DAYS,
                 min_sales: int = MIN_GROUP_SALES):
        if "postal_code" not in customers.columns:
            raise UserError("customers lack the column postal_code: rerun data_optim.py")
        self.groups = age_postal_groups(customers).filter(pl.col("band").is_not_null())
        self.window_days = window_days
        self.min_sales = min_sales

    def fit(self, transactions, articles=None, cutoff=None, customers=None):
        """Each group's article shares over the window before the cut-off, best first."""
        transactions, self.cutoff = before(transactions, cutoff)
        keys = ["band", "postal_code"]
        self.group_scores = (
            transactions.filter(pl.col("t_dat") >= self.cutoff - timedelta(days=self.window_days))
            .join(self.groups, on="customer_id", how="inner")
            .group_by(*keys, pl.col("article_id").cast(ARTICLE)).agg(n=pl.len())
            .filter(pl.col("n").sum().over(keys) >= self.min_sales)
            .with_columns(score=(pl.col("n") / pl.col("n").sum().over(keys)).cast(pl.Float32))
            .sort([*keys, "score", "article_id"], descending=[False, False, True, False])
            .select(*keys, "article_id", "score"))
        return self

    def candidates(self, customers, n):
        """Each customer's group's top n."""
        tops = self.group_scores.group_by("band", "postal_code", maintain_order=True).head(n)
        return (as_customer_frame(customers).join(self.groups, on="customer_id", how="inner")
                .join(tops, on=["band", "postal_code"], how="inner")
                .select("customer_id", "article_id", "score", source_article_id=pl.lit(None, dtype=ARTICLE))
                .sort(["customer_id", "score", "article_id"], descending=[False, True, False]))

    def reason(self, article_id, source):
        return pl.lit("popular at your age near you")


# ---------------------------------------------------------------------------- similar to recent purchases

def top_n(scores: np.ndarray, n: int, above: float = -np.inf,
          margin: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of each row's n largest scores above `above`, and of every score tied with the n-th,
    in row-major order; with a margin (per row), of every score within it of the n-th too.

    Ties are all kept so that the caller, not the selection algorithm, decides which tied column wins
    (by id): the same answer on every run. A row's n-th largest score is found among few candidates:
    split into about 8n chunks, the row's n-th largest chunk maximum is at most its n-th largest
    score (n chunks each hold a score at least that high), so only the scores at or above it are
    sorted. Three passes over the block instead of a partition of it (3.5x faster at 30,000 columns);
    the same answer as partitioning every row (top_n_by_partition).
    """
    rows, width = scores.shape
    margin = np.broadcast_to(np.asarray(margin, dtype=np.float32), (rows,))
    chunk = width // (8 * n)
    if chunk < 4 or rows == 0:
        return top_n_by_partition(scores, n, above, margin)
    whole = width - width % chunk
    maxima = scores[:, :whole].reshape(rows, -1, chunk).max(axis=2)
    if whole < width:
        maxima = np.hstack([maxima, scores[:, whole:].max(axis=1, keepdims=True)])
    bound = np.partition(maxima, maxima.shape[1] - n, axis=1)[:, maxima.shape[1] - n]
    r, c = np.nonzero(scores >= (bound - margin)[:, None])  # every row has at least n of these
    if len(r) > scores.size // 8:  # mostly ties (one-hot vectors): sorting them would cost more
        return top_n_by_partition(scores, n, above, margin)
    values = scores[r, c]
    ranked = np.lexsort((-values, r))            # within each row, largest first
    first = np.searchsorted(r, np.arange(rows))  # r is sorted: each row's first candidate
    kth = values[ranked[first + n - 1]]
    keep = (values >= kth[r] - margin[r]) & (values > above)
    return r[keep], c[keep]


def top_n_by_partition(scores: np.ndarray, n: int, above: float = -np.inf,
                       margin: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """top_n by one partition per row: for narrow blocks, and the reference it is tested against."""
    width = scores.shape[1]
    kth = np.partition(scores, width - n, axis=1)[:, width - n]
    return np.nonzero((scores >= (kth - margin)[:, None]) & (scores > above))


FIRST_TARGETS = 4096  # targets of the heaviest weights every query is compared with first (then 2x, 4x, ...)


def nearest_neighbours(query_vectors: np.ndarray, query_ids: np.ndarray, target_vectors: np.ndarray,
                       target_ids: np.ndarray, n: int, block: int = 1024,
                       target_weights: np.ndarray | None = None) -> pl.DataFrame:
    """Top-n cosine neighbours among the targets for each query (L2-normalised rows), itself excluded.

    With target_weights (in [0, 1]), similarity x weight of the target ranks and scores the neighbours,
    and the targets are read in decreasing weight, FIRST_TARGETS then twice as many each time: a query
    stops once its n-th best score is above the next target's weight, which bounds every later target's
    score (a cosine is at most 1). Where a few best sellers carry the weight, most queries stop after a
    few thousand targets; the answer is the same as comparing with every target (each score is the same
    product). Computed in blocks of queries so memory stays at block x targets floats.

    Each score is a float64 product rounded to float32 (then x weight), so it is the query's own: some BLAS
    builds (OpenBLAS on an AMD EPYC) round a float32 product's row differently with the other rows of its
    block, which made near-tied neighbours depend on which other articles were looked up alongside (batches,
    threads, the customers a source was fitted for). The block's products are taken in float32 (twice as
    fast) only to find the candidates: every target within twice float32's error bound of a query's n-th
    float32 score (float32_margin), which holds every target of its true top n; those few are rescored in
    float64 (rescore). The answer is that of float64 products for every pair.
    """
    empty = pl.DataFrame(schema={"article_id": ARTICLE, "neighbour_id": ARTICLE, "similarity": pl.Float32})
    n_eff = min(n + 1, len(target_ids))
    if len(query_ids) == 0 or n_eff == 0:
        return empty
    query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
    target_vectors = np.ascontiguousarray(target_vectors, dtype=np.float32)
    target_vectors, target_ids, target_weights, ends = heaviest_first(target_vectors, target_ids, target_weights)
    self_col = own_columns(query_ids, target_ids)
    margins = float32_margin(query_vectors, target_vectors)
    parts = []
    for start in range(0, len(query_ids), block):
        ids, own = query_ids[start:start + block], self_col[start:start + block]
        queries = query_vectors[start:start + block]
        active, lo = np.arange(len(ids)), 0
        rows, cols, values = [], [], []
        for end in ends:
            sims = queries[active] @ target_vectors[lo:end].T
            if target_weights is not None:
                sims *= target_weights[None, lo:end]
            inside = np.flatnonzero((own[active] >= lo) & (own[active] < end))
            sims[inside, own[active][inside] - lo] = -np.inf
            k = min(n_eff, end - lo)
            r, c = top_n(sims, k, margin=margins[start + active])
            del sims
            exact = rescore(queries, active[r], target_vectors, c + lo)
            if target_weights is not None:
                exact *= target_weights[c + lo]
            exact[own[active[r]] == c + lo] = -np.inf
            keep = (exact >= nth_best(r, exact, len(active), k)[r]) & (exact > 0.0)  # only positive ones are neighbours
            rows.append(active[r[keep]])
            cols.append(c[keep] + lo)
            values.append(exact[keep])
            if end == len(target_ids):
                break
            active, lo = still_open(active, rows, values, len(ids), n, target_weights[end]), end
            if len(active) == 0:
                break
        parts.append(block_neighbours(ids, rows, target_ids, cols, values))
    return best_neighbours(parts, n)


def still_open(active: np.ndarray, rows: list, values: list, n_rows: int, n: int, next_weight: float) -> np.ndarray:
    """The queries of `active` whose n-th best similarity so far (rows, values: the chunks' found pairs) some later
    target could still beat: those targets weigh at most next_weight (1.001: a float32 cosine may pass 1 by
    rounding)."""
    settled = nth_best(np.concatenate(rows), np.concatenate(values), n_rows, n) > next_weight * 1.001
    return active[~settled[active]]


def block_neighbours(ids: np.ndarray, rows: list, target_ids: np.ndarray, cols: list, values: list) -> pl.DataFrame:
    """One block of queries' found pairs (the chunks' rows, columns and similarities) as article_id, neighbour_id,
    similarity."""
    return pl.DataFrame({
        "article_id": ids[np.concatenate(rows)].astype(np.int32),
        "neighbour_id": target_ids[np.concatenate(cols)].astype(np.int32),
        "similarity": np.concatenate(values).astype(np.float32),
    })


def best_neighbours(parts: list[pl.DataFrame], n: int) -> pl.DataFrame:
    """Each article's n best positive neighbours among the blocks' pairs, ties by neighbour id."""
    out = pl.concat(parts).filter(pl.col("similarity").is_finite() & (pl.col("similarity") > 0))
    return (out.sort(["article_id", "similarity", "neighbour_id"], descending=[False, True, False])
            .group_by("article_id", maintain_order=True).head(n))


def heaviest_first(target_vectors: np.ndarray, target_ids: np.ndarray, target_weights: np.ndarray | None):
    """The targets in decreasing weight (stable) and where each chunk of them ends: FIRST_TARGETS, then twice as
    many each time; without weights, as given and one chunk."""
    if target_weights is None:
        return target_vectors, target_ids, None, [len(target_ids)]
    target_weights = np.asarray(target_weights, dtype=np.float32)
    heaviest = np.argsort(-target_weights, kind="stable")
    ends, end, size = [], 0, FIRST_TARGETS
    while end < len(target_ids):
        end = min(len(target_ids), end + size)
        ends.append(end)
        size *= 2
    return target_vectors[heaviest], target_ids[heaviest], target_weights[heaviest], ends


def own_columns(query_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """Where each query sits among the targets (an article is not its own neighbour); -1 where it is not one."""
    order = np.argsort(target_ids, kind="stable")
    pos = np.searchsorted(target_ids[order], query_ids).clip(0, len(target_ids) - 1)
    return np.where(target_ids[order][pos] == query_ids, order[pos], -1)


def float32_margin(query_vectors: np.ndarray, target_vectors: np.ndarray) -> np.ndarray:
    """Per query, twice the most a float32 product (x a weight in [0, 1]) can differ from the float64 product
    rounded to float32 (x the same weight): the n-th float32 score and any target's score may each be off by it.

    A float32 dot product of length d, summed in any order, is within gamma_d = d u / (1 - d u) x |q| |t| of
    the exact one (u = 2**-24, Higham's bound, Cauchy-Schwarz for the sum of |q_i t_i|); the float32 roundings
    of the product, the weight's multiplication and the reference's add 4u x |q| |t| at most. Doubled again for
    the subtraction that applies it.
    """
    u = 2.0 ** -24
    d = query_vectors.shape[1]
    gamma = d * u / (1 - d * u)
    longest = float(np.sqrt(np.einsum("ij,ij->i", target_vectors, target_vectors, dtype=np.float64).max()))
    lengths = np.sqrt(np.einsum("ij,ij->i", query_vectors, query_vectors, dtype=np.float64))
    return (4 * (gamma + 4 * u) * lengths * max(longest, 1.0)).astype(np.float32)


def rescore(query_vectors: np.ndarray, rows: np.ndarray, target_vectors: np.ndarray, cols: np.ndarray,
            chunk: int = 2 ** 22) -> np.ndarray:
    """float32 of the float64 products of query_vectors[rows[i]] and target_vectors[cols[i]], pair by pair: each
    value is summed from its own two vectors only (whatever else is rescored with it), a few million floats at
    a time."""
    out = np.empty(len(cols), dtype=np.float32)
    step = max(1, chunk // max(1, query_vectors.shape[1]))
    for start in range(0, len(cols), step):
        out[start:start + step] = np.einsum("ij,ij->i", query_vectors[rows[start:start + step]],
                                            target_vectors[cols[start:start + step]], dtype=np.float64)
    return out


def nth_best(rows: np.ndarray, values: np.ndarray, n_rows: int, n: int) -> np.ndarray:
    """Each row's n-th largest value among (rows, values) pairs; -inf for a row with fewer than n."""
    order = np.lexsort((-values, rows))
    rows, values = rows[order], values[order]
    first = np.searchsorted(rows, np.arange(n_rows))
    has = np.bincount(rows, minlength=n_rows) >= n
    out = np.full(n_rows, -np.inf)
    out[has] = values[first[has] + n - 1]
    return out


_LOOKUP = threading.Lock()  # guards SimilarToRecent's look-ups made once and kept (neighbours_of)


class SimilarToRecent(Recommender):
    """Articles most similar to each customer's recent purchases (shared by content and visual).

    score(customer, article) = max over recent purchases p of
        similarity(p, article) x popularity(article) ** popularity_weight x recency(p),
    and the purchase that gives the max is the reason. Each purchase's `neighbours` best
    articles (by similarity x popularity factor) are looked up once per fit; subclasses supply
    the similarity through `neighbour_table`.
    """

    # defaults chosen on the validation week of the demo sample (fit on train): tastes are long-lived,
    # so a year of purchases with a slow decay beats the last month
    def __init__(self, recent_days: int = 365, per_customer: int = 6, half_life_days: float = 120.0,
                 active_days: int = 28, neighbours: int = 12, popularity_weight: float = 0.5):
        self.recent_days = recent_days
        self.per_customer = per_customer
        self.half_life_days = half_life_days
        self.active_days = active_days
        self.neighbours = neighbours
        self.popularity_weight = popularity_weight

    def neighbour_table(self, queries: pl.Series, targets: pl.DataFrame, articles: pl.DataFrame) -> pl.DataFrame:
        """article_id, neighbour_id, similarity in [0, 1] for each query, neighbours among the targets.

        targets: article_id, weight (the popularity factor in [0, 1] each neighbour's similarity is multiplied by).
        """
        raise NotImplementedError

    def target_weights(self, transactions: pl.DataFrame, articles: pl.DataFrame) -> pl.DataFrame:
        """Available articles with weight = (recent decayed sales / the best seller's) ** popularity_weight.

        Of two equally similar articles, the one selling now is the likelier purchase. A launch
        (never sold) counts as a median seller, so that cold-start articles stay within reach.
        """
        targets = available_articles(transactions, articles, self.cutoff, self.active_days).to_frame("article_id")
        if not self.popularity_weight:
            return targets.with_columns(weight=pl.lit(1.0, dtype=pl.Float32))
        sales = (transactions.filter(pl.col("t_dat") >= self.cutoff - timedelta(days=self.active_days))
                 .group_by("article_id").agg(sales=exact_sum(decay(self.cutoff, 7.0)))
                 .with_columns(pl.col("article_id").cast(ARTICLE)))
        return (targets.join(sales, on="article_id", how="left")
                .with_columns(pl.col("sales").fill_null(pl.col("sales").median()))
                .select("article_id", weight=((pl.col("sales") / pl.col("sales").max()) ** self.popularity_weight)
                        .cast(pl.Float32)))

    def fit(self, transactions, articles, cutoff=None, customers=None):
        """Remember recent purchases and the available articles (weighted by their sales).

        The neighbours of a recently bought article are looked up the first time a customer who bought
        it is asked for (neighbours_of), then kept: a training week asks for its buyers only."""
        given = transactions
        transactions, self.cutoff = before(transactions, cutoff)
        self.recent = shared_recent(self, given, transactions, customers, self.recent_days, self.per_customer,
                                    self.half_life_days)
        self.weighted = self.target_weights(transactions, articles)
        self.targets = self.weighted["article_id"]
        self.articles = articles
        self.looked_up = pl.Series("article_id", [], dtype=ARTICLE)
        self.neighbour_pairs = pl.DataFrame(schema={"article_id": ARTICLE, "neighbour_id": ARTICLE,
                                                    "similarity": pl.Float32})
        return self

    def neighbours_of(self, queries: pl.Series) -> pl.DataFrame:
        """The neighbour pairs of these articles: those not looked up yet are, once (each query is
        independent of the others, so the pairs are the same as looking up every article at once)."""
        queries = queries.cast(ARTICLE).unique()
        with _LOOKUP:  # batches scored in threads (scale_out.score_batches) share the pairs looked up
            new = queries.filter(~queries.is_in(self.looked_up.implode())).sort()
            if new.len():
                found = self.neighbour_table(new, self.weighted, self.articles)
                self.neighbour_pairs = pl.concat([self.neighbour_pairs, found.select(self.neighbour_pairs.columns)])
                self.looked_up = pl.concat([self.looked_up, new])
            pairs = self.neighbour_pairs
        return pairs.join(queries.to_frame("article_id"), on="article_id", how="semi")

    def __getstate__(self):
        """Pickled for another process (Ray's workers): every neighbour looked up first, once, not per worker."""
        if getattr(self, "recent", None) is not None and hasattr(self, "looked_up"):
            self.neighbours_of(self.recent["article_id"])
        return self.__dict__

    def candidates(self, customers, n):
        """Join recent purchases to their neighbours; keep each article's best-explained score."""
        recent = self.recent.join(customers, on="customer_id", how="semi")
        joined = (
            recent.join(self.neighbours_of(recent["article_id"]), on="article_id", how="inner")
            .with_columns(score=(pl.col("similarity") * pl.col("weight")).cast(pl.Float32))
        )
        if joined.height == 0:
            return empty_candidates()
        # best explanation per (customer, article): sort then keep the first (a group_by arg-max is 10x slower)
        best = (
            joined.sort(["customer_id", "score", "neighbour_id", "article_id"], descending=[False, True, False, False])
            .unique(["customer_id", "neighbour_id"], keep="first", maintain_order=True)
            .select("customer_id", article_id="neighbour_id", score="score", source_article_id="article_id")
        )
        return top_k(best, n).select(list(CANDIDATE_SCHEMA))


_CONTENT_VECTORS: dict = {}  # the last catalogue's content vectors in this process (ContentSimilarity.article_vectors)


class ContentSimilarity(SimilarToRecent):
    """Metadata vectors (one-hot type, colour, department, appearance, index group + TF-IDF of detail_desc).

    The categories together have length 1 and the description `description_weight`; the matrix
    is reduced with truncated SVD when wide (cosine on a dense matrix is one BLAS call per block).
    """

    name = "content"

    def __init__(self, description_weight: float = 0.5, dims: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.description_weight = description_weight
        self.dims = dims

    def reason(self, article_id, source):
        return pl.format("similar description to {}", article_id_text(source))

    def article_vectors(self, articles: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised float32 vectors of every article in the catalogue, and their ids (cached per catalogue).

        The catalogue does not change between the cut-offs of one run, whose every fit makes new sources:
        the vectors (a TF-IDF and an SVD, ~5 s for 105k articles) are made once per process and catalogue.
        """
        key = (articles.height, int(articles["article_id"].cast(pl.Int64).sum()), self.description_weight, self.dims)
        if getattr(self, "_vectors_key", None) != key:  # a new catalogue for this source: check its every value
            catalogue = (hashlib.sha1(articles.hash_rows(seed=0).to_numpy().tobytes()).hexdigest(),
                         self.description_weight, self.dims)
            if _CONTENT_VECTORS.get("catalogue") != catalogue:
                _CONTENT_VECTORS.update(catalogue=catalogue, vectors=self._article_vectors(articles))
            self._vectors, self._vectors_key = _CONTENT_VECTORS["vectors"], key
        return self._vectors

    def _article_vectors(self, articles: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        from scipy import sparse
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import OneHotEncoder, normalize

        missing = [c for c in CONTENT_COLUMNS if c not in articles.columns]
        if missing:
            raise UserError(f"articles lack the column(s) {', '.join(missing)}: rerun data_optim.py")
        cats = articles.select([pl.col(c).cast(pl.String).fill_null("") for c in CONTENT_COLUMNS]).to_numpy()
        onehot = OneHotEncoder(handle_unknown="ignore", dtype=np.float32).fit_transform(cats)
        onehot = normalize(onehot)  # every article's category part has length 1
        blocks = [onehot]
        texts = articles["detail_desc"].cast(pl.String).fill_null("").to_list() \
            if "detail_desc" in articles.columns else []
        if any(texts):
            try:
                tfidf = TfidfVectorizer(min_df=2, max_features=20_000, stop_words="english", sublinear_tf=True,
                                        dtype=np.float32).fit_transform(texts)
                blocks.append(self.description_weight * tfidf)
            except ValueError:  # vocabulary empty (every word rare or a stop word): categories only
                pass
        matrix = sparse.hstack(blocks, format="csr").astype(np.float32)
        if matrix.shape[1] > self.dims and matrix.shape[0] > self.dims:
            matrix = TruncatedSVD(n_components=self.dims, random_state=0).fit_transform(matrix)
        else:
            matrix = matrix.toarray()
        vectors = normalize(np.asarray(matrix, dtype=np.float32))
        return vectors.astype(np.float32), articles["article_id"].cast(ARTICLE).to_numpy()

    def neighbour_table(self, queries, targets, articles):
        vectors, ids = self.article_vectors(articles)
        index = pl.DataFrame({"article_id": ids, "row": np.arange(len(ids))})
        q = index.join(queries.to_frame("article_id"), on="article_id", how="semi")
        t = index.join(targets, on="article_id", how="inner")
        table = nearest_neighbours(vectors[q["row"].to_numpy()], q["article_id"].to_numpy(),
                                   vectors[t["row"].to_numpy()], t["article_id"].to_numpy(), self.neighbours,
                                   target_weights=t["weight"].to_numpy())
        return table.with_columns(pl.col("similarity").clip(0.0, 1.0))


class VisualSimilarity(SimilarToRecent):
    """Visual twins (visual_reccs.py) of each customer's recent purchases; reaches never-sold articles."""

    name = "visual"

    def __init__(self, twins: pl.DataFrame, **kwargs):
        super().__init__(**kwargs)
        self.twins = twins.select(pl.col("article_id").cast(ARTICLE), pl.col("twin_id").cast(ARTICLE),
                                  pl.col("score").cast(pl.Float32))

    @classmethod
    def load(cls, artifacts, quiet: bool = False, **kwargs) -> VisualSimilarity | None:
        """The strategy over artifacts.visual_twins, or None (saying so once) when there are no twins."""
        twins = load_twins(artifacts)
        if twins is None:
            if not quiet:
                print(f"visual: no visual twins at {artifacts.visual_twins} (run visual_features.py and "
                      "visual_reccs.py); recommending without the visual strategy", flush=True)
            return None
        return cls(twins, **kwargs)

    def reason(self, article_id, source):
        return pl.format("looks like {}", article_id_text(source))

    def neighbour_table(self, queries, targets, articles):
        return (
            self.twins.join(queries.to_frame("article_id"), on="article_id", how="semi")
            .filter(pl.col("twin_id") != pl.col("article_id"))
            .join(targets.rename({"article_id": "twin_id"}), on="twin_id", how="inner")
            .select("article_id", neighbour_id="twin_id",
                    similarity=(pl.col("score").clip(0.0, 1.0) * pl.col("weight")).cast(pl.Float32))
            .sort(["article_id", "similarity", "neighbour_id"], descending=[False, True, False])
            .group_by("article_id", maintain_order=True).head(self.neighbours)
        )


# ---------------------------------------------------------------------------- cold start: new arrivals

def new_articles(transactions: pl.DataFrame, articles: pl.DataFrame, max_sales: int = 0) -> pl.Series:
    """Catalogue articles sold at most max_sales times before the cut-off: launches, known at the cut-off.

    Decided from the history alone: the catalogue lists future launches too (metadata and images,
    no sales yet), and an article with no sales before the cut-off is new as far as anyone can know then.
    """
    sales = transactions.group_by(pl.col("article_id").cast(ARTICLE)).agg(sales=pl.len())
    return (articles.select(pl.col("article_id").cast(ARTICLE))
            .join(sales, on="article_id", how="left")
            .filter(pl.col("sales").fill_null(0) <= max_sales)["article_id"].unique().sort())


class NewArrivals(SimilarToRecent):
    """Cold start: the new articles (no sales before the cut-off) that look most like each customer's recent purchases.

    score(customer, article) = max over recent purchases p of similarity(p, article) x recency(p),
    over new articles only, so it never recommends anything that sold before the cut-off. Similarity
    is the cosine of the image features (visual_features.npy) when given, else of the content vectors.
    Each recently bought article's `neighbours` nearest new articles are computed once per fit.
    """

    name = "new_arrivals"

    def __init__(self, visual: tuple[np.ndarray, np.ndarray] | None = None, max_sales: int = 0, **kwargs):
        kwargs.setdefault("popularity_weight", 0.0)  # a launch has no sales to weigh it by
        super().__init__(**kwargs)
        self.max_sales = max_sales
        self.visual = None
        if visual is not None:
            ids, features = visual
            order = np.argsort(np.asarray(ids), kind="stable")
            self.visual = (np.asarray(ids, dtype=np.int32)[order], normalize(np.asarray(features)[order]))
        self.content = None if self.visual is not None else ContentSimilarity()

    def reason(self, article_id, source):
        words = "looks like {} (new arrival)" if self.visual is not None else "similar to {} (new arrival)"
        return pl.format(words, article_id_text(source))

    def target_weights(self, transactions, articles):
        """The new articles, each of weight 1."""
        return (new_articles(transactions, articles, self.max_sales).to_frame("article_id")
                .with_columns(weight=pl.lit(1.0, dtype=pl.Float32)))

    def neighbour_table(self, queries, targets, articles):
        vectors, ids = (self.visual[1], self.visual[0]) if self.visual is not None \
            else self.content.article_vectors(articles)
        index = pl.DataFrame({"article_id": ids.astype(np.int32), "row": np.arange(len(ids))})
        q = index.join(queries.to_frame("article_id"), on="article_id", how="semi")
        t = index.join(targets.select("article_id"), on="article_id", how="semi")
        table = nearest_neighbours(vectors[q["row"].to_numpy()], q["article_id"].to_numpy(),
                                   vectors[t["row"].to_numpy()], t["article_id"].to_numpy(), self.neighbours)
        return table.with_columns(pl.col("similarity").clip(0.0, 1.0))
