"""Small helpers every stage shares: user errors, atomic writes, ids, the one-line summary."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


class UserError(Exception):
    """A problem the user can fix (missing file, bad column, unknown id): shown as one line."""


def run_main(main) -> None:
    """Run a stage's main(); a UserError, a full disk or an unwritable folder ends as one line
    on stderr and exit code 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (OSError, pl.exceptions.PolarsError) as exc:
        problem = environment_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, nothing half-written was left", file=sys.stderr)
        sys.exit(130)


# ---------------------------------------------------------------------------- the environment

ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
    errno.EACCES: ("permission denied", "check the permissions of that file and its folder"),
    errno.EPERM: ("operation not permitted", "check the permissions of that file and its folder"),
    errno.EROFS: ("the file system is read-only", "choose another --data-dir"),
}
OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how polars (Rust) words an OSError; it sets no errno


def environment_problem(exc: BaseException) -> str | None:
    """One line for a full disk or an unwritable folder behind an OSError or a polars error; None otherwise."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found else None
    if code not in ENVIRONMENT_ERRNOS:
        return None
    what, todo = ENVIRONMENT_ERRNOS[code]
    where = getattr(exc, "filename", None)
    where = f" ({where})" if where else ""
    return f"{what}{where}: {todo}, then rerun; no output of this run was kept half-written"


def check_writable(*folders: Path) -> None:
    """UserError unless a file can be created in each folder (or, if it does not exist yet, in the
    nearest folder above it that does): called before a stage's work, so it fails in seconds."""
    for folder in map(Path, folders):
        probe_dir = folder
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=probe_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            if probe_dir != folder:
                why += f" in {probe_dir}"
            raise UserError(f"cannot write to {folder} ({why}): make it writable or choose "
                            f"another --data-dir; nothing was computed") from None


# ---------------------------------------------------------------------------- atomic outputs

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


