"""Small helpers every stage shares: user errors, atomic writes, ids, the one-line summary."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl


class UserError(Exception):
    """A problem the user can fix (missing file, bad column, unknown id): shown as one line."""


def run_main(main) -> None:
    """Run a stage's main(); a UserError ends as one line on stderr and exit code 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, nothing half-written was left", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(df: pl.DataFrame, path: Path, row_group_size: int = 1_000_000) -> Path:
    """Write zstd Parquet atomically."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", row_group_size=row_group_size)
    return Path(path)


def write_json(obj, path: Path) -> Path:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return Path(path)


def save_npy(array: np.ndarray, path: Path) -> Path:
    """np.save atomically (np.save would append .npy to a temporary name, so use a handle)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return Path(path)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and waited-for children) in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


class Stopwatch:
    """Wall seconds since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def summary(stage: str, **fields) -> str:
    """Print and return the one-line summary a stage ends with."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        parts.append(f"{key}={value}")
    line = f"[{stage}] " + " ".join(parts)
    print(line, flush=True)
    return line


def parse_article_id(text) -> int:
    """Article id from '0108775015', '108775015' or an int; UserError if it is not one."""
    raw = str(text).strip()
    if not raw.isdigit() or len(raw) > 10:
        raise UserError(f"{text!r} is not an article id: give up to 10 digits, e.g. 0108775015")
    return int(raw)


def format_article_id(article_id: int) -> str:
    """Kaggle's 10-digit zero-padded form."""
    return f"{int(article_id):010d}"


def customer_key_expr(col: str = "customer_id") -> pl.Expr:
    """UInt64 key of a 64-hex customer_id: its last 16 hex digits."""
    return pl.col(col).str.slice(-16).str.to_integer(base=16, dtype=pl.UInt64, strict=False)


def article_id_text(expr: pl.Expr) -> pl.Expr:
    """Kaggle's 10-digit zero-padded text of an article_id expression (the vectorised format_article_id)."""
    return expr.cast(pl.String).str.zfill(10)
