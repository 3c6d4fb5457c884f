"""Stage 1: the three Kaggle CSVs -> compact, typed zstd Parquet, with bad rows kept aside.

Reads data/raw/{articles,customers,transactions_train}.csv and writes
data/processed/{articles,customers,transactions,customer_ids}.parquet (see fde/artifacts.py), then
what search.py needs from them under data/search/ (price bands and the BM25 index of the articles'
words, fde/search.py):

    transactions  t_dat Date, customer_id UInt64, article_id Int32, price Float32, sales_channel_id UInt8
    customers     customer_id UInt64, FN/Active UInt8, club/news Categorical, age UInt8, postal_code String
    articles      article_id/product_code Int32, codes Int16, *_name Categorical, prod_name/detail_desc String
    customer_ids  customer_id UInt64 -> customer_id_hex String (the original 64-hex id, for submissions)

A customer_id becomes its last 16 hex digits as a UInt64 (8 bytes instead of 64); the map
keeps the original, and two different ids with the same key stop the run (an id that is not 64 hex
digits is a bad row, not a second customer). Every CSV is
read lazily as text and cast with strict=False; a row whose text does not parse (bad date,
non-numeric id or price, wrong field count, ...), a transaction of an article that is not in
articles.csv or dated in the future, goes to processed/rejects/<table>_rejects.csv with its
original fields, its line and the reason, and is counted in the summary. A bad optional field
(age 'unknown', FN 'yes') does not cost the row: the field becomes null, and the row is listed in
the rejects file too, with the reason and "set to null, row kept". Outputs appear together or not
at all, with processed/manifest.json recording the raw files they were built from. The
transactions file is streamed, never held in memory as text: the full 3.3 GB file converts
with well under 1.5 GB of memory (bench/bench_etl.py measures time and memory).

    python data_optim.py --data-dir data
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
from tqdm import tqdm

from fde import dates, search
from fde.artifacts import Artifacts, add_dir_args, from_args
from fde.cli import add_progress_flag, peak_rss_mb, run_main, summary
from fde.errors import check_writable, environment_problem, UserError
from fde.files import atomic_outputs, atomic_path, Outputs
from fde.ids import customer_key_expr, is_customer_hex

ROW_GROUP_SIZE = 1_000_000  # ~5 MB per transactions row group: fast to skip, cheap to read
GAP_DAYS = 28  # sales days further than this from all the others are flagged (a typo'd year, a stray row)


@dataclass(frozen=True)
class Col:
    """How one CSV column is typed: target dtype, whether a row needs it, how to read it."""

    dtype: pl.DataType
    required: bool = False  # an empty or bad value rejects the row (else a bad value becomes null)
    via_float: bool = False  # integers written as "49.0" or "1.0" (customers.csv does this)
    valid: tuple | None = None  # inclusive range of plausible values; outside it counts as bad


CAT, STR, I16, I32 = pl.Categorical(), pl.String(), pl.Int16(), pl.Int32()

TRANSACTIONS = {
    "t_dat": Col(pl.Date(), required=True),
    "customer_id": Col(pl.UInt64(), required=True),
    "article_id": Col(I32, required=True),
    "price": Col(pl.Float32(), required=True),
    "sales_channel_id": Col(pl.UInt8(), required=True),
}
CUSTOMERS = {
    "customer_id": Col(pl.UInt64(), required=True),
    "FN": Col(pl.UInt8(), via_float=True, valid=(0, 1)),  # flags: 1.0 or empty in Kaggle's file
    "Active": Col(pl.UInt8(), via_float=True, valid=(0, 1)),
    "club_member_status": Col(CAT),
    "fashion_news_frequency": Col(CAT),
    "age": Col(pl.UInt8(), via_float=True, valid=(0, 120)),  # a human age
    "postal_code": Col(STR),
}
ARTICLES = {
    "article_id": Col(I32, required=True),
    "product_code": Col(I32, required=True),
    "prod_name": Col(STR),
    "product_type_no": Col(I16), "product_type_name": Col(CAT),
    "product_group_name": Col(CAT),
    "graphical_appearance_no": Col(I32), "graphical_appearance_name": Col(CAT),
    "colour_group_code": Col(I16), "colour_group_name": Col(CAT),
    "perceived_colour_value_id": Col(I16), "perceived_colour_value_name": Col(CAT),
    "perceived_colour_master_id": Col(I16), "perceived_colour_master_name": Col(CAT),
    "department_no": Col(I16), "department_name": Col(CAT),
    "index_code": Col(CAT), "index_name": Col(CAT),
    "index_group_no": Col(I16), "index_group_name": Col(CAT),
    "section_no": Col(I16), "section_name": Col(CAT),
    "garment_group_no": Col(I16), "garment_group_name": Col(CAT),
    "detail_desc": Col(STR),
}

EXTRA = "extra_field"  # catches a field beyond the header's: such a row is rejected
LINE = "line"  # line of the row in the CSV (header = 1; exact unless a quoted field spans lines)
HEX_LEN = 64


def missing_raw(path: Path, art: Artifacts) -> UserError:
    """The error for a raw CSV that is not there, saying how to get it."""
    return UserError(f"{path} not found: run `python sample_data.py --data-dir {art.data_dir}` for sample data, "
                     f"or put the Kaggle CSVs in {art.raw_dir}/")


def not_utf8(path: Path, line: int, byte: int) -> UserError:
    """The error for a CSV that is not UTF-8 (Kaggle's are), naming the line and the byte."""
    return UserError(f"{path} line {line} is not UTF-8 (byte 0x{byte:02x}; perhaps the file was saved as "
                     f"cp1252/Latin-1): re-save it as UTF-8, e.g. `iconv -f cp1252 -t utf-8`")


def first_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(line, byte) of the first byte that is not UTF-8; None if the file is all UTF-8. Runs only after
    polars found a bad byte, so a plain loop over lines is fine (a character never spans two lines)."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, line[exc.start]
    return None


def read_header(path: Path, table: str, spec: dict[str, Col], art: Artifacts) -> list[str]:
    """Column names of a CSV; UserError if the file or one of the spec's columns is missing."""
    if not path.exists():
        raise missing_raw(path, art)
    with open(path, "rb") as fh:
        first = fh.readline().rstrip(b"\r\n")
    try:
        header = [c.strip('"') for c in first.decode("utf-8-sig").split(",")] if first else []
    except UnicodeDecodeError as exc:
        raise not_utf8(path, 1, first[exc.start]) from None
    missing = [c for c in spec if c not in header]
    if missing:
        raise UserError(f"{path} has no column {', '.join(missing)} (found: {', '.join(header) or 'nothing'}); "
                        f"{table} needs the Kaggle columns {', '.join(spec)}")
    return header


def scan_text(path: Path, header: list[str]) -> pl.LazyFrame:
    """Every field as text, plus the line number and a column that is set only when a row has too many fields."""
    names = header + [EXTRA]
    return pl.scan_csv(path, has_header=False, skip_rows=1, schema={c: pl.String for c in names},
                       missing_columns="insert", truncate_ragged_lines=True,
                       row_index_name=LINE, row_index_offset=2)


def parsed(name: str, col: Col) -> pl.Expr:
    """The typed value of a text column; null where the text does not parse (its range is checked apart)."""
    text = pl.col(name)
    if name == "customer_id":
        return pl.when(text.str.len_bytes() == HEX_LEN).then(customer_key_expr(name))
    if col.dtype == pl.Date:
        return dates.parse(name)
    if col.dtype.is_float():
        number = text.cast(col.dtype, strict=False)
        return pl.when(number.is_finite() & (number >= 0)).then(number)
    if col.via_float:  # "49.0" -> 49, but "49.5" is not a whole number
        number = text.cast(pl.Float64, strict=False)
        return pl.when(number == number.floor()).then(number).cast(col.dtype, strict=False)
    return text.cast(col.dtype, strict=False)


def problem(name: str, col: Col) -> str:
    """What is wrong with a value of this column that did not parse."""
    if name == "customer_id":
        return "customer_id is not a 64-hex id"
    if col.dtype == pl.Date:
        return f"{name} is not a {dates.EXPECTED} date"
    if col.dtype.is_float():
        return f"{name} is not a number >= 0"
    return f"{name} is not a whole number that fits {col.dtype}"


NULLED = "nulled"  # why optional fields of a kept row were set to null
KEPT = ": set to null, row kept"


def typed_rows(lf: pl.LazyFrame, header: list[str], spec: dict[str, Col],
               row_checks: tuple[tuple[pl.Expr, str], ...] = ()) -> pl.LazyFrame:
    """Add `_<col>` typed columns, `reason` (null for a good row, else the first problem that rejects
    it) and `nulled` (the problems of optional fields, which are set to null instead).

    `row_checks` are further (condition on the typed columns, reason) pairs that reject a row.
    """
    checks = [
        (pl.all_horizontal([pl.col(c).is_null() for c in header]), "blank line"),
        (pl.col(EXTRA).is_not_null(), f"too many fields (the header has {len(header)})"),
    ]
    optional = []
    for name, col in spec.items():
        if col.required:
            checks.append((pl.col(name).is_null(), f"{name} is empty (or the row has too few fields)"))
        if col.dtype in (STR, CAT):
            continue
        bad = [(pl.col(name).is_not_null() & pl.col("_" + name).is_null(), problem(name, col))]
        if col.valid:
            lo, hi = col.valid
            bad.append((~pl.col("_" + name).is_between(lo, hi), f"{name} is outside {lo}..{hi}"))
        (checks if col.required else optional).extend(bad)
    checks.extend(row_checks)
    typed = [parsed(n, c).alias("_" + n) for n, c in spec.items() if c.dtype not in (STR, CAT)]
    reason = pl.coalesce([pl.when(cond).then(pl.lit(msg)) for cond, msg in checks]).alias("reason")
    nulled = (pl.concat_list([pl.when(cond).then(pl.lit(msg)) for cond, msg in optional]).list.drop_nulls()
              .list.join("; ") if optional else pl.lit(None, pl.String))
    in_range = [pl.when(pl.col("_" + n).is_between(*c.valid)).then(pl.col("_" + n)).alias("_" + n)
                for n, c in spec.items() if c.valid]
    return (lf.with_columns(typed).with_columns(reason, pl.when(nulled != "").then(nulled).alias(NULLED))
            .with_columns(in_range))


def good_columns(header: list[str], spec: dict[str, Col]) -> list[pl.Expr]:
    """Typed output columns in the spec's order, then any column the spec does not know, as text."""
    out = [pl.col(name) for name in header if name not in spec]
    for name, col in reversed(spec.items()):
        if col.dtype in (STR, CAT):
            out.insert(0, pl.col(name).cast(col.dtype))
        else:
            out.insert(0, pl.col("_" + name).alias(name))
    return out


def reject_columns(header: list[str]) -> list:
    """Reject file columns: where the row was, its original fields, and why (a rejected row's reason,
    or the fields set to null in a kept row)."""
    why = pl.coalesce(pl.col("reason"), pl.col(NULLED) + KEPT).alias("reason")
    return [pl.col(LINE)] + [pl.col(c) for c in header] + [pl.col(EXTRA), why]


def listed(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The rows that go to the rejects file: rejected ones and kept ones with a field set to null."""
    return rows.filter(pl.col("reason").is_not_null() | pl.col(NULLED).is_not_null())


def file_mb(path: Path) -> float:
    return Path(path).stat().st_size / 1e6


def reasons_text(path: Path) -> str:
    """'reason: n, ...' of a rejects file, for the console."""
    counts = pl.scan_csv(path, infer_schema=False).group_by("reason").len().sort("len", descending=True).collect()
    return ", ".join(f"{r}: {n:,}" for r, n in counts.iter_rows())


def report(table: str, rows_out: int, rejects: int, csv_path: Path, out: Path, reject_path: Path,
           final: dict, seconds: float) -> dict:
    """Print one table's summary line (and what was rejected or set to null) and return it as a dict."""
    rows_in = rows_out + rejects
    listed_rows = pl.scan_csv(reject_path, infer_schema=False).select(pl.len()).collect().item()
    nulled = listed_rows - rejects
    if listed_rows:
        kept = f", {nulled:,} kept with a field set to null" if nulled else ""
        print(f"{table}: {rejects:,} of {rows_in:,} rows rejected{kept} ({reasons_text(reject_path)}) "
              f"-> {final[reject_path]}")
    line = summary("data_optim", table=table, rows_in=rows_in, rows_out=rows_out, rejects=rejects, nulled=nulled,
                   csv_mb=file_mb(csv_path), parquet_mb=file_mb(out), seconds=seconds,
                   peak_rss_mb=peak_rss_mb(), out=str(final[out]))
    return {"rows_in": rows_in, "rows_out": rows_out, "rejects": rejects, "nulled": nulled,
            "csv_bytes": Path(csv_path).stat().st_size, "parquet_bytes": Path(out).stat().st_size,
            "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "path": str(final[out]),
            "rejects_path": str(final[reject_path]), "summary": line}


def collect(path: Path, frames: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """Run lazy frames over one CSV in one streaming pass; a file polars cannot read is a UserError."""
    try:
        return pl.collect_all(frames, engine="streaming")
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        if environment_problem(exc):  # a full disk while writing, not a bad CSV
            raise
        if "utf-8" in str(exc).lower() and (where := first_bad_utf8(path)):
            raise not_utf8(path, *where) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} could not be read as CSV ({first}); check its quoting and separators") from exc


def require_rows(path: Path, table: str, rows: int, rejected: int) -> None:
    """UserError when a table has no valid row (an empty catalogue or customer list is never meant)."""
    if rows == 0:
        why = f"all {rejected:,} are malformed" if rejected else "it holds only a header"
        raise UserError(f"{path} has no rows of {table} ({why}): check it is the Kaggle {path.name}")


def load_small(path: Path, table: str, spec: dict[str, Col], art: Artifacts, keep: tuple[str, ...] = (),
               row_checks: tuple[tuple[pl.Expr, str], ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Typed good rows (with their line), rejected rows and the header of a table small enough
    to hold (articles, customers); `keep` names columns whose text is kept as `<name>_text` too."""
    header = read_header(path, table, spec, art)
    rows = typed_rows(scan_text(path, header), header, spec, row_checks).cache()
    good = rows.filter(pl.col("reason").is_null()).select(
        [pl.col(LINE)] + good_columns(header, spec) + [pl.col(c).alias(f"{c}_text") for c in keep])
    bad = listed(rows).select(reject_columns(header) + [pl.col("reason").is_null().alias("kept")])
    good, bad = collect(path, [good, bad])
    require_rows(path, table, good.height, bad.filter(~pl.col("kept")).height)
    return good, bad, header


def drop_duplicates(path: Path, header: list[str], good: pl.DataFrame, bad: pl.DataFrame,
                    key: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Move every good row whose key an earlier good row has to the rejects; drop the line column."""
    first = good[key].is_first_distinct()
    if not first.all():
        # rare: read those rows' text again rather than hold every row as text
        lines = good.filter(~first)[LINE]
        dup = (scan_text(path, header).filter(pl.col(LINE).is_in(lines.implode()))
               .with_columns(reason=pl.lit(f"duplicate {key}"), nulled=pl.lit(None, pl.String))
               .select(reject_columns(header) + [pl.lit(False).alias("kept")]))
        bad = pl.concat([bad.filter(~pl.col(LINE).is_in(lines.implode())), collect(path, [dup])[0]]).sort(LINE)
        good = good.filter(first)
    return good.drop(LINE), bad


def collision(key: int, ids: list[str]) -> UserError:
    """The error for two customer ids that share their last 16 hex digits."""
    return UserError(f"customer ids {ids[0]} and {ids[1]} share their last 16 hex digits "
                     f"(key {key}): the UInt64 key cannot tell them apart, so data_optim.py refuses this data")


def unique_ids(ids: pl.DataFrame) -> pl.DataFrame:
    """(customer_id, customer_id_hex) pairs, one per key; UserError if a key stands for two ids."""
    repeated = ids.filter(pl.col("customer_id").is_duplicated())  # UInt64: cheap, and usually empty
    if repeated.height:
        clash = (repeated.unique().filter(pl.col("customer_id").is_duplicated())
                 .sort("customer_id", "customer_id_hex"))
        if clash.height:
            raise collision(clash["customer_id"][0], clash["customer_id_hex"].head(2).to_list())
        ids = ids.unique("customer_id", keep="first", maintain_order=True)
    return ids


def customer_map(known: pl.DataFrame, buyers: pl.DataFrame) -> pl.DataFrame:
    """The key -> hex map of customers.csv's customers (`known`) plus the transaction buyers it lacks;
    UserError if one key stands for two different ids anywhere."""
    known, buyers = unique_ids(known), unique_ids(buyers)
    both = buyers.join(known, on="customer_id", how="inner", suffix="_known")
    clash = both.filter(pl.col("customer_id_hex") != pl.col("customer_id_hex_known")).sort("customer_id").head(1)
    if clash.height:
        raise collision(clash["customer_id"][0], sorted(clash.select("customer_id_hex_known", "customer_id_hex").row(0)))
    extra = buyers.join(known, on="customer_id", how="anti")
    return pl.concat([known, extra]).sort("customer_id")


def write_table(good: pl.DataFrame, listed_rows: pl.DataFrame, out: Path, rejects: Path) -> int:
    """Write the good rows and the rejects file; return how many rows were rejected (not kept)."""
    good.write_parquet(out, compression="zstd", row_group_size=ROW_GROUP_SIZE)
    listed_rows.drop("kept").write_csv(rejects)
    return int((~listed_rows["kept"]).sum())


def optimize_articles(art: Artifacts, staged: Outputs) -> tuple[dict, pl.Series]:
    """articles.csv -> articles.parquet (+ rejects); also return the catalogue's article ids."""
    t0 = time.perf_counter()
    good, bad, header = load_small(art.raw_articles, "articles", ARTICLES, art)
    good, bad = drop_duplicates(art.raw_articles, header, good, bad, "article_id")
    out, rejects = staged(art.articles), staged(art.rejects("articles"))
    n_bad = write_table(good, bad, out, rejects)
    info = report("articles", good.height, n_bad, art.raw_articles, out, rejects, staged.final,
                  time.perf_counter() - t0)
    return info, good["article_id"]


def optimize_customers(art: Artifacts, staged: Outputs) -> tuple[dict, pl.DataFrame]:
    """customers.csv -> customers.parquet (+ rejects); also return its (customer_id, customer_id_hex) pairs."""
    t0 = time.perf_counter()
    good, bad, header = load_small(art.raw_customers, "customers", CUSTOMERS, art, keep=("customer_id",),
                                   row_checks=(malformed_id(CUSTOMERS, ~is_customer_hex()),))
    # two different ids on one key stop the run here, before repeats of a key are rejected as duplicates
    ids = unique_ids(good.select("customer_id", customer_id_hex="customer_id_text"))
    good, bad = drop_duplicates(art.raw_customers, header, good.drop("customer_id_text"), bad, "customer_id")
    out, rejects = staged(art.customers), staged(art.rejects("customers"))
    n_bad = write_table(good, bad, out, rejects)
    info = report("customers", good.height, n_bad, art.raw_customers, out, rejects, staged.final,
                  time.perf_counter() - t0)
    return info, ids


def malformed_id(spec: dict[str, Col], condition: pl.Expr) -> tuple[pl.Expr, str]:
    """A row check: a customer_id of 64 characters that are not all hex digits (the parse reads only the
    last 16, for the key) is as bad as one of another length."""
    return condition, problem("customer_id", spec["customer_id"])


def transaction_checks(catalogue: pl.Series) -> tuple[tuple[pl.Expr, str], ...]:
    """Rows that parse but cannot be right: an article not in the catalogue, a date in the future."""
    # a day of slack, so that a file written today in a time zone ahead of UTC still passes
    tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
    return (
        (~pl.col("_article_id").is_in(catalogue.implode()), "article_id is not in articles.csv"),
        (pl.col("_t_dat") > tomorrow, f"t_dat is in the future (after {tomorrow})"),
    )


def optimize_transactions(art: Artifacts, staged: Outputs, known: pl.DataFrame,
                          catalogue: pl.Series) -> tuple[dict, pl.DataFrame]:
    """Stream transactions_train.csv -> transactions.parquet (+ rejects); also return the distinct
    (customer_id, customer_id_hex) pairs of its good rows whose id is not one of `known`'s.
    A row whose article is not in `catalogue` (articles.csv's ids) is rejected."""
    t0 = time.perf_counter()
    path = art.raw_transactions
    header = read_header(path, "transactions", TRANSACTIONS, art)
    out, rejects = staged(art.transactions), staged(art.rejects("transactions"))
    checks = transaction_checks(catalogue)
    strangers = convert_transactions(path, header, out, rejects, known, checks)
    # Checking all 64 digits of every row would make the pass several times slower, and an id that is in
    # customers.csv (checked there) is well formed: so only the ids outside it (usually none) are checked
    # here, and in the rare case that one is malformed, the pass is redone with its rows rejected.
    malformed = strangers.filter(~is_customer_hex("customer_id_hex"))["customer_id_hex"]
    if malformed.len():
        checks += (malformed_id(TRANSACTIONS, pl.col("customer_id").is_in(malformed.implode())),)
        strangers = convert_transactions(path, header, out, rejects, known, checks)
    rows_out = pl.scan_parquet(out).select(pl.len()).collect().item()
    n_bad = pl.scan_csv(rejects, infer_schema=False).select(pl.len()).collect().item()
    written = name_date_formats(rejects)
    if rows_out == 0:
        raise no_valid_transactions(path, n_bad, written)
    info = report("transactions", rows_out, n_bad, path, out, rejects, staged.final, time.perf_counter() - t0)
    info["isolated_days"] = flag_isolated_days(out)
    return info, strangers


def convert_transactions(path: Path, header: list[str], out: Path, rejects: Path, known: pl.DataFrame,
                         checks: tuple[tuple[pl.Expr, str], ...]) -> pl.DataFrame:
    """One streaming pass: the good rows to `out`, the rejected ones to `rejects`; return the distinct
    (customer_id, customer_id_hex) of good rows whose id is not one of `known`'s. The text of the whole
    file is never held in memory."""
    # cache(): the three results below share one parse of the file instead of three
    rows = typed_rows(scan_text(path, header), header, TRANSACTIONS, checks).cache()
    good = rows.filter(pl.col("reason").is_null())
    bad = rows.filter(pl.col("reason").is_not_null()).select(reject_columns(header))
    # a buyer whose 64-hex id is in customers.csv maps to it; only the others (usually none) are kept,
    # found by a hash of the text rather than by holding 1.4M hex strings through the pass
    known_hashes = known["customer_id_hex"].hash().implode()
    strangers = (good.filter(~pl.col("customer_id").hash().is_in(known_hashes))
                 .select(pl.col("_customer_id").alias("customer_id"), customer_id_hex="customer_id").unique())
    return collect(path, [
        good.select(good_columns(header, TRANSACTIONS)).sink_parquet(
            out, compression="zstd", row_group_size=ROW_GROUP_SIZE, lazy=True),
        bad.sink_csv(rejects, lazy=True),
        strangers,
    ])[-1]


def name_date_formats(rejects: Path, column: str = "t_dat") -> pl.DataFrame:
    """Name, in each bad-date reason of a rejects file, the other format its date is written in (after the
    pass, on the rejects alone, so the pass over every row stays as fast). Return the formats found:
    format, rows, and one example each, most rows first."""
    bad = pl.col("reason") == problem(column, TRANSACTIONS[column])
    found = dates.other_format(column)
    rows = pl.scan_csv(rejects, infer_schema=False)
    formats = (rows.filter(bad).select(found.alias("format"), pl.col(column).alias("example")).drop_nulls()
               .group_by("format").agg(rows=pl.len(), example=pl.col("example").first())
               .sort(["rows", "format"], descending=[True, False]).collect())
    if formats.height:
        named = pl.when(bad & found.is_not_null()).then(pl.concat_str(pl.col("reason"), pl.lit(": it is written "),
                                                                      found)).otherwise(pl.col("reason"))
        with atomic_path(rejects) as tmp:
            rows.with_columns(reason=named).sink_csv(tmp)
    return formats


def no_valid_transactions(path: Path, n_bad: int, written: pl.DataFrame) -> UserError:
    """The error for a transactions file without one good row; it names a date format that is the cause."""
    if written.height and written["rows"][0] * 2 > n_bad:
        fmt, rows, example = written.row(0)
        return UserError(f"{path} has no valid transaction rows: t_dat is written {fmt} (e.g. {example!r}) in "
                         f"{rows:,} of its {n_bad:,} rows, and data_optim.py reads {dates.EXPECTED} (Kaggle's "
                         f"format, e.g. 2020-09-22): rewrite the dates as {dates.EXPECTED}")
    why = f"all {n_bad:,} are malformed" if n_bad else "it holds only a header"
    return UserError(f"{path} has no valid transaction rows ({why}): check it is the Kaggle transactions_train.csv")


def isolated_days(path: Path) -> tuple[pl.DataFrame, date, date]:
    """Days with sales more than GAP_DAYS away from the bulk of the data (t_dat, len), and the bulk's first
    and last day. A typo'd year or a stray test row is kept (it is a valid row) but should not pass unseen."""
    days = pl.scan_parquet(path).group_by("t_dat").len().sort("t_dat").collect()
    run = (days["t_dat"].diff().dt.total_days().fill_null(0) > GAP_DAYS).cum_sum()
    days = days.with_columns(run=run)
    bulk = days.group_by("run").agg(pl.col("len").sum()).sort("len", "run", descending=True)["run"][0]
    inside = days.filter(pl.col("run") == bulk)["t_dat"]
    return days.filter(pl.col("run") != bulk).drop("run"), inside.min(), inside.max()


def flag_isolated_days(path: Path) -> list[str]:
    """Print a line about isolated sales days (see isolated_days); return them as ISO dates."""
    stray, first, last = isolated_days(path)
    if stray.height:
        shown = ", ".join(str(d) for d in stray["t_dat"].head(5)) + (", ..." if stray.height > 5 else "")
        print(f"transactions: {stray['len'].sum():,} rows on {stray.height:,} days ({shown}) lie more than "
              f"{GAP_DAYS} days away from the rest of the data ({first}..{last}): check these dates "
              f"(split_data.py counts its weeks back from the last day)")
    return [str(d) for d in stray["t_dat"]]


def optimize(artifacts: Artifacts, show_progress: bool = True) -> dict:
    """Convert the three raw CSVs to typed Parquet plus the customer id map; return per-table summaries."""
    art = artifacts
    t0 = time.perf_counter()
    for path in (art.raw_articles, art.raw_customers, art.raw_transactions):  # fail before any work
        if not path.exists():
            raise missing_raw(path, art)
    check_writable(art.processed_dir)
    result = {}
    raw = (art.raw_articles, art.raw_customers, art.raw_transactions)
    with tqdm(total=4, unit="step", desc="data_optim", disable=not show_progress) as steps:
        with atomic_outputs(art.manifest("data_optim.py"), raw, art.command("data_optim.py"), art.data_dir) as staged:
            steps.set_postfix_str("articles")
            result["articles"], catalogue = optimize_articles(art, staged)
            steps.update()
            steps.set_postfix_str("customers")
            result["customers"], known = optimize_customers(art, staged)
            steps.update()
            steps.set_postfix_str("transactions")
            result["transactions"], strangers = optimize_transactions(art, staged, known, catalogue)
            steps.update()
            ids = customer_map(known, strangers)
            ids.write_parquet(staged(art.customer_ids), compression="zstd", row_group_size=ROW_GROUP_SIZE)
        # what every search needs (price bands, the BM25 index), so that the first search.py answers at once
        steps.set_postfix_str("search catalogue")
        t_search = time.perf_counter()
        result["search"] = {"articles": search.prepare(art), "seconds": time.perf_counter() - t_search,
                            "path": str(art.search_dir)}
        steps.update()
    extra = ids.height - known.height
    result["customer_ids"] = {"rows": ids.height, "not_in_customers_csv": extra, "path": str(art.customer_ids)}
    if extra:
        print(f"transactions: {extra:,} buyers are not in customers.csv; {art.customer_ids} maps their ids all the same")
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = peak_rss_mb()
    summary("data_optim", tables=3, customer_ids=ids.height, search_articles=result["search"]["articles"],
            search_seconds=result["search"]["seconds"], seconds=result["seconds"],
            peak_rss_mb=result["peak_rss_mb"], out=str(art.processed_dir))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dir_args(parser)
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    optimize(from_args(args), show_progress=not args.no_progress)


if __name__ == "__main__":
    run_main(main)
