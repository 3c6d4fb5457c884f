"""Simple repurchase and popularity baselines on the test week, to see how a sample behaves.

The table the lead measured on a real retailer's data (no images, no colours), here on any data
dir that has been through data_optim.py and split_data.py. Each baseline is trained on train +
validation, scores the test week with metrics.map_at_k, and (except popularity) fills each list up
to 12 with last week's top sellers.

    python sample_data.py --scale demo --regime habitual --data-dir /tmp/hab/data --images-dir /tmp/hab/images
    python data_optim.py --data-dir /tmp/hab/data && python split_data.py --data-dir /tmp/hab/data
    python bench/regime_baselines.py --data-dir /tmp/hab/data
"""
from __future__ import annotations

import argparse
import math
import time
from datetime import timedelta

import polars as pl

from fde import artifacts as art
from fde import metrics
from fde.cli import run_main

K = metrics.K


def days_ago(cutoff) -> pl.Expr:
    """Days between a purchase and the cut-off (1 for the day before it)."""
    return (pl.lit(cutoff) - pl.col("t_dat")).dt.total_days().cast(pl.Float64)


# name -> (weight of one purchase, window in days or None for the whole history)
BASELINES = {
    "purchase history (exp. half-life 7 d, 180-day window)": (lambda c: (-math.log(2) / 7 * days_ago(c)).exp(), 180),
    "whole history, 1/(1 + days_ago/7)": (lambda c: 1 / (1 + days_ago(c) / 7), None),
    "whole history, exp. half-life 7 d": (lambda c: (-math.log(2) / 7 * days_ago(c)).exp(), None),
    "whole history, exp. half-life 90 d": (lambda c: (-math.log(2) / 90 * days_ago(c)).exp(), None),
}


def popular_last_week(history: pl.LazyFrame, cutoff, k: int = K) -> pl.DataFrame:
    """The k articles sold most in the 7 days before the cut-off (ties: lower article_id first)."""
    return (history.filter(pl.col("t_dat") >= cutoff - timedelta(days=7))
            .group_by("article_id").agg(n=pl.len())
            .sort(["n", "article_id"], descending=[True, False]).head(k)
            .select("article_id", order=pl.int_range(pl.len())).collect())


def filled(own: pl.DataFrame, popular: pl.DataFrame, customers: pl.DataFrame, k: int = K) -> pl.DataFrame:
    """Each customer's own top k, then the popular articles they do not have yet, as ranks 1..k."""
    fill = customers.join(popular, how="cross").with_columns(order=pl.col("order") + 1_000_000)
    return (pl.concat([own.select("customer_id", "article_id", order=pl.col("rank").cast(pl.Int64)),
                       fill.select("customer_id", "article_id", pl.col("order").cast(pl.Int64))])
            .sort("customer_id", "order")
            .unique(["customer_id", "article_id"], keep="first", maintain_order=True)
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("customer_id"))
            .filter(pl.col("rank") <= k))


def repurchase(history: pl.LazyFrame, customers: pl.DataFrame, cutoff, weight, window_days, k: int = K):
    """Each customer's k articles with the largest sum of weight(purchase) over the window."""
    if window_days:
        history = history.filter(pl.col("t_dat") >= cutoff - timedelta(days=window_days))
    return (history.join(customers.lazy(), on="customer_id", how="semi")
            .group_by("customer_id", "article_id").agg(score=weight(cutoff).sum())
            .sort(["customer_id", "score", "article_id"], descending=[False, True, False])
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("customer_id"))
            .filter(pl.col("rank") <= k).collect())


def baselines(artifacts: art.Artifacts) -> pl.DataFrame:
    """MAP@12 on the test week of popularity and of each repurchase baseline filled with it."""
    command = artifacts.command("split_data.py")
    history = pl.concat([pl.scan_parquet(art.require(artifacts.split(p), command))
                         for p in ("train", "validation")]).select("t_dat", "customer_id", "article_id")
    truth = art.read_parquet(artifacts.truth("test"), command)
    cutoff = history.select(pl.col("t_dat").max()).collect().item() + timedelta(days=1)
    customers = truth.select("customer_id")
    popular = popular_last_week(history, cutoff)
    everyone = customers.join(popular, how="cross").with_columns(rank=pl.col("order") + 1)
    rows = [("popular_last_week", metrics.map_at_k(everyone, truth))]
    for name, (weight, window) in BASELINES.items():
        recs = filled(repurchase(history, customers, cutoff, weight, window), popular, customers)
        rows.append((name + ", filled", metrics.map_at_k(recs, truth)))
    table = pl.DataFrame(rows, schema=["baseline", "map12"], orient="row")
    return table.with_columns(x_popular=pl.col("map12") / table["map12"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    artifacts = art.from_args(parser.parse_args())
    clock = time.perf_counter()
    table = baselines(artifacts)
    truth = pl.read_parquet(artifacts.truth("test"))
    print(f"{artifacts.data_dir}: test week, {truth.height:,} customers who bought something, MAP@{K}")
    with pl.Config(tbl_hide_dataframe_shape=True, float_precision=4, tbl_hide_column_data_types=True,
                   fmt_str_lengths=70, tbl_width_chars=120, tbl_formatting="MARKDOWN"):
        print(table)
    print(f"[regime_baselines] seconds={time.perf_counter() - clock:.1f}")


if __name__ == "__main__":
    run_main(main)
