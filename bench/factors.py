"""The customer x article factors (fde/factors.py): ALS against BPR, the fit's time by window, top-n scoring.

On a data dir after split_data.py, fitted on train at the validation week's cut-off:

1. ALS (its sweeps and half as many) and BPR: fit seconds (median of --repeats) and the validation
   MAP@12 of each one's own top 12 (unfilled): which factors carry more of the week. Then ALS as ranker.py
   fits it (factors.Chain): from random factors six weeks before the validation week, then each week's
   factors WARM_ITERATIONS sweeps from the week before's, up to the validation week's (seconds of the
   first fit, median of the warm ones, and the last one's MAP@12).
2. ALS by window (182 days, 365 days, everything): purchases, customers, articles, fit seconds,
   and seconds per million (customer, article) pairs, the figure to extrapolate from.
3. Top-n for every customer with factors (Factors.top: blocks of customers x every article, argpartition):
   seconds per billion customer x article scores.
4. The other tables issue 15 added to features.Context (lifetime, the week last year, postal-code
   shares) beside the tables it had: seconds to build each on the whole history.

    python bench/factors.py --data-dir /tmp/f15/data
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from datetime import timedelta
from pathlib import Path

import polars as pl

from fde import artifacts as art
from fde import factors, metrics
from fde.cli import run_main, summary
from fde.features import Context
from fde.files import write_json
from fde.training import WEEK_CHOICES

warnings.filterwarnings("ignore", category=RuntimeWarning)


def timed(repeats: int, fn, *args, **kwargs):
    """(median seconds of fn(*args, **kwargs), its last result)."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def map_of(fitted: factors.Factors, truth: pl.DataFrame) -> float:
    top = fitted.top(truth["customer_id"], metrics.K)
    return metrics.map_at_k(top.with_columns(rank=pl.int_range(1, pl.len() + 1).over("customer_id")), truth)


def bench(artifacts: art.Artifacts, repeats: int) -> dict:
    command = artifacts.command("split_data.py")
    train = art.read_parquet(artifacts.split("train"), command)
    truth = art.read_parquet(artifacts.truth("validation"), command)
    cutoff = art.read_parquet(artifacts.split("validation"), command)["t_dat"].min()
    out = {"models": {}, "windows": {}}
    setups = (("als", "als", factors.ITERATIONS), ("als_half_sweeps", "als", factors.ITERATIONS // 2),
              ("bpr", "bpr", 100))
    for name, model, iterations in setups:
        seconds, fitted = timed(repeats, factors.fit, train, cutoff, model=model, iterations=iterations)
        out["models"][name] = {"iterations": iterations, "fit_seconds": round(seconds, 2),
                               "validation_map12": round(map_of(fitted, truth), 5)}
        print(name, out["models"][name], flush=True)
    chain, seconds = factors.Chain(), []
    for weeks in range(max(WEEK_CHOICES), -1, -1):
        start = time.perf_counter()
        fitted = chain.fit(train, cutoff - timedelta(weeks=weeks))
        seconds.append(time.perf_counter() - start)
    out["models"]["als_chain"] = {"iterations": factors.WARM_ITERATIONS, "weeks": max(WEEK_CHOICES),
                                  "first_fit_seconds": round(seconds[0], 2),
                                  "fit_seconds": round(statistics.median(seconds[1:]), 2),
                                  "validation_map12": round(map_of(fitted, truth), 5)}
    print("als_chain", out["models"]["als_chain"], flush=True)
    for window in (182, 365, None):
        tx = train.filter(pl.col("t_dat") >= cutoff - timedelta(days=window)) if window else train
        pairs = tx.select("customer_id", "article_id").n_unique()
        seconds, fitted = timed(repeats, factors.fit, train, cutoff, window_days=window)
        out["windows"][str(window or "all")] = {
            "purchases": tx.height, "pairs": pairs, "customers": len(fitted.customer_ids),
            "articles": len(fitted.article_ids), "fit_seconds": round(seconds, 2),
            "seconds_per_million_pairs": round(seconds / pairs * 1e6, 2),
            "validation_map12": round(map_of(fitted, truth), 5)}
        print(window, out["windows"][str(window or "all")], flush=True)
    fitted = factors.fit(train, cutoff)
    everyone = pl.Series(fitted.customer_ids)
    seconds, top = timed(repeats, fitted.top, everyone, 24)
    scores = len(fitted.customer_ids) * len(fitted.article_ids)
    out["top24_every_customer"] = {"customers": len(fitted.customer_ids), "articles": len(fitted.article_ids),
                                   "seconds": round(seconds, 2),
                                   "seconds_per_billion_scores": round(seconds / scores * 1e9, 2)}
    print("top24", out["top24_every_customer"], flush=True)
    customers = art.read_parquet(artifacts.customers, artifacts.command("data_optim.py"))
    context = Context.__new__(Context)  # the tables one by one, timed apart
    context.cutoff = cutoff
    history = train.filter(pl.col("t_dat") < cutoff)
    tables = {"customers (before)": (context._customers, history, customers),
              "articles (before)": (context._articles, history), "pairs (before)": (context._pairs, history),
              "last_year": (context._last_year, history),
              "postal": (context._local, history, customers)}
    out["context_table_seconds"] = {name: round(timed(repeats, *call)[0], 3) for name, call in tables.items()}
    print("context tables", out["context_table_seconds"], flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (the median is reported)")
    args = parser.parse_args(argv)
    artifacts = art.from_args(args)
    result = bench(artifacts, args.repeats)
    out = Path(__file__).parent / "results" / "factors.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json({"data_dir": str(artifacts.data_dir), **result}, out)
    summary("factors", als_map12=result["models"]["als"]["validation_map12"],
            als_chain_map12=result["models"]["als_chain"]["validation_map12"],
            bpr_map12=result["models"]["bpr"]["validation_map12"], output=str(out))


if __name__ == "__main__":
    run_main(main)
