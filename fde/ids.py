"""Article and customer ids: Kaggle's 10-digit article text, and the UInt64 key of a 64-hex customer id."""
from __future__ import annotations

import numpy as np
import polars as pl

from fde.errors import UserError

CUSTOMER = pl.UInt64  # a customer's key: the last 16 hex digits of the 64-hex customer_id
CUSTOMER_HEX = r"^[0-9a-fA-F]{64}$"  # Kaggle's customer_id
ARTICLE = pl.Int32


def parse_article_id(text) -> int:
    """Article id from '0108775015', '108775015' or an int; UserError if it is not one."""
    raw = str(text).strip()
    # isdigit alone takes '²' (which int() refuses with a traceback) and other scripts' digits: ids are ASCII
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        raise UserError(f"{text!r} is not an article id: give up to 10 digits, e.g. 0108775015")
    return int(raw)


def format_article_id(article_id: int) -> str:
    """Kaggle's 10-digit zero-padded form."""
    return f"{int(article_id):010d}"


def customer_key_expr(col: str = "customer_id") -> pl.Expr:
    """UInt64 key of a 64-hex customer_id: its last 16 hex digits (see is_customer_hex for the other 48)."""
    return pl.col(col).str.slice(-16).str.to_integer(base=16, dtype=pl.UInt64, strict=False)


def is_customer_hex(col: str = "customer_id") -> pl.Expr:
    """True for a text of 64 hex digits. The key reads only the last 16, so 'ZZZZ' + 60 hex digits would
    otherwise pass as the key of whichever customer shares those 16 digits."""
    return pl.col(col).str.contains(CUSTOMER_HEX)


def article_id_text(expr: pl.Expr) -> pl.Expr:
    """Kaggle's 10-digit zero-padded text of an article_id expression (the vectorised format_article_id)."""
    return expr.cast(pl.String).str.zfill(10)



def product_codes(article_ids: np.ndarray) -> np.ndarray:
    """Kaggle's convention: article_id = product_code * 1000 + colourway."""
    return np.asarray(article_ids, dtype=np.int64) // 1000
