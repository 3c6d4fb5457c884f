"""Launch audience: who to show an article nobody has bought yet, and why.

A launch is a catalogue article with no sales before a cut-off. Without sales, only what the
article looks like can say who will buy it, so its audience is scored from each customer's
recent purchases (the WINDOW_DAYS before the cut-off), each weighted by recency (halving every
HALF_LIFE_DAYS):

- similarity: purchases of the NEIGHBOURS articles most like the launch count by how alike they
  are: the share of metadata fields (product type, colour, department, ...) they share with it,
  averaged with the cosine of their image features when the launch has one (visual_features.py);
- affinity: purchases of the launch's product type in its colour count fully.

score = similarity + affinity; the reason names the larger part: "bought 0568601006 last week,
which looks like it" or "often buys Trousers in Dark Blue". Everything is a join and a group-by
over the window's purchases (no loop over customers), from tables made once per scorer (each article's
content values as integers, the window's purchases by article): one article takes ~6 ms on the demo
data, ~13 ms at full scale (31.8M transactions).

Where final.py has scored the launches with the learned ranker (results/launch_audience.parquet),
`LaunchAudience.audience` answers from that table, and from the similarity score otherwise.
Image neighbours come from the one visual index (visual_index.VisualIndex), which reads no more
than one article needs. `python launch.py --article 0XXXXXXXXX` prints an audience.
"""
from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from fde import artifacts as art
from fde.errors import UserError
from fde.ids import article_id_text, format_article_id, parse_article_id
from fde.reasons import when_text
from fde.strategies import age_band_label
from fde.visual_index import VisualIndex

WINDOW_DAYS = 91        # purchases of the last 13 weeks before the cut-off are evidence
HALF_LIFE_DAYS = 28     # a purchase four weeks old counts half as much as one from last week
NEIGHBOURS = 50         # articles most like the launch whose buyers are candidates
MIN_SIMILARITY = 0.5    # a neighbour is at least half alike (e.g. shares half the metadata fields)
OFTEN = 2               # "often buys" from this many recent purchases of the type in the colour
DEFAULT_TOP = 100
CONTENT_COLUMNS = ("product_type_name", "colour_group_name", "graphical_appearance_name", "department_name",
                   "index_group_name", "section_name", "garment_group_name", "perceived_colour_master_name")
AUDIENCE_SCHEMA = {"article_id": pl.Int32, "customer_id": pl.UInt64, "rank": pl.UInt16, "score": pl.Float32,
                   "reason": pl.String, "source_article_id": pl.Int32}


# ---------------------------------------------------------------- pure pieces

def default_cutoff(transactions: pl.LazyFrame | pl.DataFrame) -> date:
    """The day after the last purchase: every recorded sale is before it."""
    last = transactions.lazy().select(pl.col("t_dat").max()).collect().item()
    if last is None:
        raise UserError("the transactions are empty: there is no purchase history to score an audience from")
    return last + timedelta(days=1)


def launches(articles: pl.DataFrame, transactions: pl.LazyFrame | pl.DataFrame,
             cutoff: date | None = None) -> pl.Series:
    """Article ids of the catalogue with no sale before `cutoff` (default: with no sale at all), newest id first."""
    sold = transactions.lazy()
    if cutoff is not None:
        sold = sold.filter(pl.col("t_dat") < pl.lit(cutoff))
    sold = sold.select(pl.col("article_id").unique()).collect()["article_id"]
    return (articles.select("article_id").filter(~pl.col("article_id").is_in(sold.implode()))
            .sort("article_id", descending=True)["article_id"])


def recent_purchases(transactions: pl.LazyFrame | pl.DataFrame, cutoff: date, days: int = WINDOW_DAYS) -> pl.DataFrame:
    """customer_id, article_id, days_ago (0 = the day before the cut-off) of the window's purchases, in that order
    (an audience's sums and ties follow it, whatever order the transactions come in).

    Several units of one article on one day count once.
    """
    return (transactions.lazy()
            .filter((pl.col("t_dat") < pl.lit(cutoff)) & (pl.col("t_dat") >= pl.lit(cutoff - timedelta(days=days))))
            .select("customer_id", "article_id",
                    days_ago=((pl.lit(cutoff) - pl.col("t_dat")).dt.total_days() - 1).cast(pl.Int16))
            .unique(maintain_order=False)
            .sort("customer_id", "article_id", "days_ago")
            .collect())


