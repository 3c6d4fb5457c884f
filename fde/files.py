"""Atomic files and manifests: outputs appear whole or not at all, and record what they were built from."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from fde.errors import UserError

# ---------------------------------------------------------------------------- atomic outputs

@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    When it fails, the temporary file goes, and so do the folders made for it (when still empty)."""
    path = Path(path)
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]  # innermost first
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    done = False
    try:
        yield tmp
        os.replace(tmp, path)
        done = True
    finally:
        if tmp.exists():
            tmp.unlink()
        for folder in made if not done else ():
            try:
                folder.rmdir()
            except OSError:  # not empty: leave it and the folders above
                break


class ParquetStream:
    """Frames written one after another as the row groups of one zstd Parquet file (write_parquet's format),
    so that only one of them is in memory at a time. A context manager: the file is complete when the block
    ends (with no frame written, `empty` is); write it to a temporary path (atomic_path)."""

    def __init__(self, path: Path, empty: pl.DataFrame):
        self.path, self.empty, self.writer, self.rows = Path(path), empty, None, 0

    def write(self, frame: pl.DataFrame, row_group_size: int = 1_000_000) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table.cast(self.writer.schema), row_group_size=row_group_size)
        self.rows += frame.height

    def __enter__(self) -> ParquetStream:
        return self

    def __exit__(self, failed, *_) -> None:
        if self.writer is not None:
            self.writer.close()
        elif not failed:
            self.empty.write_parquet(self.path, compression="zstd")


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
