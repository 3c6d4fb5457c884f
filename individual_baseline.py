"""Each customer's own purchase history as a recommender, scored against popularity on the test week.

People buy the same article again (a second pack of socks, the same jeans) and the same product in
another colour. So a customer's candidates are the articles they bought, scored by recency and
frequency (each purchase adds a weight that halves every `half_life_days`), plus the other
colourways of those products (same product_code) at a fraction of that weight.

    python individual_baseline.py --data-dir data
"""
from __future__ import annotations

import argparse
from datetime import timedelta

import polars as pl

import artifacts as art
import metrics
from common import Stopwatch, article_id_text, run_main, summary
from recommenders import ARTICLE, K, Popularity, Recommender, cutoff_of, decay, empty_candidates, saturate, top_k

# Defaults chosen on the validation week (final.py tunes them again; they are knobs, not facts).
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

    def fit(self, transactions, articles):
        """Sum the decayed purchases of each (customer, article) in the window before the cut-off."""
        self.cutoff = cutoff_of(transactions)
        tx = transactions
        if self.window_days:
            tx = tx.filter(pl.col("t_dat") >= self.cutoff - timedelta(days=self.window_days))
        self.history = (
            tx.lazy().group_by("customer_id", "article_id")
            .agg(evidence=decay(self.cutoff, self.half_life_days).sum())
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
        own = self.history.join(customers, on="customer_id", how="semi")
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
                 .group_by(keys).agg(score=saturate(pl.col("evidence").sum())))
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


def compare(train: pl.DataFrame, truth: pl.DataFrame, articles: pl.DataFrame, k: int = K) -> pl.DataFrame:
    """MAP@k of purchase history (alone and filled with last-week popularity) against popularity."""
    customers = truth.select("customer_id")
    popular = Popularity("popular_last_week", window_days=7).fit(train)
    history = PurchaseHistory().fit(train, articles)
    pop_recs = popular.recommend(customers["customer_id"], k)
    hist_recs = history.recommend(customers["customer_id"], k)
    filled = fill_with(hist_recs, popular.top_articles(k), customers, k)
    rows = []
    for name, recs in [("popular_last_week", pop_recs), ("purchase_history", hist_recs),
                       ("purchase_history + popular fill", filled)]:
        scores = metrics.evaluate(recs, truth, articles.height, k)
        rows.append({"strategy": name, **scores})
    table = pl.DataFrame(rows)
    base = table["map12"][0]
    return table.with_columns(lift=pl.col("map12") / base if base > 0 else pl.lit(None))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    args = parser.parse_args()
    artifacts = art.from_args(args)
    art.require_fresh(artifacts, "data_optim.py", "split_data.py")  # no score on a split older than the data
    clock = Stopwatch()
    articles = art.read_parquet(artifacts.articles, artifacts.command("data_optim.py"))
    train = pl.concat([art.read_parquet(artifacts.split(p), artifacts.command("split_data.py")) for p in ("train", "validation")])
    truth = art.read_parquet(artifacts.truth("test"), artifacts.command("split_data.py"))
    table = compare(train, truth, articles)
    print(f"test week, {truth.height:,} customers who bought something; trained on train + validation; "
          "MAP@12 over unique articles bought")
    with pl.Config(tbl_hide_dataframe_shape=True, float_precision=4, tbl_hide_column_data_types=True,
                   fmt_str_lengths=40, tbl_width_chars=120):
        print(table)
    summary("individual_baseline", customers=truth.height, seconds=clock.seconds,
            map12=f"{table['map12'][2]:.4f}")


if __name__ == "__main__":
    run_main(main)