def value_codes(articles: pl.DataFrame) -> dict[str, np.ndarray]:
    """Per CONTENT_COLUMNS column the catalogue has, each article's value as an integer (-1: none): two articles
    share a value when their codes are equal and not -1."""
    return {c: articles[c].cast(pl.String).rank("dense").fill_null(0).cast(pl.Int64).to_numpy() - 1
            for c in CONTENT_COLUMNS if c in articles.columns}


def content_similarity(codes: dict[str, np.ndarray], row: int) -> np.ndarray:
    """Share of the content columns on which each article equals the article at `row` (columns where that
    article has no value are left out; none left: 0)."""
    columns = [c for c, values in codes.items() if values[row] >= 0]
    if not columns:
        return np.zeros(len(next(iter(codes.values()), [])), dtype=np.float64)
    same = np.zeros(len(codes[columns[0]]), dtype=np.float64)
    for c in columns:
        same += codes[c] == codes[c][row]
    return same / len(columns)


def _likeness(articles: pl.DataFrame, launch: dict) -> pl.Expr:
    """What a content neighbour shares with the launch, for the reason: 'also Trousers in Dark Blue'."""
    type_, colour = launch.get("product_type_name"), launch.get("colour_group_name")

    def same(column, value):
        if column not in articles.columns or value is None:
            return pl.lit(False)
        return (pl.col(column).cast(pl.String) == str(value)).fill_null(False)

    return (pl.when(same("product_type_name", type_) & same("colour_group_name", colour))
            .then(pl.lit(f"also {type_} in {colour}"))
            .when(same("product_type_name", type_)).then(pl.lit(f"also {type_}"))
            .when(same("colour_group_name", colour)).then(pl.lit(f"also in {colour}"))
            .otherwise(pl.lit("which is much like it")))


# ---------------------------------------------------------------- the audience

