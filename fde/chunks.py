"""Chunks of embedding work: planned by a fingerprint of their images, the weights and the fit; written
atomically so a run resumes; damaged ones set aside; merged into the visual features when complete.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from tqdm import tqdm

from fde import artifacts as art
from fde import files
from fde.errors import UserError
from fde.files import atomic_path, save_npy, write_json
from fde.images import DEFAULT_FIT, FITS, INPUT_SIZE, MEAN, STD

if TYPE_CHECKING:
    from fde.pretrained import Weights

CHUNK_SIZE = 1024            # images per resumable chunk: ~1 min of CPU work, ~4 MB on disk


@dataclass(frozen=True)
class Chunk:
    """A resumable unit of work: up to CHUNK_SIZE images of one folder, named by their fingerprint."""

    name: str
    article_ids: np.ndarray
    paths: list


def plan_chunks(images: pl.DataFrame, weights: Weights, chunk_size: int = CHUNK_SIZE,
                fit: str = DEFAULT_FIT) -> list[Chunk]:
    """Split the catalogue into chunks; a chunk's name changes when its images, the model or the fit change."""
    if fit not in FITS:
        raise UserError(f"unknown fit {fit!r}: choose {', '.join(FITS)}")
    chunks = []
    # Chunks never span folders, so a new or changed image redoes only chunks of its own folder.
    for (folder,), group in images.group_by("folder", maintain_order=True):
        for part, start in enumerate(range(0, group.height, chunk_size)):
            piece = group.slice(start, chunk_size)
            digest = hashlib.sha1(f"{weights.tag}|{FITS[fit]}|{INPUT_SIZE}".encode())
            for column in ("article_id", "bytes", "mtime"):
                digest.update(piece[column].to_numpy().tobytes())
            name = f"{weights.backbone}-{fit}-{folder}-{part:03d}-{digest.hexdigest()[:12]}.npz"
            chunks.append(Chunk(name, piece["article_id"].to_numpy(), piece["path"].to_list()))
    return chunks


def write_chunk(path: Path, article_ids: np.ndarray, features: np.ndarray, ok: np.ndarray,
                errors: list[str], runtime: str) -> None:
    """One chunk, atomically: embedded ids + float16 features, the ids that failed with why, and the runtime
    that embedded them (backbones.Runtime.label, e.g. onnxruntime-float32)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, article_ids=article_ids[ok].astype(np.int32),
                     features=features[ok].astype(np.float16),
                     failed_ids=article_ids[~ok].astype(np.int32),
                     failed_errors=np.array([e for e, good in zip(errors, ok) if not good], dtype=str),
                     runtime=np.array(runtime))


def read_chunk(path: Path, dim: int) -> dict:
    """The arrays of one chunk; ValueError when the file is truncated, damaged or not a chunk.

    Chunks written before runtimes were recorded hold their torch precision instead: torch-<precision>.
    """
    keys = ("article_ids", "features", "failed_ids", "failed_errors")
    try:
        with np.load(path, allow_pickle=False) as part:
            arrays = {key: part[key] for key in keys}  # reading every array checks every CRC
            arrays["runtime"] = (str(part["runtime"]) if "runtime" in part.files else
                                 "+".join(f"torch-{p}" for p in str(part["precision"]).split("+")))
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, KeyError, ...: all mean "damaged"
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if (arrays["features"].shape != (arrays["article_ids"].shape[0], dim)
            or arrays["failed_ids"].shape != arrays["failed_errors"].shape):
        raise ValueError(f"arrays of inconsistent shapes {arrays['features'].shape}, {arrays['article_ids'].shape}")
    return arrays


def set_aside_damaged(chunk_dir: Path, names: list[str], dim: int) -> list[str]:
    """Check the plan's chunks on disk; a damaged one is renamed to *.damaged (so it is redone) and reported."""
    damaged = []
    for name in names:
        path = chunk_dir / name
        if not path.exists():
            continue
        try:
            read_chunk(path, dim)
        except ValueError as exc:
            os.replace(path, path.with_name(path.name + ".damaged"))  # kept for a look, out of the way
            damaged.append(f"{name} ({exc})")
    return damaged


