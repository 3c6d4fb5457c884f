"""Reading product photos: the image files under an images folder, and one photo as the network's square input.

Pure PIL and numpy (no torch), shared by the embedding engines and search.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageOps

from fde.errors import UserError

INPUT_SIZE = 224             # the networks' ImageNet resolution
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
# A search photo larger than this is refused unless it is a JPEG (decoded at 1/8 scale in draft mode):
# a 100 MP PNG costs ~300 MB and seconds to decode.
MAX_PHOTO_PIXELS = 60_000_000


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


def as_rgb(im: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """An opened photo decoded as RGB: JPEGs at the smallest DCT scale still >= size, transparency on white."""
    # JPEG decodes at 1/2, 1/4 or 1/8 scale straight from the DCT: a 1166x1750 packshot comes
    # out at 292x438, about 10x less decoding work than full size and still sharper than 224
    # on both sides, so every fit can still take its short side to 224.
    im.draft("RGB", (size, size))
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")  # decodes now: a truncated or corrupt file raises here


def fit_pixels(im: Image.Image, size: int = INPUT_SIZE, fit: str = DEFAULT_FIT) -> np.ndarray:
    """size x size x 3 uint8 of an RGB photo, fitted into the square as FITS describes."""
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


def load_image(path, size: int = INPUT_SIZE, fit: str = DEFAULT_FIT) -> np.ndarray:
    """size x size x 3 uint8 of one catalogue photo, fitted into the square as FITS describes (pad: nothing cropped)."""
    with Image.open(path) as im:
        im = as_rgb(im, size)
    return fit_pixels(im, size, fit)


def load_photo(source, size: int = INPUT_SIZE, fit: str = DEFAULT_FIT, name: str = "the photo") -> np.ndarray:
    """A user's photo (a path, bytes or a file object) as the network's input, or a UserError saying why not.

    The catalogue's decoding and fit (as_rgb, fit_pixels), plus what a photo from a phone or an editor
    needs: its EXIF rotation applied, 16-bit greyscale scaled to 8 bits, CMYK converted, and a size limit
    (MAX_PHOTO_PIXELS) that a JPEG meets cheaply in draft mode and any other format must respect.
    """
    if isinstance(source, bytes | bytearray):
        if not source:
            raise UserError(f"{name} is an empty file (0 bytes): choose a JPEG or PNG photo")
        source = io.BytesIO(source)
    elif isinstance(source, str | Path):
        path = Path(source)
        where = name if name == str(source) else f"{name} ({path})"
        if not path.is_file():
            raise UserError(f"{where} not found: give the path of a JPEG or PNG photo")
        if path.stat().st_size == 0:
            raise UserError(f"{where} is an empty file (0 bytes): choose a JPEG or PNG photo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                pixels = im.width * im.height
                if pixels > MAX_PHOTO_PIXELS and im.format != "JPEG":
                    raise UserError(f"{name} is {im.width}x{im.height} ({pixels / 1e6:.0f} megapixels), more "
                                    f"than {MAX_PHOTO_PIXELS / 1e6:.0f} for a {im.format} image: shrink it or "
                                    f"save it as JPEG")
                im.draft("RGB", (size, size))  # before anything else decodes it
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale (PNG): keep the top 8 bits
                    im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
                im = as_rgb(im, size)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"{name} is too large to decode safely ({exc}): shrink it") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{name} is not an image PIL can read: choose a JPEG or PNG photo") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{name} could not be decoded, it may be truncated or damaged ({exc}): "
                        f"save it again or choose another photo") from None
    return fit_pixels(im, size, fit)


def decode(path: str, size: int = INPUT_SIZE, fit: str = DEFAULT_FIT) -> tuple[np.ndarray, bool, str]:
    """(pixels, ok, error) of one image; a corrupt, truncated or unreadable file gives zeros and why, never a raise."""
    try:
        return load_image(path, size, fit), True, ""
    except Exception as exc:
        return np.zeros((size, size, 3), dtype=np.uint8), False, f"{type(exc).__name__}: {exc}"
