"""Stage 2: a temporal split that simulates predicting the future.

The last `test_days` days (default 7) up to the end date are the test week, the
`validation_days` before it the validation week (used for tuning), and train is everything
before. Reads processed/transactions.parquet, writes split/{train,validation,test}.parquet
(same schema, row order kept), split/{validation,test}_truth.parquet (customer_id UInt64,
article_ids List(Int32): the unique articles each customer bought that week, in order of
first purchase) and split/split.json with the dates and counts. Outputs appear together or not at
all, with split/manifest.json recording the transactions they were cut from, so a later stage can
tell when the split is older than the data. A held-out window far thinner than the weeks before it
(a stray late row makes a "test week" of one purchase) stops the run; --end-date or
--allow-thin-weeks say what is meant.

    python split_data.py --data-dir data [--test-days 7] [--validation-days 7] [--end-date 2020-09-22]
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta

import polars as pl

from fde import dates
from fde.artifacts import Artifacts, add_dir_args, from_args, require, require_fresh
from fde.cli import peak_rss_mb, run_main, summary
from fde.errors import UserError, check_writable
from fde.files import atomic_outputs

TEST_DAYS = 7
VALIDATION_DAYS = 7
PARTS = ("train", "validation", "test")
HELD_OUT = ("validation", "test")
ROW_GROUP_SIZE = 1_000_000
THIN = 0.2  # a held-out window with under this share of the daily rows of the weeks before it is refused
REFERENCE_DAYS = 28  # the weeks before the validation window that a held-out window is compared with


def as_date(value) -> date | None:
    """A date from a date or 'YYYY-MM-DD' text; UserError otherwise."""
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise UserError(f"{value!r} is not a date: give it as YYYY-MM-DD, e.g. 2020-09-22") from None


def windows(first: date, last: date, test_days: int = TEST_DAYS, validation_days: int = VALIDATION_DAYS,
            end_date=None) -> dict[str, tuple[date, date]]:
    """Inclusive (start, end) dates of train, validation and test for data spanning first..last.

    The test week ends on `end_date` (default: the last day of the data); UserError if the
    windows do not fit inside the data with at least one day left for training.
    """
    if test_days < 1 or validation_days < 1:
        raise UserError(f"--test-days and --validation-days must be at least 1 (got {test_days}, {validation_days})")
    end = as_date(end_date) or last
    if not first <= end <= last:
        raise UserError(f"--end-date {end} is outside the data, which spans {first} to {last}")
    test_start = end - timedelta(days=test_days - 1)
    validation_start = test_start - timedelta(days=validation_days)
    if validation_start <= first:
        raise UserError(f"a {validation_days}-day validation and {test_days}-day test window ending {end} start on "
                        f"{validation_start}, but the data starts on {first}: nothing is left to train on; "
                        f"use fewer days or a later --end-date")
    return {
        "train": (first, validation_start - timedelta(days=1)),
        "validation": (validation_start, test_start - timedelta(days=1)),
        "test": (test_start, end),
    }


def part_expr(bounds: dict[str, tuple[date, date]]) -> pl.Expr:
    """'train' | 'validation' | 'test' per row, null for rows after the test week."""
    t = pl.col("t_dat")
    return (pl.when(t < bounds["validation"][0]).then(pl.lit("train"))
            .when(t < bounds["test"][0]).then(pl.lit("validation"))
            .when(t <= bounds["test"][1]).then(pl.lit("test")))


def date_range(transactions: pl.DataFrame | pl.LazyFrame) -> tuple[date, date]:
    """First and last t_dat; UserError if there are no transactions."""
    first, last = transactions.lazy().select(first=pl.col("t_dat").min(), last=pl.col("t_dat").max()).collect().row(0)
    if first is None:
        raise UserError("there are no transactions to split: check processed/transactions.parquet")
    return first, last


def split_transactions(transactions: pl.DataFrame | pl.LazyFrame, test_days: int = TEST_DAYS,
                       validation_days: int = VALIDATION_DAYS, end_date=None) -> dict:
    """{'train', 'validation', 'test'} -> the rows of each window (frames of the input's kind).

    Rows after `end_date` are in none of them. With a DataFrame, an empty week is a UserError
    (split() checks lazy input itself, before writing anything).
    """
    bounds = windows(*date_range(transactions), test_days, validation_days, end_date)
    part = part_expr(bounds)
    parts = {p: transactions.filter(part == p) for p in PARTS}
    if isinstance(transactions, pl.DataFrame):
        check_not_empty({p: parts[p].height for p in PARTS}, bounds)
    return parts


def check_not_empty(rows: dict[str, int], bounds: dict[str, tuple[date, date]], source=None) -> None:
    """UserError naming the first window without a single transaction (and, given the transactions,
    the last day with any before it)."""
    for p in PARTS:
        if not rows.get(p):
            start, end = bounds[p]
            hint = ""
            if source is not None:
                hint = f" (the last transaction before it is on {last_before(source, start)})"
            raise UserError(f"the {p} window {start}..{end} has no transactions{hint}: choose other "
                            f"--end-date/--test-days/--validation-days")


def last_before(source: pl.LazyFrame, day: date) -> date | None:
    """The last t_dat before `day`."""
    return source.filter(pl.col("t_dat") < day).select(pl.col("t_dat").max()).collect().item()


def check_late_rejects(art: Artifacts, last: date) -> None:
    """UserError when data_optim.py rejected transactions dated after `last` (the last day it kept) because
    their date is written in another format: without them, the test week would silently be an earlier one."""
    path = art.rejects("transactions")
    if not path.exists():
        return
    late = (pl.scan_csv(path, infer_schema=False)
            .select("line", "t_dat", format=dates.other_format("t_dat"), day=dates.in_other_format("t_dat"))
            .filter(pl.col("day") > last).collect())
    if late.height:
        row = late.row(0, named=True)
        raise UserError(f"{late.height:,} transactions dated after {last}, the last day kept, were rejected by "
                        f"data_optim.py: t_dat is written {row['format']} (line {row['line']}: {row['t_dat']!r}), "
                        f"not {dates.EXPECTED}; without them the test week would move back. Rewrite their dates "
                        f"as {dates.EXPECTED} and rerun `{art.command('data_optim.py')}`, or give --end-date {last} "
                        f"to split without them")


def check_thin(source: pl.LazyFrame, bounds: dict[str, tuple[date, date]], rows: dict[str, int]) -> None:
    """UserError when a held-out window has far fewer rows a day than the REFERENCE_DAYS before the
    validation window: a stray late transaction, or data that ends early, not a week to score on."""
    val_start = bounds["validation"][0]
    ref_start = max(bounds["train"][0], val_start - timedelta(days=REFERENCE_DAYS))
    ref_days = (val_start - ref_start).days
    ref_rows = source.filter(pl.col("t_dat").is_between(ref_start, val_start - timedelta(days=1))) \
        .select(pl.len()).collect().item()
    per_day = ref_rows / ref_days
    for p in HELD_OUT:
        start, end = bounds[p]
        days = (end - start).days + 1
        if rows[p] / days < THIN * per_day:
            before = last_before(source, start)
            raise UserError(f"the {p} window {start}..{end} has {rows[p]:,} transactions ({rows[p] / days:,.1f} a day) "
                            f"against {per_day:,.1f} a day in the {ref_days} days before the validation window: "
                            f"the data probably ends on {before} with stray later rows; choose --end-date {before}, "
                            f"or pass --allow-thin-weeks to score on this window all the same")


def ground_truth(transactions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """customer_id -> article_ids: the unique articles each customer bought, in order of first purchase."""
    return (transactions.lazy()
            .sort("t_dat", maintain_order=True)  # same-day purchases keep the file's order
            .group_by("customer_id")
            .agg(pl.col("article_id").unique(maintain_order=True).alias("article_ids"))
            .sort("customer_id")
            .collect())


def split(artifacts: Artifacts, test_days: int = TEST_DAYS, validation_days: int = VALIDATION_DAYS,
          end_date=None, allow_thin: bool = False) -> dict:
    """Write the train/validation/test transactions, the held-out weeks' ground truth and split.json
    (all or nothing); UserError on an empty window, or a thin one unless `allow_thin`."""
    t0 = time.perf_counter()
    art = artifacts
    require(art.transactions, art.command("data_optim.py"))
    require_fresh(art, "data_optim.py")
    check_writable(art.split_dir)
    source = pl.scan_parquet(art.transactions)
    first, last = date_range(source)
    if end_date is None:  # a chosen --end-date is deliberate; the default one must not move back unseen
        check_late_rejects(art, last)
    bounds = windows(first, last, test_days, validation_days, end_date)
    part = part_expr(bounds)
    # one pass for the counts, so an empty week stops the run before anything is written
    stats = (source.group_by(part.alias("part"))
             .agg(rows=pl.len(), customers=pl.col("customer_id").n_unique(), articles=pl.col("article_id").n_unique())
             .collect())
    counts = {r["part"]: r for r in stats.iter_rows(named=True)}
    check_not_empty({p: counts.get(p, {}).get("rows", 0) for p in PARTS}, bounds, source)
    if not allow_thin:
        check_thin(source, bounds, {p: counts[p]["rows"] for p in PARTS})

    with atomic_outputs(art.manifest("split_data.py"), [art.transactions], art.command("split_data.py"),
                        art.data_dir) as outputs:
        tmp = {p: outputs(art.split(p)) for p in PARTS}
        pl.collect_all([source.filter(part == p).sink_parquet(tmp[p], compression="zstd",
                                                              row_group_size=ROW_GROUP_SIZE, lazy=True)
                        for p in PARTS], engine="streaming")
        truth = {}
        for p in HELD_OUT:
            truth[p] = ground_truth(pl.scan_parquet(tmp[p]))
            truth[p].write_parquet(outputs(art.truth(p)), compression="zstd")
        info = split_info(art, bounds, counts, truth, test_days, validation_days)
        with open(outputs(art.split_info), "w") as fh:
            fh.write(json.dumps(info, indent=2, default=str) + "\n")
    info["seconds"] = time.perf_counter() - t0
    info["peak_rss_mb"] = peak_rss_mb()
    summary("split_data", train=info["train"]["rows"], validation=info["validation"]["rows"],
            test=info["test"]["rows"], validation_week=f"{bounds['validation'][0]}..{bounds['validation'][1]}",
            test_week=f"{bounds['test'][0]}..{bounds['test'][1]}",
            test_customers=info["test"]["truth_customers"], seconds=info["seconds"], out=str(art.split_dir))
    if info["rows_after_end"]:
        print(f"{info['rows_after_end']:,} transactions after --end-date {bounds['test'][1]} are in no split")
    return info


def split_info(art: Artifacts, bounds: dict, counts: dict, truth: dict, test_days: int, validation_days: int) -> dict:
    """What split.json says: the windows, their counts and the held-out weeks' ground truth sizes."""

    info = {
        "end_date": bounds["test"][1], "test_days": test_days, "validation_days": validation_days,
        "source": str(art.transactions),
        "rows_after_end": counts.get(None, {}).get("rows", 0),
    }
    for p in PARTS:
        info[p] = {"start": bounds[p][0], "end": bounds[p][1], "rows": counts[p]["rows"],
                   "customers": counts[p]["customers"], "articles": counts[p]["articles"]}
        if p in truth:
            info[p]["truth_customers"] = truth[p].height
            info[p]["truth_purchases"] = int(truth[p]["article_ids"].list.len().sum())
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dir_args(parser)
    parser.add_argument("--test-days", type=int, default=TEST_DAYS,
                        help="days in the test window (default: %(default)s)")
    parser.add_argument("--validation-days", type=int, default=VALIDATION_DAYS,
                        help="days in the validation window before it (default: %(default)s)")
    parser.add_argument("--end-date", default=None,
                        help="last day of the test window, YYYY-MM-DD (default: the last day in the data)")
    parser.add_argument("--allow-thin-weeks", action="store_true",
                        help="split even when a held-out window has far fewer transactions a day than the weeks before")
    args = parser.parse_args(argv)
    split(from_args(args), args.test_days, args.validation_days, args.end_date, args.allow_thin_weeks)


if __name__ == "__main__":
    run_main(main)
