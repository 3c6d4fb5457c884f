"""Each customer's own purchase history as a recommender, scored against popularity on the test week.

People buy the same article again (a second pack of socks, the same jeans) and the same product in
another colour. The strategy (`fde.strategies.PurchaseHistory`) scores the articles a customer bought
by recency and frequency, plus the other colourways of those products; the long-horizon baseline
(`fde.strategies.Repurchase`) counts the whole history with a kernel chosen on the validation week.

    python individual_baseline.py --data-dir data
"""
from __future__ import annotations

import argparse

import polars as pl

from fde import artifacts as art
from fde import metrics
from fde.cli import Stopwatch, run_main, summary
from fde.evaluation import fill_with
from fde.strategies import K, Popularity, PurchaseHistory


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
    command = artifacts.command("split_data.py")
    train = pl.concat([art.read_parquet(artifacts.split(p), command) for p in ("train", "validation")])
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
