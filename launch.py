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
over the window's purchases (no loop over customers): one article takes ~0.1 s on the demo data.

Where final.py has scored the launches with the learned ranker (results/launch_audience.parquet),
`LaunchAudience.audience` answers from that table, and from the similarity score otherwise.
`VisualIndex` looks up one article's image neighbours from a memory-mapped feature matrix and the
precomputed visual_twins.parquet, so that the first lookup reads no more than it needs; a query the
table cannot answer scans the matrix once and keeps its unit rows for the next ones.

    python launch.py --data-dir data [--article 0XXXXXXXXX] [--top 20]
"""
from __future__ import annotations

import argparse
import threading
from datetime import date, timedelta

import numpy as np
import polars as pl

import artifacts as art
from common import Stopwatch, UserError, format_article_id, no_image_feature, parse_article_id, run_main, summary

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
TWIN_SCHEMA = {"twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32}
SCAN_BLOCK = 8192      # feature rows read and converted to float32 at a time in the one full scan
AGE_BANDS = (16, 25, 35, 45, 55, 65)  # band edges: 16-24, 25-34, ..., 65+


# ---------------------------------------------------------------- the visual side

class VisualIndex:
    """Image neighbours of one article at a time, reading only what that article needs.

    The feature matrix is memory-mapped (nothing is read until a full scan is needed) and the
    twins precomputed by visual_reccs.py are read for one article with a predicate scan.
    """

    def __init__(self, article_ids: np.ndarray, features: np.ndarray, twins_path=None, no_image: dict | None = None):
        self.article_ids = np.asarray(article_ids, dtype=np.int32)
        self.features = features
        self.order = np.argsort(self.article_ids, kind="stable")
        self.sorted_ids = self.article_ids[self.order]
        self.codes = self.article_ids.astype(np.int64) // 1000  # Kaggle: product_code * 1000 + colourway
        self.twins_path = twins_path
        self.no_image = no_image or {}
        self._unit = None
        self._lock = threading.Lock()  # the app shares one index between sessions (threads)

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> "VisualIndex":
        """The features of visual_features.py, memory-mapped; UserError naming the command when absent."""
        command = artifacts.command("visual_features.py", images=True)
        art.require(artifacts.visual_features, command)
        art.require(artifacts.visual_article_ids, command)
        ids = np.load(artifacts.visual_article_ids)
        features = np.load(artifacts.visual_features, mmap_mode="r")
        if features.ndim != 2 or features.shape[0] != ids.shape[0]:
            raise UserError(f"{artifacts.visual_features} ({features.shape}) and {artifacts.visual_article_ids} "
                            f"({ids.shape}) do not match: rerun `{command}`")
        no_image = art.images_without_features(artifacts)
        twins = artifacts.visual_twins if artifacts.visual_twins.exists() else None
        return cls(ids, features, twins, no_image)

    def __len__(self) -> int:
        return int(self.article_ids.shape[0])

    def row(self, article_id) -> int | None:
        """Row of an article in the feature matrix, None when it has no image feature."""
        key = parse_article_id(article_id)
        at = int(np.searchsorted(self.sorted_ids, key))
        return int(self.order[at]) if at < len(self) and self.sorted_ids[at] == key else None

    def has(self, article_id) -> bool:
        try:
            return self.row(article_id) is not None
        except UserError:
            return False

    def _require_row(self, article_id) -> int:
        row = self.row(article_id)
        if row is None:
            raise no_image_feature(parse_article_id(article_id), self.no_image, len(self))
        return row

    def unit_vectors(self) -> np.ndarray:
        """The features as unit float32 rows, made by the first query that needs a full scan and then kept.

        One pass over the mapped file in float32 blocks (it may be float16); an all-zero row stays zero.
        """
        with self._lock:
            if self._unit is None:
                unit = np.empty(self.features.shape, dtype=np.float32)
                for start in range(0, len(self), SCAN_BLOCK):
                    block = np.asarray(self.features[start:start + SCAN_BLOCK], dtype=np.float32)
                    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
                    unit[start:start + block.shape[0]] = block / np.maximum(norms, 1e-12)[:, None]
                self._unit = unit
        return self._unit

    def similarities(self, article_id) -> np.ndarray:
        """Cosine similarity of every article (in self.article_ids order) to this one; itself -inf."""
        row = self._require_row(article_id)
        unit = self.unit_vectors()
        scores = unit @ unit[row]
        scores[row] = -np.inf
        return scores

    def _from_table(self, key: int, k: int, exclude_same_product: bool) -> pl.DataFrame | None:
        """The precomputed twins, when they answer this query exactly; None when they cannot."""
        if self.twins_path is None:
            return None
        stored = (pl.scan_parquet(self.twins_path).filter(pl.col("article_id") == pl.lit(key, dtype=pl.Int32))
                  .select("twin_id", "score").collect())
        complete = stored.height >= len(self) - 1  # every other article is in the table
        if exclude_same_product:
            stored = stored.filter(pl.col("twin_id") // 1000 != key // 1000)
        if stored.height < k and not complete:
            return None  # the table keeps fewer twins than asked for: scan the features instead
        top = stored.sort(["score", "twin_id"], descending=[True, False]).head(k)
        return top.with_columns(rank=pl.int_range(1, top.height + 1)).select(
            pl.col("twin_id").cast(pl.Int32), pl.col("rank").cast(pl.UInt8), pl.col("score").cast(pl.Float32))

    def twins(self, article_id, k: int = 12, exclude_same_product: bool = False) -> pl.DataFrame:
        """The k most alike articles: twin_id Int32, rank UInt8 (1-based), score Float32 (cosine)."""
        if not 1 <= k <= 255:
            raise UserError(f"k={k}: give a number of twins between 1 and 255")
        key = parse_article_id(article_id)
        self._require_row(key)
        found = self._from_table(key, k, exclude_same_product)
        if found is not None:
            return found
        scores = self.similarities(key)
        if exclude_same_product:
            scores[self.codes == key // 1000] = -np.inf
        candidates = np.flatnonzero(np.isfinite(scores))
        k = min(k, candidates.shape[0])
        if k == 0:
            return pl.DataFrame(schema=TWIN_SCHEMA)
        top = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        top = top[np.lexsort((self.article_ids[top], -scores[top]))]  # best first, ties by id
        return pl.DataFrame({"twin_id": self.article_ids[top], "rank": np.arange(1, k + 1),
                             "score": scores[top]}, schema=TWIN_SCHEMA)


# ---------------------------------------------------------------- pure pieces

def default_cutoff(transactions: pl.LazyFrame | pl.DataFrame) -> date:
    """The day after the last purchase: every recorded sale is before it."""
    last = transactions.lazy().select(pl.col("t_dat").max()).collect().item()
    if last is None:
        raise UserError("the transactions are empty: there is no purchase history to score an audience from")
    return last + timedelta(days=1)


def launches(articles: pl.DataFrame, transactions: pl.LazyFrame | pl.DataFrame, cutoff: date | None = None) -> pl.Series:
    """Article ids of the catalogue with no sale before `cutoff` (default: with no sale at all), newest id first."""
    sold = transactions.lazy()
    if cutoff is not None:
        sold = sold.filter(pl.col("t_dat") < pl.lit(cutoff))
    sold = sold.select(pl.col("article_id").unique()).collect()["article_id"]
    return (articles.select("article_id").filter(~pl.col("article_id").is_in(sold.implode()))
            .sort("article_id", descending=True)["article_id"])


def recent_purchases(transactions: pl.LazyFrame | pl.DataFrame, cutoff: date, days: int = WINDOW_DAYS) -> pl.DataFrame:
    """customer_id, article_id, days_ago (0 = the day before the cut-off) of the window's purchases.

    Several units of one article on one day count once.
    """
    return (transactions.lazy()
            .filter((pl.col("t_dat") < pl.lit(cutoff)) & (pl.col("t_dat") >= pl.lit(cutoff - timedelta(days=days))))
            .select("customer_id", "article_id",
                    days_ago=((pl.lit(cutoff) - pl.col("t_dat")).dt.total_days() - 1).cast(pl.Int16))
            .unique(maintain_order=False)
            .collect())


def when_text(days_ago: pl.Expr) -> pl.Expr:
    """0-6 days before the cut-off -> 'last week', 7-13 -> '2 weeks ago', ..."""
    weeks = days_ago // 7 + 1
    return pl.when(weeks == 1).then(pl.lit("last week")).otherwise(
        pl.format("{} weeks ago", weeks.cast(pl.String)))


def content_similarity(articles: pl.DataFrame, launch: dict) -> pl.Expr:
    """Share of CONTENT_COLUMNS on which an article equals the launch (columns missing from either are left out)."""
    columns = [c for c in CONTENT_COLUMNS if c in articles.columns and launch.get(c) is not None]
    if not columns:
        return pl.lit(0.0)
    same = [(pl.col(c).cast(pl.String) == str(launch[c])).fill_null(False).cast(pl.Float64) for c in columns]
    return pl.sum_horizontal(same) / len(columns)


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


def age_band(age: pl.Expr) -> pl.Expr:
    """'16-24', '25-34', ..., '65+', 'unknown' of an age column."""
    edges = AGE_BANDS
    expr = pl.when(age.is_null()).then(pl.lit("unknown"))
    for low, high in zip(edges, edges[1:]):
        expr = expr.when(age < high).then(pl.lit(f"{low}-{high - 1}" if low > edges[0] else f"under {high}"))
    return expr.otherwise(pl.lit(f"{edges[-1]}+"))


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

    @classmethod
    def from_artifacts(cls, artifacts: art.Artifacts, cutoff: date | None = None) -> "LaunchAudience":
        """From processed/ (and visual/, results/launch_audience.parquet when they exist)."""
        command = artifacts.command("data_optim.py")
        articles = art.read_parquet(artifacts.articles, command)
        transactions = pl.scan_parquet(art.require(artifacts.transactions, command))
        visual = VisualIndex.load(artifacts) if artifacts.visual_features.exists() else None
        ranked = artifacts.launch_audience if artifacts.launch_audience.exists() else None
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
        launch = self.launch(article_id)
        key = launch["article_id"]
        catalogue = self.articles
        near = catalogue.filter(pl.col("article_id") != key).select(
            "article_id", content=content_similarity(catalogue, launch), likeness=_likeness(catalogue, launch))
        if self.visual is not None and self.visual.has(key):
            scores = self.visual.similarities(key)
            finite = np.isfinite(scores)
            looks = pl.DataFrame({"article_id": self.visual.article_ids[finite], "look": scores[finite]},
                                 schema={"article_id": pl.Int32, "look": pl.Float64})
            near = (near.join(looks, on="article_id", how="left")
                    # an unlike photo (cosine <= 0) is no evidence either way; no photo counts as unlike
                    .with_columns(pl.col("look").clip(lower_bound=0.0).fill_null(0.0))
                    .with_columns(similarity=(pl.col("content") + pl.col("look")) / 2,
                                  likeness=pl.when(pl.col("look") >= pl.col("content"))
                                  .then(pl.lit("which looks like it")).otherwise("likeness")))
        else:
            near = near.with_columns(similarity=pl.col("content"))
        near = (near.filter(pl.col("similarity") >= MIN_SIMILARITY)
                .sort(["similarity", "article_id"], descending=[True, False]).head(NEIGHBOURS)
                .select("article_id", "similarity", "likeness"))
        type_, colour = launch.get("product_type_name"), launch.get("colour_group_name")
        if type_ is not None and colour is not None:
            matching = catalogue.filter((pl.col("product_type_name").cast(pl.String) == type_)
                                        & (pl.col("colour_group_name").cast(pl.String) == colour)
                                        & (pl.col("article_id") != key))["article_id"]
        else:
            matching = pl.Series("article_id", [], dtype=pl.Int32)
        affinity = pl.DataFrame({"article_id": matching.cast(pl.Int32)}).with_columns(same_type_colour=pl.lit(True))
        return (near.join(affinity, on="article_id", how="full", coalesce=True)
                .with_columns(pl.col("similarity").fill_null(0.0), pl.col("same_type_colour").fill_null(False),
                              pl.col("likeness").fill_null(pl.lit("which is much like it")))
                .sort("article_id"))

    def score(self, article_id, top: int | None = None) -> pl.DataFrame:
        """Every customer with evidence for this article, best first (AUDIENCE_SCHEMA plus the two parts).

        Extra columns: similarity, affinity (the two parts of score), affinity_purchases.
        """
        launch = self.launch(article_id)
        key = launch["article_id"]
        near = self.neighbours(key)
        weight = pl.lit(0.5) ** (pl.col("days_ago").cast(pl.Float64) / HALF_LIFE_DAYS)
        evidence = (self.purchases.join(near, on="article_id")
                    .with_columns(similar=pl.col("similarity") * weight,
                                  affine=pl.col("same_type_colour").cast(pl.Float64) * weight))
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
            latest_affine=pl.col("article_id").filter(pl.col("same_type_colour"))
            .sort_by(pl.col("days_ago").filter(pl.col("same_type_colour"))).first(),
        )
        often = (pl.col("affinity_purchases") >= OFTEN) & (pl.col("affinity") >= pl.col("similarity"))
        bought = pl.format("bought {} {}, {}", pl.col("best_article").cast(pl.String).str.zfill(10),
                           when_text(pl.col("best_days")), pl.col("best_likeness"))
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
        """The `limit` best customers for an article by similarity: the candidates a ranker then rescores."""
        return self.score(article_id, top=limit)

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
                .group_by(band=age_band(pl.col("age"))).agg(customers=pl.len()).sort("band"))
    else:
        ages = pl.DataFrame({"band": ["unknown"], "customers": [who.height]},
                            schema={"band": pl.String, "customers": pl.UInt32})
    fields = articles.select("article_id", pl.col(by).cast(pl.String).alias("group"))
    groups = (purchases.join(who, on="customer_id").join(fields, on="article_id", how="left")
              .group_by(pl.col("group").fill_null("unknown")).agg(purchases=pl.len())
              .sort(["purchases", "group"], descending=[True, False]))
    return ages, groups


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--article", help="the article (default: the newest launch)")
    parser.add_argument("--top", type=int, default=20, help="customers to print (default: %(default)s)")
    args = parser.parse_args()
    artifacts = art.from_args(args)
    clock = Stopwatch()
    scorer = LaunchAudience.from_artifacts(artifacts)
    new = launches(scorer.articles, pl.scan_parquet(artifacts.transactions))
    if args.article is None and not new.len():
        raise UserError("every article has sales: give one with --article")
    article = args.article or new[0]
    found, source = scorer.audience(article, top=args.top)
    with pl.Config(tbl_rows=args.top, fmt_str_lengths=80):
        print(found.select("rank", "customer_id", "score", "reason"))
    summary("launch", article=format_article_id(parse_article_id(article)), launches=new.len(),
            customers=found.height, source=source, cutoff=str(scorer.cutoff), seconds=clock.seconds)


if __name__ == "__main__":
    run_main(main)
