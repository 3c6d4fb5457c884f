"""Backbones: the pretrained networks (ResNet50, MobileNetV2) in torch, and the runtimes that turn a uint8 batch
into pooled features: torch on a device and precision, or the same network exported once to ONNX and run by
ONNX Runtime on the CPU (about 4x torch's speed on 2 cores; bench_visual.py). Their weights files, the ONNX
file's name and ONNX Runtime itself are in fde.pretrained, which a photo search uses without importing torch.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from fde import pretrained
from fde.errors import UserError
from fde.files import atomic_path
from fde.images import INPUT_SIZE, MEAN, STD
from fde.pretrained import OnnxEmbedder, Weights

# pretrained.NETWORKS (width, weights URL) plus torchvision's weights enum and architecture
BACKBONES = {
    "resnet50": dict(pretrained.NETWORKS["resnet50"], enum=torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
                     build=torchvision.models.resnet50),
    "mobilenet_v2": dict(pretrained.NETWORKS["mobilenet_v2"],
                         enum=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
                         build=torchvision.models.mobilenet_v2),
}


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
ONNX_OPSET = 17  # with pretrained.ONNX_EXPORT, the tag of the export's recipe


def pick_runtime(runtime: str, device: torch.device) -> str:
    """'onnx' or 'torch': auto is ONNX Runtime on a CPU when it is installed, torch on CUDA or MPS."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}: choose {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if device.type == "cpu" and pretrained.onnx_available() else "torch"
    if runtime == "onnx":
        if device.type != "cpu":
            raise UserError(f"--runtime onnx runs on the CPU, not on {device}: use --device cpu, or --runtime torch")
        if not pretrained.onnx_available():
            raise UserError("--runtime onnx needs ONNX Runtime: `pip install onnxruntime onnx` (requirements.txt "
                            "lists them), or use --runtime torch")
    return runtime


def export_onnx(weights: Weights, path: Path) -> Path:
    """The float32 embedder (normalisation included) as ONNX with a free batch size, written atomically."""
    if not pretrained.onnx_available(export=True):
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
    path = pretrained.onnx_path(weights, folder)
    if not path.exists():
        print(f"exporting {weights.backbone} to ONNX once: {path}", flush=True)
        export_onnx(weights, path)
        for old in Path(folder).glob(f"{weights.backbone}-*.onnx"):
            if old != path:
                old.unlink()
    return path


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