def superseded_chunks(chunk_dir: Path, plan_names: list[str]) -> list[Path]:
    """Chunk files the plan replaces: same backbone, fit and folder as a planned chunk, but other images."""
    keep = set(plan_names)
    # name = backbone-fit-folder-part-digest.npz: chunks of another backbone or fit are kept, so
    # switching back costs nothing.
    covered = {name.rsplit("-", 2)[0] for name in plan_names}
    return sorted(p for p in chunk_dir.glob("*.npz") if p.name not in keep and p.name.rsplit("-", 2)[0] in covered)


def previous_images_dir(artifacts: art.Artifacts) -> Path | None:
    """The images folder the data dir's chunks or features were last made from, if any."""
    for path in (artifacts.visual_plan, artifacts.visual_meta):
        try:
            return Path(json.loads(path.read_text())["images_dir"]).resolve()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def check_images_dir(artifacts: art.Artifacts, plan_names: list[str], replace: bool) -> None:
    """Refuse to embed another images folder over chunks that its merge would delete, unless told to."""
    before = previous_images_dir(artifacts)
    if before is None or before == artifacts.images_dir.resolve() or replace:
        return
    doomed = superseded_chunks(artifacts.visual_chunks_dir, plan_names)
    if doomed:
        raise UserError(
            f"{artifacts.visual_dir} holds the embeddings of {before}, and embedding "
            f"{artifacts.images_dir.resolve()} there would delete {len(doomed)} of its chunk files: "
            f"give this images folder its own --data-dir, or pass --replace-features to discard them deliberately")


def articles_signature(artifacts: art.Artifacts) -> str:
    """Size and mtime of articles.parquet: its ids decide the `missing` list in the metadata."""
    path = artifacts.articles
    if not path.exists():
        return "none"
    st = path.stat()
    return f"{st.st_size}:{int(st.st_mtime)}"


def plan_fingerprint(plan: dict, artifacts: art.Artifacts) -> str:
    """What the final outputs were made from: every chunk name plus the articles file."""
    text = "|".join(plan["chunks"]) + "|" + articles_signature(artifacts)
    return hashlib.sha1(text.encode()).hexdigest()


def outputs_current(artifacts: art.Artifacts, fingerprint: str) -> bool:
    """True when features, ids and metadata exist, agree in length and match the fingerprint."""
    try:
        meta = json.loads(artifacts.visual_meta.read_text())
        rows = np.load(artifacts.visual_features, mmap_mode="r").shape[0]
        ids = np.load(artifacts.visual_article_ids, mmap_mode="r").shape[0]
    except (OSError, ValueError):
        return False
    try:  # the manifest too: a catalogue changed since (data_optim.py) means merging again, not embedding
        files.require_fresh(artifacts.manifest("visual_features.py"), "", artifacts.data_dir)
    except (UserError, OSError, ValueError, KeyError):
        return False
    return meta.get("fingerprint") == fingerprint and rows == ids == meta.get("count")


