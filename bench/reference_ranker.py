"""The plain reference ranker of issue 15, to measure the project's ranker against on any data dir.

What a careful newcomer writes in about 80 lines (the issue's description): candidates = every
article the customer ever bought + last week's 60 best sellers + 20 co-purchase candidates; 19 plain
features; LambdaRank, 300 rounds, trained on the 4 weeks before the test week. It scores the test
week of split_data.py with the project's metric, so its figure sits beside final.py's table.

    python bench/reference_ranker.py --data-dir hab/data
"""
from __future__ import annotations

import argparse
import math
from datetime import timedelta

import numpy as np
import polars as pl

from fde import artifacts as art
from fde import metrics
from fde.cli import Stopwatch, run_main, summary

N_POPULAR, N_CO, WEEKS, ROUNDS = 60, 20, 4, 300
KEYS = ["customer_id", "article_id"]


def pool(history: pl.DataFrame, customers: pl.DataFrame, cutoff) -> pl.DataFrame:
    """Candidates of these customers at the cut-off: bought before, last week's top sellers, co-purchases."""
    mine = history.join(customers, on="customer_id", how="semi")
    bought = mine.select(KEYS).unique()
    popular = (history.filter(pl.col("t_dat") >= cutoff - timedelta(days=7)).group_by("article_id").len()
               .sort(["len", "article_id"], descending=[True, False]).head(N_POPULAR).select("article_id"))
    baskets = history.filter(pl.col("t_dat") >= cutoff - timedelta(days=90)).select("customer_id", "t_dat",
                                                                                     "article_id").unique()
    pairs = (baskets.join(baskets, on=["customer_id", "t_dat"], suffix="_b")
             .filter(pl.col("article_id") != pl.col("article_id_b"))
             .group_by("article_id", "article_id_b").agg(n=pl.len()))
    recent = mine.filter(pl.col("t_dat") >= cutoff - timedelta(days=30)).select(KEYS).unique()
    co = (recent.join(pairs, on="article_id").group_by("customer_id", "article_id_b").agg(co=pl.col("n").sum())
          .rename({"article_id_b": "article_id"}).join(bought, on=KEYS, how="anti")
          .sort(["customer_id", "co", "article_id"], descending=[False, True, False])
          .group_by("customer_id", maintain_order=True).head(N_CO))
    out = pl.concat([bought, customers.join(popular, how="cross"), co.select(KEYS)]).unique().sort(KEYS)
    return out.join(co, on=KEYS, how="left").with_columns(pl.col("co").fill_null(0))


def features(frame: pl.DataFrame, history: pl.DataFrame, cutoff) -> pl.DataFrame:
    days = (pl.lit(cutoff) - pl.col("t_dat")).dt.total_days().cast(pl.Float64)
    pair = history.group_by(KEYS).agg(
        count=pl.len(), since_last=days.min(), since_first=days.max(),
        **{f"decay_{h}": (-math.log(2) / h * days).exp().sum() for h in (7, 30, 90, 365)})
    article = history.group_by("article_id").agg(
        **{f"sales_{w}w": (pl.col("t_dat") >= cutoff - timedelta(weeks=w)).sum() for w in (1, 4, 12)},
        sales_all=pl.len(), buyers=pl.col("customer_id").n_unique(), price=pl.col("price").mean())
    customer = history.group_by("customer_id").agg(
        c_rows=pl.len(), c_articles=pl.col("article_id").n_unique(), c_since_last=days.min(),
        c_price=pl.col("price").mean())
    return (frame.join(pair, on=KEYS, how="left").join(article, on="article_id", how="left")
            .join(customer, on="customer_id", how="left"))


def week(transactions: pl.DataFrame, cutoff) -> pl.DataFrame:
    """Features and labels of the buyers of the week that starts at the cut-off."""
    history = transactions.filter(pl.col("t_dat") < cutoff)
    bought = (transactions.filter((pl.col("t_dat") >= cutoff) & (pl.col("t_dat") < cutoff + timedelta(days=7)))
              .select(KEYS).unique().with_columns(label=pl.lit(1)))
    frame = features(pool(history, bought.select("customer_id").unique(), cutoff), history, cutoff)
    return frame.join(bought, on=KEYS, how="left").with_columns(pl.col("label").fill_null(0)).sort(KEYS)


def main(argv=None):
    import lightgbm as lgb

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    artifacts = art.from_args(parser.parse_args(argv))
    clock = Stopwatch()
    parts = {p: pl.read_parquet(artifacts.split(p)) for p in ("train", "validation", "test")}
    transactions = pl.concat(parts.values()).with_columns(pl.col("article_id").cast(pl.Int32))
    test_start = parts["test"]["t_dat"].min()
    train = pl.concat([week(transactions, test_start - timedelta(weeks=w)).with_columns(week=pl.lit(w))
                       for w in range(WEEKS, 0, -1)])
    train = train.filter(pl.col("label").max().over("week", "customer_id") > 0)  # groups with a positive
    columns = [c for c in train.columns if c not in (*KEYS, "label", "week")]
    sizes = train.group_by("week", "customer_id", maintain_order=True).len()["len"].to_numpy()
    data = lgb.Dataset(train.select(columns).to_numpy().astype(np.float32), label=train["label"].to_numpy(),
                       group=sizes)
    booster = lgb.train({"objective": "lambdarank", "metric": "None", "verbose": -1, "seed": 0,
                         "deterministic": True, "force_row_wise": True}, data, ROUNDS)
    test = week(transactions, test_start)
    truth = pl.read_parquet(artifacts.truth("test"))
    recall = test["label"].sum() / metrics.truth_pairs(truth).height
    scored = test.with_columns(score=pl.Series(booster.predict(test.select(columns).to_numpy().astype(np.float32))))
    recs = (scored.sort(["customer_id", "score", "article_id"], descending=[False, True, False])
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("customer_id")).filter(pl.col("rank") <= 12))
    value = metrics.map_at_k(recs, truth, 12)
    summary("reference_ranker", map12=f"{value:.4f}", pool_recall=f"{recall:.3f}", features=len(columns),
            customers=truth.height, seconds=clock.seconds)


if __name__ == "__main__":
    run_main(main)
