"""Features of each pooled (customer, article) at a cut-off, for the ranker: nothing from the label week.

`Context` holds what the features are computed from: the transactions strictly before the
cut-off, the catalogue, the customers, and the article vectors (image features when present,
content vectors always). `Context.features(pool)` adds, per pooled row:

- every source's score and rank (already in the pool, see candidates.py);
- customer: days since last purchase, purchase count, average price, channel-2 share, age;
- article: sales in the last 1, 2, 4 and 12 weeks, trend, days since first sale, price, share of
  repeat buyers;
- customer x article: times bought, days since last bought, decayed counts at three half-lives,
  the share of the customer's purchases in the article's product type, department and colour,
  and the highest visual and content similarity to the customer's recent purchases (with the
  purchase that gives it, for the reasons; not a feature);
- a year back (1st place on Kaggle): the article's sales and the pair's purchases in the same week a
  year before the label week, the article's lifetime sales and distinct buyers;
- near the customer (2nd place): the article's share of the last weeks' sales among customers of the
  same postal code, and of the same age band and postal code (when customers have postal codes);
- taste: mf_score, the dot product of the customer's and the article's factors (factors.py, refitted
  at each cut-off; null when either has no purchase in the factors' window).

Time scales are given at several values (HALF_LIVES, SALES_WEEKS) so the ranker weighs them,
rather than one scale being chosen by hand. A feature the data cannot support (no images, no
colours) is absent or constant, and the ranker drops it and says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from fde import factors
from fde.candidates import KEYS
from fde.strategies import ARTICLE, age_postal_groups, as_customer_frame, decay, own_purchases

HALF_LIVES = (7.0, 30.0, 180.0)  # decayed purchase counts at three scales: a week, a month, a season
SALES_WEEKS = (1, 2, 4, 12)
RECENT_ITEMS = 6                  # distinct latest purchases a candidate's similarity is measured against
VECTOR_DIMS = 64                  # similarity features use vectors reduced to this many dimensions
# rows per block when measuring similarities: a block's gathered vectors (rows x RECENT_ITEMS x dims) stay in
# the CPU cache (2.2x faster than blocks of 166k rows at full scale, 1.6x on the fashion demo: bench_similarity.py)
SIMILARITY_ROWS = 8_192
# the label week's twin a year back: the 7 days from 364 days (52 weeks, the same weekdays) before the cut-off
LAST_YEAR_DAYS = 364
POSTAL_WEEKS = (1, 4)  # windows of the postal-code popularity shares
AFFINITIES = {"product_type_no": "affinity_type", "department_no": "affinity_department",
              "colour_group_code": "affinity_colour"}

# features that are bookkeeping, not evidence
NOT_FEATURES = ("customer_id", "article_id", "label", "cutoff", "score", "rank")


def reduce_vectors(ids: np.ndarray, vectors: np.ndarray, dims: int = VECTOR_DIMS) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised rows, reduced to `dims` principal directions when wider (cosines change little)."""
    from sklearn.decomposition import TruncatedSVD

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[1] > dims and vectors.shape[0] > dims:
        vectors = TruncatedSVD(n_components=dims, random_state=0).fit_transform(vectors).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(ids, dtype=np.int32), vectors / np.where(norms > 0, norms, 1.0)


@dataclass
class CustomerTables:
    """The tables of some customers' own purchases before the cut-off (Context.customer_tables)."""

    customers: pl.DataFrame                 # customer_id -> activity, age
    pairs: pl.DataFrame                     # (customer_id, article_id) -> counts, decayed counts, recency
    shares: dict[str, pl.DataFrame]         # affinity feature -> (customer_id, value) -> share of purchases
    recent: pl.DataFrame                    # each customer's RECENT_ITEMS latest distinct articles


def group_article_key(group: pl.Expr, article: pl.Expr) -> pl.Expr:
    """A (group code, article id) pair as one UInt64 join key: a join on the pair took 1.4x as long."""
    return group.cast(pl.UInt64) * (1 << 32) + (article.cast(pl.Int64) + (1 << 31)).cast(pl.UInt64)