def merge_chunks(artifacts: art.Artifacts, show_progress: bool = True) -> dict:
    """Combine the chunks of the last plan into the three outputs; UserError names missing or damaged chunks."""
    rerun = artifacts.command("visual_features.py")
    path = artifacts.visual_plan
    if not path.exists():
        raise UserError(f"{path} not found: run `{rerun}` first")
    plan = json.loads(path.read_text())
    chunk_dir = artifacts.visual_chunks_dir
    absent = [name for name in plan["chunks"] if not (chunk_dir / name).exists()]
    if absent:
        raise UserError(f"{len(absent)} of {len(plan['chunks'])} chunks are not embedded yet: run `{rerun}`")
    fingerprint = plan_fingerprint(plan, artifacts)
    ids, features, failed, errors, runtimes = [], [], [], [], set()
    for name in tqdm(plan["chunks"], desc="merge", unit="chunk", disable=not show_progress):
        try:
            part = read_chunk(chunk_dir / name, plan["dim"])
        except ValueError as exc:
            raise UserError(f"chunk {chunk_dir / name} is damaged ({exc}): run `{rerun}`, "
                            f"which sets it aside and embeds its images again") from None
        ids.append(part["article_ids"])
        features.append(part["features"])
        failed.append(part["failed_ids"])
        errors.extend(part["failed_errors"].tolist())
        runtimes.update(part["runtime"].split("+"))
    ids = np.concatenate(ids).astype(np.int32)
    features = np.concatenate(features).astype(np.float16).reshape(-1, plan["dim"])
    failed = np.concatenate(failed).astype(np.int32)
    order = np.argsort(ids, kind="stable")  # chunks run folder by folder; ids are ascending anyway
    ids, features = ids[order], features[order]

    missing = []
    if artifacts.articles.exists():
        known = pl.read_parquet(artifacts.articles, columns=["article_id"])["article_id"]
        found = np.concatenate([ids, failed])
        missing = sorted(set(known.to_list()) - set(found.tolist()))
    meta = {
        "backbone": plan["backbone"],
        "weights": plan["weights"],
        "runtime": sorted(runtimes),  # how the vectors were computed, e.g. onnxruntime-float32
        "input_size": INPUT_SIZE,
        "fit": plan["fit"],
        "preprocess": FITS[plan["fit"]],
        "mean": MEAN,
        "std": STD,
        "dim": plan["dim"],
        "dtype": "float16",
        "count": int(ids.shape[0]),
        "images_found": plan["images"],
        "ignored_files": plan["ignored_files"],
        "images_dir": plan["images_dir"],
        "articles_file": artifacts.articles.exists(),
        "missing_article_ids": missing,
        "unreadable": [{"article_id": int(a), "error": e} for a, e in zip(failed.tolist(), errors)],
        "chunks": len(plan["chunks"]),
        "fingerprint": fingerprint,
    }
    # The three appear together with visual/manifest.json (what they were checked against: the catalogue),
    # which every reader checks; a crash before it leaves the previous set, and the next run merges again.
    catalogue = [artifacts.articles] if artifacts.articles.exists() else []
    with files.atomic_outputs(artifacts.manifest("visual_features.py"), catalogue, rerun, artifacts.data_dir) as out:
        save_npy(features, out(artifacts.visual_features))
        save_npy(ids, out(artifacts.visual_article_ids))
        write_json(meta, out(artifacts.visual_meta))
    for stale in superseded_chunks(chunk_dir, plan["chunks"]):
        stale.unlink()  # chunks of images that changed since: never merged again
    return meta


class ChunkWriter:
    """Collects embedded rows in any order and writes each chunk as soon as all of its images are in."""

    def __init__(self, chunks: list[Chunk], chunk_dir: Path, dim: int):
        self.chunks, self.chunk_dir, self.dim = chunks, chunk_dir, dim
        self.open = {}  # chunk index -> rows received so far
        self.written = 0
        self.embedded = 0

    def add(self, chunk: np.ndarray, position: np.ndarray, features: np.ndarray, ok: np.ndarray,
            errors: list[str], runtime: str) -> None:
        """Rows (chunk index, position in the chunk) with their features, success flag, error text, and the
        label of the runtime that embedded them."""
        errors = np.asarray(errors, dtype=object)
        for index in np.unique(chunk).tolist():
            rows = chunk == index
            target = self.chunks[index]
            n = len(target.paths)
            part = self.open.setdefault(index, {"features": np.zeros((n, self.dim), np.float32),
                                                "ok": np.zeros(n, bool), "errors": np.full(n, "", dtype=object),
                                                "filled": 0, "runtime": set()})
            where = position[rows]
            part["features"][where] = features[rows]
            part["ok"][where] = ok[rows]
            part["errors"][where] = errors[rows]
            part["filled"] += int(rows.sum())
            part["runtime"].add(runtime)
            if part["filled"] == n:
                write_chunk(self.chunk_dir / target.name, target.article_ids, part["features"], part["ok"],
                            part["errors"].tolist(), "+".join(sorted(part["runtime"])))
                self.written += 1
                self.embedded += int(part["ok"].sum())
                del self.open[index]


def work_rows(todo: list[Chunk]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(chunk index, position in chunk, path) of every image to embed, in chunk order."""
    sizes = [len(c.paths) for c in todo]
    chunk = np.repeat(np.arange(len(todo)), sizes)
    position = np.concatenate([np.arange(n) for n in sizes]) if todo else np.zeros(0, int)
    return chunk, position, [p for c in todo for p in c.paths]
