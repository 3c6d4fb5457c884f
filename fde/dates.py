"""Transaction dates: Kaggle's YYYY-MM-DD, and the name of another format a file holds by mistake.

A date in another format is never read as a date (22-09-2020 could be a typo as much as a locale),
but it is named, so that a rejected row, or a file of them, says what was found and what is expected.
"""
from __future__ import annotations

import polars as pl

EXPECTED = "YYYY-MM-DD"
STRPTIME = "%Y-%m-%d"
# name -> (the whole text's shape, how it reads): spreadsheets and locales rewrite dates so; the day-first
# reading of an ambiguous text is tried first
OTHER_FORMATS = {
    "DD-MM-YYYY": (r"^\d{1,2}-\d{1,2}-\d{4}$", "%d-%m-%Y"),
    "MM-DD-YYYY": (r"^\d{1,2}-\d{1,2}-\d{4}$", "%m-%d-%Y"),
    "YYYY/MM/DD": (r"^\d{4}/\d{1,2}/\d{1,2}$", "%Y/%m/%d"),
    "DD/MM/YYYY": (r"^\d{1,2}/\d{1,2}/\d{4}$", "%d/%m/%Y"),
    "MM/DD/YYYY": (r"^\d{1,2}/\d{1,2}/\d{4}$", "%m/%d/%Y"),
    "DD.MM.YYYY": (r"^\d{1,2}\.\d{1,2}\.\d{4}$", "%d.%m.%Y"),
    "YYYYMMDD": (r"^\d{8}$", "%Y%m%d"),
}


def parse(col: str) -> pl.Expr:
    """The date of a YYYY-MM-DD text; null for any other text."""
    return pl.col(col).str.to_date(STRPTIME, strict=False)


def _readings(col: str) -> list[tuple[str, pl.Expr]]:
    text = pl.col(col).str.strip_chars()
    return [(name, pl.when(text.str.contains(shape)).then(text.str.to_date(how, strict=False)))
            for name, (shape, how) in OTHER_FORMATS.items()]


def other_format(col: str) -> pl.Expr:
    """The name of the other format a date text is written in (e.g. 'DD-MM-YYYY'); null when it is none of them."""
    return pl.coalesce([pl.when(date.is_not_null()).then(pl.lit(name)) for name, date in _readings(col)])


def in_other_format(col: str) -> pl.Expr:
    """The date a text means in the other format it is written in; null when it is none of them."""
    return pl.coalesce([date for _, date in _readings(col)])