def with_local_shares(frame: pl.DataFrame, local_tables: tuple[pl.DataFrame, dict]) -> pl.DataFrame:
    """The frame (customer_id, article_id, ...) with postal_customers and each group's share of the row's article
    (Context._local's tables; rows unchanged)."""
    groups, tables = local_tables
    out = frame.join(groups, on="customer_id", how="left", maintain_order="left")
    for name, (code, table) in tables.items():
        # a customer in a known group whose members did not buy the article: 0; no group: unknown
        out = (out.with_columns(group_key=group_article_key(pl.col(code), pl.col("article_id")))
               .join(table, on="group_key", how="left", maintain_order="left")
               .with_columns(pl.when(pl.col(code).is_not_null()).then(pl.col(name).fill_null(0.0)).alias(name)))
    return out.drop("group_key", *{code for code, _ in tables.values()})


class Context:
    """Everything the features at one cut-off are computed from.

    The article tables (sales, lifetime, a year back, near the customer) and the factors are computed
    once, from every purchase before the cut-off. The tables of a customer's own purchases are computed
    when `features` is given that customer's rows, from those customers' purchases alone: a training
    week's pool holds its buyers (40,000 of Kaggle's 1.37M customers), and final.py scores customers in
    batches, so no table of every customer's history is built. The values are the same either way.
    """

    def __init__(self, transactions: pl.DataFrame, articles: pl.DataFrame, customers: pl.DataFrame, cutoff,
                 vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 chain: factors.Chain | None = None):
        """chain: the factors are fitted as its next cut-off's (from its last factors), else from random ones."""
        self.cutoff = cutoff
        history = transactions.filter(pl.col("t_dat") < cutoff).with_columns(pl.col("article_id").cast(ARTICLE))
        self.history = history
        self.customers = customers
        self.articles = articles.with_columns(pl.col("article_id").cast(ARTICLE))
        self.vectors = vectors or {}
        self.article_table, self.lifetime_table = self._articles(history)
        self.affinity_values = {feature: self.articles.select("article_id", value=pl.col(column).cast(pl.Int64))
                                for column, feature in AFFINITIES.items() if column in self.articles.columns}
        self.last_year_tables = self._last_year(history)
        self.local_tables = self._local(history, customers)
        self.factors = chain.fit(history, cutoff) if chain is not None else factors.fit(history, cutoff)

    def customer_tables(self, customer_ids: pl.Series) -> CustomerTables:
        """The per-customer tables of these customers, from their purchases before the cut-off."""
        ids = as_customer_frame(customer_ids)
        history = own_purchases(self.history, ids)
        customers = self.customers.join(ids, on="customer_id", how="semi")
        recent = (history.group_by("customer_id", "article_id").agg(last=pl.col("t_dat").max())
                  .sort(["customer_id", "last", "article_id"], descending=[False, True, False])
                  .group_by("customer_id", maintain_order=True).head(RECENT_ITEMS))
        return CustomerTables(self._customers(history, customers), self._pairs(history), self._affinities(history),
                              recent)

    def _customers(self, history: pl.DataFrame, customers: pl.DataFrame) -> pl.DataFrame:
        stats = history.group_by("customer_id").agg(
            days_since_last_purchase=(pl.lit(self.cutoff) - pl.col("t_dat").max()).dt.total_days().cast(pl.Float32),
            purchases=pl.len().cast(pl.Float32),
            customer_avg_price=pl.col("price").mean().cast(pl.Float32),
            channel_2_share=(pl.col("sales_channel_id") == 2).mean().cast(pl.Float32),
        )
        ages = customers.select("customer_id", age=pl.col("age").cast(pl.Float32)) if "age" in customers.columns \
            else customers.select("customer_id", age=pl.lit(None, dtype=pl.Float32))
        return ages.join(stats, on="customer_id", how="full", coalesce=True)

    def _articles(self, history: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the article table: sales per window, first sale, price, repeat buyers, trend; the lifetime table:
        article_id -> lifetime_sales, lifetime_buyers), from every purchase before the cut-off.

        The pair's lifetime count is times_bought (the pair table counts every purchase before the cut-off).
        One plan for both: the (article, customer) groups that say who bought on two days also count the buyers
        (a group_by of its own with n_unique took 2.4 s a cut-off at full scale).
        """
        cutoff = self.cutoff
        sales = [(pl.col("t_dat") >= cutoff - timedelta(weeks=w)).sum().cast(pl.Float32).alias(f"sales_{w}w")
                 for w in SALES_WEEKS]
        # lazy: polars' eager group_by of every (article, customer) pair took 2-3x as long (full scale: 8.6 s
        # against 3.0 s); a buyer bought on two days or more when the first day is before the last. The mean
        # price stays eager: its float sum in the same order in every run
        lazy = history.lazy()
        recent = history.filter(pl.col("t_dat") >= cutoff - timedelta(weeks=max(SALES_WEEKS)))
        price = recent.group_by("article_id").agg(price=pl.col("price").mean().cast(pl.Float32)).lazy()
        repeat = (lazy.group_by("article_id", "customer_id").agg(again=pl.col("t_dat").min() < pl.col("t_dat").max())
                  .group_by("article_id").agg(repeat_buyer_share=pl.col("again").mean().cast(pl.Float32),
                                              lifetime_buyers=pl.len().cast(pl.Float32)))
        table = (lazy.group_by("article_id").agg(
            *sales,
            days_since_first_sale=(pl.lit(cutoff) - pl.col("t_dat").min()).dt.total_days().cast(pl.Float32),
            lifetime_sales=pl.len().cast(pl.Float32))
            .join(price, on="article_id", how="left").join(repeat, on="article_id", how="left")
            .with_columns(trend=((pl.col("sales_1w") + 1) / (pl.col("sales_4w") / 4 + 1)).cast(pl.Float32))
            .collect())
        lifetime = ["lifetime_sales", "lifetime_buyers"]
        return table.drop(lifetime), table.select("article_id", *lifetime)

    def _pairs(self, history: pl.DataFrame) -> pl.DataFrame:
        # positional aggregations come first in polars' output, as they did when written after the named ones
        return history.group_by("customer_id", "article_id").agg(
            *[decay(self.cutoff, h).sum().cast(pl.Float32).alias(f"bought_decayed_{int(h)}d") for h in HALF_LIVES],
            times_bought=pl.len().cast(pl.Float32),
            days_since_bought=(pl.lit(self.cutoff) - pl.col("t_dat").max()).dt.total_days().cast(pl.Float32),
        )

    def _affinities(self, history: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Per attribute: customer x value -> share of the customer's purchases (values: affinity_values)."""
        tables = {}
        for feature, values in self.affinity_values.items():
            tables[feature] = (history.select("customer_id", "article_id").join(values, on="article_id", how="inner")
                               .group_by("customer_id", "value").agg(n=pl.len())
                               .with_columns((pl.col("n") / pl.col("n").sum().over("customer_id"))
                                             .cast(pl.Float32).alias(feature))
                               .drop("n"))
        return tables

    def _last_year(self, history: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame] | None:
        """(article -> last_year_week_sales, pair -> last_year_week_bought) in [cutoff - 364 d, cutoff - 357 d).

        None when the history starts after that week began: unknown then, not zero.
        """
        start = self.cutoff - timedelta(days=LAST_YEAR_DAYS)
        if history.height == 0 or history["t_dat"].min() > start:
            return None
        week = history.filter((pl.col("t_dat") >= start) & (pl.col("t_dat") < start + timedelta(days=7)))
        return (week.group_by("article_id").agg(last_year_week_sales=pl.len().cast(pl.Float32)),
                week.group_by("customer_id", "article_id").agg(last_year_week_bought=pl.len().cast(pl.Float32)))

    def _local(self, history: pl.DataFrame, customers: pl.DataFrame) -> tuple[pl.DataFrame, dict] | None:
        """The customers' groups (postal code; age band x postal code) and each group's article shares per window.

        Returns (customer_id -> postal_customers and a code per kind of group, null where the customer has no
        such group; {feature: (code column, group_key -> share)}), None when the customers have no postal codes.
        A group's share of an article is its sales among the group's customers over the group's sales, in the
        last w weeks.
        """
        if "postal_code" not in customers.columns:
            return None
        kinds = {"postal": ["postal_code"], "age_postal": ["band", "postal_code"]}
        groups = age_postal_groups(customers).with_columns(
            postal_customers=pl.len().over("postal_code").cast(pl.Float32),
            **{f"{kind}_group": pl.when(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
               .then(pl.struct(keys).rank("dense")).otherwise(None).cast(pl.UInt32)
               for kind, keys in kinds.items()})
        tables = {}
        for weeks in POSTAL_WEEKS:
            recent = (history.filter(pl.col("t_dat") >= self.cutoff - timedelta(weeks=weeks))
                      .select("customer_id", "article_id").join(groups, on="customer_id", how="inner"))
            for kind in kinds:
                name, code = f"{kind}_share_{weeks}w", f"{kind}_group"
                tables[name] = (code, recent.filter(pl.col(code).is_not_null())
                                .group_by(code, "article_id").agg(n=pl.len())
                                .select(group_article_key(pl.col(code), pl.col("article_id")).alias("group_key"),
                                        (pl.col("n") / pl.col("n").sum().over(code)).cast(pl.Float32).alias(name)))
        return groups.select("customer_id", "postal_customers", *(f"{kind}_group" for kind in kinds)), tables

    def _with_history_features(self, out: pl.DataFrame) -> pl.DataFrame:
        """The lifetime, last-year, taste and postal-code features joined to a feature frame (rows unchanged)."""
        out = (out.join(self.lifetime_table, on="article_id", how="left", maintain_order="left")
               .with_columns(pl.col("lifetime_sales", "lifetime_buyers").fill_null(0.0)))
        if self.last_year_tables is None:
            out = out.with_columns(last_year_week_sales=pl.lit(None, dtype=pl.Float32),
                                   last_year_week_bought=pl.lit(None, dtype=pl.Float32))
        else:
            articles, pairs = self.last_year_tables
            out = (out.join(articles, on="article_id", how="left", maintain_order="left")
                   .join(pairs, on=KEYS, how="left", maintain_order="left")
                   .with_columns(pl.col("last_year_week_sales", "last_year_week_bought").fill_null(0.0)))
        out = out.with_columns(mf_score=self.factors.score_pairs(out) if self.factors is not None
                               else pl.lit(None, dtype=pl.Float32))
        return with_local_shares(out, self.local_tables) if self.local_tables is not None else out

    def padded_vectors(self, kind: str) -> np.ndarray:
        """The kind's vectors with a row of zeros after the last (what row -1 gathers), made once per Context."""
        padded = self.__dict__.setdefault("_padded", {})
        if kind not in padded:
            vectors = self.vectors[kind][1]
            padded[kind] = np.vstack([vectors, np.zeros((1, vectors.shape[1]), dtype=vectors.dtype)])
        return padded[kind]

    def similarity(self, pool: pl.DataFrame, kind: str, recent: pl.DataFrame) -> pl.DataFrame:
        """KEYS + sim_<kind>: the highest cosine between the article and the customer's recent purchases,
        plus sim_<kind>_source and sim_<kind>_days (which purchase, how long before the cut-off).

        Vectorised: each customer's last RECENT_ITEMS purchases form a (RECENT_ITEMS x dims) block,
        and every pooled row takes the max of its article vector against its customer's block.
        recent: the pool's customers' recent purchases (CustomerTables.recent).
        """
        ids = self.vectors[kind][0]
        name = f"sim_{kind}"
        keys = pool.select(KEYS)
        row_of = pl.DataFrame({"article_id": ids, "row": np.arange(len(ids), dtype=np.int32)})
        recent = (recent.join(keys.select("customer_id").unique(), on="customer_id", how="semi")
                  .join(row_of, on="article_id", how="inner")
                  .sort(["customer_id", "last", "article_id"], descending=[False, True, False])  # slot 0: latest
                  .with_columns(slot=pl.int_range(pl.len()).over("customer_id"),
                                days=(pl.lit(self.cutoff) - pl.col("last")).dt.total_days().cast(pl.Float32)))
        customers = recent.select("customer_id").unique().sort("customer_id").with_row_index("c")
        recent = recent.join(customers, on="customer_id")
        n = customers.height
        block_rows = np.full((n, RECENT_ITEMS), -1, dtype=np.int64)
        block_ids = np.full((n, RECENT_ITEMS), -1, dtype=np.int64)
        block_days = np.zeros((n, RECENT_ITEMS), dtype=np.float32)
        c, slot = recent["c"].to_numpy(), recent["slot"].to_numpy()
        block_rows[c, slot] = recent["row"].to_numpy()
        block_ids[c, slot] = recent["article_id"].to_numpy()
        block_days[c, slot] = recent["days"].to_numpy()
        rows = (keys.with_row_index("i").join(customers, on="customer_id", how="inner")
                .join(row_of, on="article_id", how="inner"))
        out = np.full(keys.height, np.nan, dtype=np.float32)
        source = np.full(keys.height, -1, dtype=np.int64)
        days = np.full(keys.height, np.nan, dtype=np.float32)
        padded = self.padded_vectors(kind)  # row -1: no purchase
        i, cc, a = rows["i"].to_numpy(), rows["c"].to_numpy(), rows["row"].to_numpy()
        article_ids = rows["article_id"].to_numpy()
        step = SIMILARITY_ROWS
        for start in range(0, len(i), step):
            part = slice(start, start + step)
            bought = block_rows[cc[part]]                                   # (rows, RECENT_ITEMS)
            sims = np.einsum("rd,rkd->rk", padded[a[part]], padded[bought])
            # no purchase in a slot, or the article itself: never the most similar
            sims[(bought < 0) | (block_ids[cc[part]] == article_ids[part][:, None])] = -np.inf
            best = sims.argmax(axis=1)
            value = sims[np.arange(len(best)), best]
            found = np.isfinite(value)
            out[i[part][found]] = value[found]
            source[i[part][found]] = block_ids[cc[part]][np.arange(len(best)), best][found]
            days[i[part][found]] = block_days[cc[part]][np.arange(len(best)), best][found]
        return keys.with_columns(**{
            name: pl.Series(out).fill_nan(None),
            f"{name}_source": pl.Series(source).cast(ARTICLE).replace(-1, None),
            f"{name}_days": pl.Series(days).fill_nan(None)})

    def features(self, pool: pl.DataFrame) -> pl.DataFrame:
        """The pool with every feature column added (rows and their order unchanged)."""
        own = self.customer_tables(pool["customer_id"])
        out = (pool.join(own.customers, on="customer_id", how="left", maintain_order="left")
               .join(self.article_table, on="article_id", how="left", maintain_order="left")
               .join(own.pairs, on=KEYS, how="left", maintain_order="left"))
        for feature, values in self.affinity_values.items():
            out = (out.join(values, on="article_id", how="left", maintain_order="left")
                   .join(own.shares[feature], on=["customer_id", "value"], how="left", maintain_order="left")
                   .drop("value"))
        for kind in self.vectors:
            # the pool's rows in its order (the joins above keep them): side by side, no join on KEYS
            out = out.hstack(self.similarity(pool, kind, own.recent).drop(KEYS))
        fills = [c for c in out.columns if c.startswith("sales_") or c in ("times_bought", *AFFINITIES.values())
                 or c.startswith("bought_decayed_")]
        return self._with_history_features(out.with_columns(pl.col(c).fill_null(0.0) for c in fills))


def feature_columns(frame: pl.DataFrame) -> list[str]:
    """The model's inputs among a feature frame's columns: scores, ranks and the features, not ids or sources."""
    return [c for c in frame.columns
            if c not in NOT_FEATURES and not c.startswith("source__") and not c.endswith("_source")]


# ---------------------------------------------------------------------------- feature families

# feature -> family; a family's words come from its own columns. Customer-only features (age,
# purchases, ...) shift all of one customer's items alike, so they never explain one item.
FAMILIES = {
    "bought": ("times_bought", "days_since_bought", "bought_decayed_", "score__repurchase", "rank__repurchase",
               "score__purchase_history", "rank__purchase_history"),
    "colourway": ("score__colourways", "rank__colourways"),
    "co_purchase": ("score__co_purchase", "rank__co_purchase"),
    "visual": ("sim_visual", "score__visual", "rank__visual"),
    "content": ("sim_content", "score__content", "rank__content"),
    "new": ("score__new_arrivals", "rank__new_arrivals", "days_since_first_sale"),
    "type": ("affinity_type",),
    "department": ("affinity_department", "score__popular_department", "rank__popular_department"),
    "colour": ("affinity_colour",),
    "age": ("score__popular_age",),
    "local": ("postal_share_", "age_postal_share_", "score__popular_age_postal", "rank__popular_age_postal"),
    "last_year": ("last_year_week_sales", "last_year_week_bought"),
    "taste": ("mf_score",),
    "trend": ("sales_", "trend", "score__popular_decayed", "score__popular_last_week", "score__popular_all_time",
              "repeat_buyer_share", "lifetime_sales", "lifetime_buyers"),
    "price": ("price",),
}
CUSTOMER_ONLY = ("age", "days_since_last_purchase", "purchases", "customer_avg_price", "channel_2_share",
                 "postal_customers")


def family_of(feature: str) -> str | None:
    if feature in CUSTOMER_ONLY:
        return None
    for family, prefixes in FAMILIES.items():
        if any(feature == p or (p.endswith("_") and feature.startswith(p)) for p in prefixes):
            return family
    if feature.startswith("sim_visual"):
        return "visual"
    if feature.startswith("sim_content"):
        return "content"
    return None