class LaunchAudience:
    """Scores the customers for any article at one cut-off; built once, asked per article.

    articles: the catalogue (articles.parquet). transactions: purchases (only those before the
    cut-off are used). visual: a VisualIndex, or None to use the metadata alone. ranked: the path
    of launch_audience.parquet, or None.
    """

    def __init__(self, articles: pl.DataFrame, transactions: pl.LazyFrame | pl.DataFrame,
                 cutoff: date | None = None, visual: VisualIndex | None = None, ranked=None):
        self.articles = articles
        self.cutoff = cutoff or default_cutoff(transactions)
        self.purchases = recent_purchases(transactions, self.cutoff)
        self.visual = visual
        self.ranked = ranked
        # what every launch's scoring reads, made once: each article's content values as integers, the catalogue
        # rows of the visual index's articles, and the window's purchases grouped by article (stable order)
        self.article_ids = articles["article_id"].cast(pl.Int32).to_numpy()
        self.codes = value_codes(articles)
        self.visual_rows = None
        if visual is not None:
            where = {int(a): i for i, a in enumerate(self.article_ids)}
            self.visual_rows = np.array([where.get(int(a), -1) for a in visual.article_ids], dtype=np.int64)
        bought = self.purchases["article_id"].to_numpy()
        self.by_article = np.argsort(bought, kind="stable")
        self.bought_sorted = bought[self.by_article]

    @classmethod
    def from_artifacts(cls, artifacts: art.Artifacts, cutoff: date | None = None) -> LaunchAudience:
        """From processed/ (and visual/, results/launch_audience.parquet when they exist)."""
        command = artifacts.command("data_optim.py")
        articles = art.read_parquet(artifacts.articles, command)
        transactions = pl.scan_parquet(art.require(artifacts.transactions, command))
        visual = VisualIndex.load(artifacts) if artifacts.visual_features.exists() else None
        # the ranker's audiences of older data would be shown as current: final.py must run again first
        ranked = artifacts.launch_audience if art.require_fresh_if_built(artifacts, "final.py",
                                                                        artifacts.launch_audience) else None
        return cls(articles, transactions, cutoff, visual, ranked)

    def launch(self, article_id) -> dict:
        """The catalogue row of an article; UserError when it is not in the catalogue."""
        key = parse_article_id(article_id)
        found = self.articles.filter(pl.col("article_id") == key)
        if not found.height:
            raise UserError(f"article {format_article_id(key)} is not in the catalogue "
                            f"({self.articles.height:,} articles): check the id")
        return found.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String)).row(0, named=True)

    def neighbours(self, article_id) -> pl.DataFrame:
        """article_id, similarity, likeness (reason text), same_type_colour of the articles whose buyers count.

        The NEIGHBOURS most alike (by metadata, and image when the launch has one), plus every
        article of the launch's product type in its colour (the affinity evidence, similarity 0 unless
        it is also a neighbour).
        """
        return self._near(self.launch(article_id))

    def _near(self, launch: dict) -> pl.DataFrame:
        key = launch["article_id"]
        row = int(np.flatnonzero(self.article_ids == key)[0])
        content = content_similarity(self.codes, row) if self.codes else np.zeros(len(self.article_ids))
        similarity, look = content, None
        if self.visual is not None and self.visual.has(key):
            scores = self.visual.similarities(key)
            # an unlike photo (cosine <= 0) is no evidence either way; no photo counts as unlike
            keep = np.isfinite(scores) & (self.visual_rows >= 0)
            look = np.zeros(len(self.article_ids), dtype=np.float64)
            look[self.visual_rows[keep]] = np.maximum(scores[keep].astype(np.float64), 0.0)
            similarity = (content + look) / 2
        others = self.article_ids != key
        alike = np.flatnonzero((similarity >= MIN_SIMILARITY) & others)
        near = alike[np.lexsort((self.article_ids[alike], -similarity[alike]))[:NEIGHBOURS]]
        type_, colour = launch.get("product_type_name"), launch.get("colour_group_name")
        matching = np.array([], dtype=np.int64)
        if type_ is not None and colour is not None:
            types, colours = self.codes["product_type_name"], self.codes["colour_group_name"]
            matching = np.flatnonzero((types == types[row]) & (colours == colours[row]) & others)
        rows = np.union1d(near, matching)
        likeness = self.articles[near].select(likeness=_likeness(self.articles, launch))["likeness"]
        if look is not None:
            likeness = pl.select(pl.when(pl.Series(look[near] >= content[near])).then(pl.lit("which looks like it"))
                                 .otherwise(likeness)).to_series()
        out = pl.DataFrame({"article_id": self.article_ids[rows]}, schema={"article_id": pl.Int32})
        named = pl.DataFrame({"article_id": self.article_ids[near], "similarity": similarity[near],
                              "likeness": likeness},
                             schema={"article_id": pl.Int32, "similarity": pl.Float64, "likeness": pl.String})
        return (out.join(named, on="article_id", how="left", maintain_order="left")
                .with_columns(pl.col("similarity").fill_null(0.0),
                              pl.col("likeness").fill_null(pl.lit("which is much like it")),
                              same_type_colour=pl.Series(np.isin(rows, matching)))
                .sort("article_id"))

    def weighted_evidence(self, launch: dict) -> pl.DataFrame:
        """The window's purchases of the launch's neighbours (in the window's order) with the neighbour's columns,
        and what each adds to the two parts of the score: similar, affine."""
        near = self._near(launch)
        wanted = near["article_id"].to_numpy()
        starts = np.searchsorted(self.bought_sorted, wanted, side="left")
        ends = np.searchsorted(self.bought_sorted, wanted, side="right")
        rows = np.sort(np.concatenate([self.by_article[a:b] for a, b in zip(starts, ends)] or [np.array([], int)]))
        weight = pl.lit(0.5) ** (pl.col("days_ago").cast(pl.Float64) / HALF_LIFE_DAYS)
        return (self.purchases[rows].join(near, on="article_id", how="left", maintain_order="left")
                .with_columns(similar=pl.col("similarity") * weight,
                              affine=pl.col("same_type_colour").cast(pl.Float64) * weight))

    def score(self, article_id, top: int | None = None) -> pl.DataFrame:
        """Every customer with evidence for this article, best first (AUDIENCE_SCHEMA plus the two parts).

        Extra columns: similarity, affinity (the two parts of score), affinity_purchases.
        """
        launch = self.launch(article_id)
        key = launch["article_id"]
        evidence = self.weighted_evidence(launch)
        if evidence.is_empty():
            return pl.DataFrame(schema={**AUDIENCE_SCHEMA, "similarity": pl.Float64, "affinity": pl.Float64,
                                        "affinity_purchases": pl.UInt32})
        by = ["similar", "days_ago", "article_id"]  # the strongest purchase; ties: the most recent, then by id
        per_customer = evidence.group_by("customer_id").agg(
            similarity=pl.col("similar").sum(),
            affinity=pl.col("affine").sum(),
            affinity_purchases=pl.col("same_type_colour").sum().cast(pl.UInt32),
            best_article=pl.col("article_id").sort_by(by, descending=[True, False, False]).first(),
            best_days=pl.col("days_ago").sort_by(by, descending=[True, False, False]).first(),
            best_likeness=pl.col("likeness").sort_by(by, descending=[True, False, False]).first(),
            latest_affine=pl.col("article_id").filter(pl.col("same_type_colour")).sort_by(  # ties: the lowest id
                pl.col("days_ago").filter(pl.col("same_type_colour")), pl.col("article_id").filter(
                    pl.col("same_type_colour"))).first(),
        )
        often = (pl.col("affinity_purchases") >= OFTEN) & (pl.col("affinity") >= pl.col("similarity"))
        bought = pl.format("bought {} {}, {}", article_id_text(pl.col("best_article")),
                           when_text(pl.col("best_days") + 1), pl.col("best_likeness"))  # days_ago 0 = 1 day before
        scored = (per_customer
                  .with_columns(score=pl.col("similarity") + pl.col("affinity"))
                  .filter(pl.col("score") > 0)
                  .with_columns(
                      reason=pl.when(often).then(pl.lit(f"often buys {launch.get('product_type_name')} in "
                                                        f"{launch.get('colour_group_name')}")).otherwise(bought),
                      source_article_id=pl.when(often).then(pl.col("latest_affine")).otherwise(pl.col("best_article")))
                  .sort(["score", "customer_id"], descending=[True, False]))
        if top is not None:
            scored = scored.head(top)
        return scored.select(
            article_id=pl.lit(key, dtype=pl.Int32), customer_id=pl.col("customer_id").cast(pl.UInt64),
            rank=pl.int_range(1, pl.len() + 1).cast(pl.UInt16), score=pl.col("score").cast(pl.Float32),
            reason="reason", source_article_id=pl.col("source_article_id").cast(pl.Int32),
            similarity="similarity", affinity="affinity", affinity_purchases="affinity_purchases")

    def candidates(self, article_id, limit: int = 500) -> pl.DataFrame:
        """customer_id, score of the `limit` best customers for an article, as `score` orders them (without their
        reasons): the candidates a ranker then rescores."""
        sums = (self.weighted_evidence(self.launch(article_id)).group_by("customer_id")
                .agg(score=pl.col("similar").sum() + pl.col("affine").sum()))
        return (sums.filter(pl.col("score") > 0).sort(["score", "customer_id"], descending=[True, False]).head(limit)
                .select(pl.col("customer_id").cast(pl.UInt64), pl.col("score").cast(pl.Float32)))

    def ranked_audience(self, article_id) -> pl.DataFrame | None:
        """The ranker's audience of this article from launch_audience.parquet; None when it has none."""
        if self.ranked is None:
            return None
        key = parse_article_id(article_id)
        found = (pl.scan_parquet(self.ranked).filter(pl.col("article_id") == pl.lit(key, dtype=pl.Int32))
                 .sort("rank").collect())
        return found if found.height else None

    def audience(self, article_id, top: int = DEFAULT_TOP) -> tuple[pl.DataFrame, str]:
        """(the top customers for an article, 'ranker' or 'similarity': where they come from).

        The ranker's table when it covers the article, else the similarity score.
        """
        self.launch(article_id)  # unknown ids fail the same way on both paths
        ranked = self.ranked_audience(article_id)
        if ranked is not None:
            return ranked.head(top), "ranker"
        return self.score(article_id, top=top), "similarity"


def audience_profile(audience: pl.DataFrame, customers: pl.DataFrame | None, purchases: pl.DataFrame,
                     articles: pl.DataFrame, by: str = "index_group_name") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(customers per age band, their window's purchases per `by` field) of an audience, for the charts."""
    who = audience.select("customer_id")
    if customers is not None and "age" in customers.columns:
        ages = (who.join(customers.select("customer_id", "age"), on="customer_id", how="left")
                .group_by(band=age_band_label(pl.col("age"))).agg(customers=pl.len()).sort("band"))
    else:
        ages = pl.DataFrame({"band": ["unknown"], "customers": [who.height]},
                            schema={"band": pl.String, "customers": pl.UInt32})
    fields = articles.select("article_id", pl.col(by).cast(pl.String).alias("group"))
    groups = (purchases.join(who, on="customer_id").join(fields, on="article_id", how="left")
              .group_by(pl.col("group").fill_null("unknown")).agg(purchases=pl.len())
              .sort(["purchases", "group"], descending=[True, False]))
    return ages, groups