def temp_name(path: Path) -> Path:
    """The temporary name an output is written under before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


class Outputs:
    """Temporary names of a run's outputs (see atomic_outputs): `outputs(path)` is where to write `path`."""

    def __init__(self):
        self.final: dict[Path, Path] = {}  # temporary name -> final path

    def __call__(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        self.final[tmp] = path
        return tmp

    def written(self, path: Path) -> Path:
        """Where `path` is now: its temporary name if this run wrote it, else the path itself."""
        for tmp, final in self.final.items():
            if final == Path(path):
                return tmp
        return Path(path)


@contextlib.contextmanager
def atomic_outputs(manifest: Path | None = None, inputs=(), built_by: str = "", root: Path | None = None):
    """Several outputs that appear together or not at all.

    Inside the block, write each output to `outputs(path)`. When the block succeeds, `manifest` (if
    given) records what they were built from (fingerprints of `inputs`, taken before the work, and of
    the outputs), then every output is renamed into place, the manifest last (renames need no disk
    space). A failure anywhere, a full disk included, leaves every previous output as it was and no
    temporary file behind.
    """
    outputs = Outputs()
    root = root or (Path(manifest).parent.parent if manifest else Path("."))
    # inputs are fingerprinted before the work, so an input edited during the run makes the outputs stale
    used = {relative(p, root): fingerprint(p) for p in inputs} if manifest is not None else {}
    try:
        yield outputs
        missing = [str(p) for tmp, p in outputs.final.items() if not tmp.exists()]
        if missing:
            raise RuntimeError(f"outputs were named but not written: {', '.join(missing)}")
        if manifest is not None:
            record = manifest_record(used, outputs.final, built_by, root)
            with open(outputs(manifest), "w") as fh:
                fh.write(json.dumps(record, indent=2) + "\n")
        # the manifest goes last: until it is in place, a reader sees the previous, consistent set
        for tmp, path in sorted(outputs.final.items(), key=lambda item: item[1] == Path(manifest or "")):
            os.replace(tmp, path)
    finally:
        for tmp in outputs.final:
            if tmp.exists():
                tmp.unlink()


# ---------------------------------------------------------------------------- provenance

SAMPLE_BYTES = 1 << 16  # a fingerprint hashes the whole file up to 1 MiB, else 16 blocks of it


def fingerprint(path: Path) -> dict:
    """Size, mtime_ns and a hash of (a sample of) a file: enough to tell that it changed."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if stat.st_size <= 16 * SAMPLE_BYTES:
            digest.update(fh.read())
        else:
            for i in range(16):
                fh.seek((stat.st_size - SAMPLE_BYTES) * i // 15)
                digest.update(fh.read(SAMPLE_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample": digest.hexdigest()}


def same_file(recorded: dict, now: dict) -> bool:
    """True when a file is still the one recorded (a copy with new timestamps counts as the same)."""
    return recorded["size"] == now["size"] and (recorded["mtime_ns"] == now["mtime_ns"]
                                                or recorded["sample"] == now["sample"])


def relative(path: Path, root: Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def manifest_record(inputs: dict[str, dict], outputs: dict[Path, Path], built_by: str, root: Path) -> dict:
    """What a stage's outputs were built from: fingerprints of its inputs and of the outputs themselves."""
    return {
        "built_by": built_by,
        "inputs": inputs,
        "outputs": {relative(final, root): fingerprint(tmp) for tmp, final in outputs.items()},
    }


def require_fresh(manifest: Path, command: str, root: Path | None = None) -> dict:
    """Stop, naming `command`, unless the outputs recorded in `manifest` are still those its inputs made.

    Stale: an input changed since, an output was replaced or is gone, or there is no manifest. An input
    that is gone is no sign of staleness (raw CSVs may be deleted once converted), so it is skipped.
    """
    manifest = Path(manifest)
    root = Path(root) if root is not None else manifest.parent.parent
    if not manifest.exists():
        raise UserError(f"{manifest.parent} has no record of what it was built from ({manifest.name} is "
                        f"missing): run `{command}`")
    record = json.loads(manifest.read_text())
    for kind, entries in (("input", record["inputs"]), ("output", record["outputs"])):
        for name, recorded in entries.items():
            path = root / name if not Path(name).is_absolute() else Path(name)
            if not path.exists():
                if kind == "input":
                    continue
                raise UserError(f"{path} is gone since `{command}` last ran: run `{command}`")
            if not same_file(recorded, fingerprint(path)):
                what = "changed since it was used to build" if kind == "input" else "was replaced since `" + \
                    command + "` wrote"
                raise UserError(f"{path} {what} {manifest.parent}/: rerun `{command}`")
    return record


# ---------------------------------------------------------------------------- writers

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


PREDICTION = r"^[0-9]{10}( [0-9]{10}){0,11}$"  # 1 to 12 ten-digit article ids


def check_submission(submission: pl.DataFrame, customers: pl.Series, command: str = "python final.py") -> None:
    """UserError unless `submission` (customer_id, prediction) has exactly one row per 64-hex id in
    `customers` (customers.csv's and every buyer's) and each prediction is 1 to 12 ten-digit article ids."""
    ids = submission["customer_id"]
    expected = customers.unique()
    missing = expected.filter(~expected.is_in(ids.implode()))
    unknown = ids.filter(~ids.is_in(expected.implode())).unique()
    repeated = ids.filter(ids.is_duplicated()).unique()
    bad = submission.filter(~pl.col("prediction").fill_null("").str.contains(PREDICTION))
    problems = []
    if missing.len():
        problems.append(f"{missing.len():,} customers are missing (e.g. {missing[0]})")
    if unknown.len():
        problems.append(f"{unknown.len():,} ids are not customers (e.g. {unknown[0]})")
    if repeated.len():
        problems.append(f"{repeated.len():,} customers have more than one row (e.g. {repeated[0]})")
    if bad.height:
        problems.append(f"{bad.height:,} predictions are not 1 to 12 ten-digit article ids "
                        f"(e.g. {bad['customer_id'][0]}: {bad['prediction'][0]!r})")
    if problems:
        raise UserError(f"submission has {submission.height:,} rows for {expected.len():,} customers: "
                        f"{'; '.join(problems)}; nothing was written: rerun `{command}`")


def no_image_feature(article_id: int, no_image: dict, n_features: int) -> UserError:
    """The error for an article without an image feature: why (missing or unreadable image) when known."""
    reason = no_image.get(article_id)
    if reason:
        return UserError(f"article {format_article_id(article_id)} {reason}, so it has no visual twins")
    return UserError(f"article {format_article_id(article_id)} is not among the {n_features:,} articles with "
                     f"an image feature: check the id, or rerun visual_features.py if it is new")
