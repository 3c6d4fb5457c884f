"""split_data.py on hand-made transactions: exact day boundaries, disjoint parts, ground truth, errors."""
import json
from datetime import date, timedelta

import polars as pl
import pytest

import split_data
from fde.artifacts import Artifacts
from fde.errors import UserError
from fde.files import atomic_outputs

FIRST = date(2020, 8, 20)
LAST = date(2020, 9, 22)


def transactions(first=FIRST, last=LAST, skip=()) -> pl.DataFrame:
    """Two rows a day from first to last (except the days in `skip`), in the contract's schema."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    days = [d for d in days if d not in skip]
    n = len(days) * 2
    return pl.DataFrame({
        "t_dat": [d for d in days for _ in range(2)],
        "customer_id": [i % 5 + 1 for i in range(n)],
        "article_id": [100 + i % 7 for i in range(n)],
        "price": [0.01] * n,
        "sales_channel_id": [1, 2] * len(days),
    }, schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32, "price": pl.Float32,
               "sales_channel_id": pl.UInt8})


def processed(tmp_path, df: pl.DataFrame) -> Artifacts:
    """Artifacts whose processed/transactions.parquet is `df`."""
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    with atomic_outputs(art.manifest("data_optim.py"), [], "test", art.data_dir) as outputs:
        df.write_parquet(outputs(art.transactions))
    return art


def test_windows_are_exact_to_the_day():
    w = split_data.windows(FIRST, LAST, 7, 7)
    assert w == {"train": (FIRST, date(2020, 9, 8)), "validation": (date(2020, 9, 9), date(2020, 9, 15)),
                 "test": (date(2020, 9, 16), LAST)}
    w = split_data.windows(FIRST, LAST, test_days=3, validation_days=2, end_date="2020-09-10")
    assert w == {"train": (FIRST, date(2020, 9, 5)), "validation": (date(2020, 9, 6), date(2020, 9, 7)),
                 "test": (date(2020, 9, 8), date(2020, 9, 10))}


def test_parts_are_disjoint_cover_everything_and_keep_the_schema():
    df = transactions().with_row_index("row")
    parts = split_data.split_transactions(df, 7, 7)
    bounds = {p: (parts[p]["t_dat"].min(), parts[p]["t_dat"].max()) for p in split_data.PARTS}
    assert bounds == {"train": (FIRST, date(2020, 9, 8)), "validation": (date(2020, 9, 9), date(2020, 9, 15)),
                      "test": (date(2020, 9, 16), LAST)}
    assert [parts[p].height for p in split_data.PARTS] == [20 * 2, 7 * 2, 7 * 2]
    rows = pl.concat([parts[p]["row"] for p in split_data.PARTS])
    assert rows.is_unique().all() and rows.sort().to_list() == df["row"].to_list()
    assert all(parts[p].schema == df.schema for p in split_data.PARTS)


def test_lazy_input_gives_the_same_parts():
    df = transactions()
    eager = split_data.split_transactions(df, 5, 4)
    lazy = split_data.split_transactions(df.lazy(), 5, 4)
    for p in split_data.PARTS:
        assert lazy[p].collect().equals(eager[p])


def test_ground_truth_lists_unique_articles_in_order_of_first_purchase():
    week = pl.DataFrame({
        "t_dat": [date(2020, 9, 17), date(2020, 9, 16), date(2020, 9, 16), date(2020, 9, 18), date(2020, 9, 16)],
        "customer_id": [7, 7, 7, 7, 3],
        "article_id": [30, 20, 10, 20, 10],
    }, schema_overrides={"customer_id": pl.UInt64, "article_id": pl.Int32})
    truth = split_data.ground_truth(week)
    assert truth.schema == {"customer_id": pl.UInt64, "article_ids": pl.List(pl.Int32)}
    assert truth.rows() == [(3, [10]), (7, [20, 10, 30])]


def test_split_writes_parts_truth_and_info(tmp_path, capsys):
    df = transactions()
    art = processed(tmp_path, df)
    info = split_data.split(art)
    parts = {p: pl.read_parquet(art.split(p)) for p in split_data.PARTS}
    assert parts["test"]["t_dat"].min() == date(2020, 9, 16) and parts["train"]["t_dat"].max() == date(2020, 9, 8)
    assert pl.concat(parts.values()).sort("t_dat", maintain_order=True).equals(df)
    for p in split_data.HELD_OUT:
        truth = pl.read_parquet(art.truth(p))
        assert truth.equals(split_data.ground_truth(parts[p]))
        assert truth["article_ids"].list.eval(pl.element().is_unique().all()).explode().all()
    saved = json.loads(art.split_info.read_text())
    assert saved["test"] == {"start": "2020-09-16", "end": "2020-09-22", "rows": 14, "customers": 5, "articles": 7,
                             "truth_customers": 5, "truth_purchases": info["test"]["truth_purchases"]}
    assert saved["validation"]["start"] == "2020-09-09" and saved["train"]["rows"] == 40
    assert not [p for p in art.split_dir.iterdir() if ".tmp-" in p.name]
    assert "[split_data] train=40 validation=14 test=14" in capsys.readouterr().out


def test_end_date_leaves_later_rows_out(tmp_path):
    art = processed(tmp_path, transactions())
    split_data.main(["--data-dir", str(art.data_dir), "--test-days", "3", "--validation-days", "2",
                     "--end-date", "2020-09-10"])
    info = json.loads(art.split_info.read_text())
    assert info["test"]["start"] == "2020-09-08" and info["test"]["end"] == "2020-09-10"
    assert info["rows_after_end"] == 12 * 2
    total = sum(info[p]["rows"] for p in split_data.PARTS) + info["rows_after_end"]
    assert total == transactions().height
    assert pl.read_parquet(art.split("test"))["t_dat"].max() == date(2020, 9, 10)


@pytest.mark.parametrize("kwargs, message", [
    ({"test_days": 20, "validation_days": 20}, "nothing is left to train on"),
    ({"end_date": "2020-10-01"}, "--end-date 2020-10-01 is outside the data"),
    ({"end_date": "2019-01-01"}, "--end-date 2019-01-01 is outside the data"),
    ({"end_date": "22/09/2020"}, "is not a date"),
    ({"test_days": 0}, "at least 1"),
])
def test_window_outside_the_data_is_a_user_error(tmp_path, kwargs, message):
    art = processed(tmp_path, transactions())
    with pytest.raises(UserError, match=message):
        split_data.split(art, **kwargs)
    assert not art.split_dir.exists()


def test_empty_week_is_a_user_error_and_writes_nothing(tmp_path):
    gap = [date(2020, 9, 9) + timedelta(days=i) for i in range(7)]  # no sales in the validation week
    art = processed(tmp_path, transactions(skip=gap))
    with pytest.raises(UserError, match="the validation window 2020-09-09..2020-09-15 has no transactions"):
        split_data.split(art)
    assert not art.split_dir.exists()
    with pytest.raises(UserError, match="validation window"):
        split_data.split_transactions(transactions(skip=gap))


def test_missing_transactions_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match="run `python data_optim.py"):
        split_data.split(Artifacts(tmp_path / "data"))


def test_thin_test_week_is_refused_unless_allowed(tmp_path):
    stray = transactions().head(1).with_columns(t_dat=pl.lit(LAST + timedelta(days=7)))
    art = processed(tmp_path, pl.concat([transactions(), stray]))
    with pytest.raises(UserError, match=r"the test window 2020-09-23\.\.2020-09-29 has 1 transactions "
                                        r"\(0\.1 a day\) against 2\.0 a day .* choose --end-date 2020-09-22, "
                                        r"or pass --allow-thin-weeks"):
        split_data.split(art)
    assert not art.split_dir.exists()
    info = split_data.split(art, allow_thin=True)
    assert info["test"]["rows"] == 1
    assert split_data.split(art, end_date="2020-09-22")["rows_after_end"] == 1


def test_split_of_processed_data_that_changed_since_is_refused(tmp_path):
    art = processed(tmp_path, transactions())
    transactions().head(10).write_parquet(art.transactions)  # replaced outside data_optim.py
    with pytest.raises(UserError, match=r"transactions\.parquet was replaced since "
                                        r"`python data_optim\.py --data-dir .*` wrote .*: "
                                        r"rerun `python data_optim\.py"):
        split_data.split(art)
    assert not art.split_dir.exists()
