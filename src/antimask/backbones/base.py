"""The frozen base every backbone shares, its errors, and the table backbones register themselves in.

A backbone turns aligned faces (float [0, 1] RGB, B x 3 x H x W, any size) into (B, D) float32
features; it is never trained, so ``train()`` leaves it in eval mode and no parameter needs a grad.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from antimask.errors import AntimaskError
from antimask.faces.images import to_float
from antimask.files import file_digest


class BackboneError(AntimaskError, RuntimeError):
    """A backbone that cannot be built: unknown name, bad option, or unusable weights."""


class WeightsError(BackboneError):
    """A weights file that is missing or does not match the architecture; the message names both."""


class FrozenBackbone(nn.Module):
    """Base of every backbone: frozen, always in eval mode, with its preprocessing attached.

    Subclasses set ``name``, ``feature_dim``, ``input_size``, ``differentiable``, ``weights_hash``
    and implement ``normalize`` (on a batch already resized to ``input_size``) and ``features``.
    ``torch_network`` says whether it runs in torch (and so may move to a GPU); ``bf16`` whether its
    features stay good under bf16 autocast, which ``features_of`` uses on a GPU only.
    """

    name: str = ""
    feature_dim: int = 0
    input_size: int = 224
    differentiable: bool = True
    weights_hash: str = ""
    torch_network: bool = True
    bf16: bool = False

    @property
    def options(self) -> dict[str, Any]:
        """Settings that change the features (part of the feature cache key)."""
        return {}

    def freeze(self) -> "FrozenBackbone":
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        return super().train(False)  # frozen: dropout and batch-norm statistics never change

    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Float [0, 1] RGB (B, 3, H, W) -> what the network eats: resized to ``input_size``, normalized."""
        check_faces(x)
        x = x.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return self.normalize(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(x)).float()

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, feature_dim={self.feature_dim}, input_size={self.input_size}, "
                f"differentiable={self.differentiable}, weights_hash={self.weights_hash[:12]!r}")


def training_device(accelerator: str) -> torch.device:
    """Where the frozen backbones run for ``trainer.accelerator``: the GPU when it says gpu, cuda or auto and
    CUDA is present (auto also takes Apple's mps), else the CPU; gpu or cuda without CUDA says so in one line."""
    name = str(accelerator).lower()
    if name in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    if name in ("mps", "auto") and torch.backends.mps.is_available():
        return torch.device("mps")
    if name in ("gpu", "cuda", "mps"):
        print(f"[backbones] trainer.accelerator={accelerator} but no such device is present: "
              "the frozen backbones run on the CPU")
    return torch.device("cpu")


def to_training_device(backbone: "FrozenBackbone", accelerator: str) -> "FrozenBackbone":
    """``backbone`` moved to ``training_device(accelerator)`` (NHWC weights on a GPU, which suit its
    convolutions' tensor cores); one outside torch (dlib) stays on the CPU."""
    if not backbone.torch_network:
        return backbone
    device = training_device(accelerator)
    if device.type == "cuda":
        return backbone.to(device, memory_format=torch.channels_last)
    return backbone.to(device)


def features_of(backbone: "FrozenBackbone", faces: np.ndarray) -> np.ndarray:
    """(B, D) float32 features of uint8 faces (B, S, S, 3), computed on the backbone's device; under bf16
    autocast there when it is a GPU and the backbone allows it (``bf16``), in float32 everywhere else."""
    device = backbone.device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                         enabled=device.type == "cuda" and backbone.bf16):
        return backbone(to_float(faces, device)).float().cpu().numpy()


def check_faces(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"a backbone takes float [0, 1] RGB faces shaped (B, 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"a backbone takes float [0, 1] faces, got dtype {x.dtype} (divide uint8 by 255)")


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a weights file (memoised per path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


_REGISTRY: dict[str, Callable[..., FrozenBackbone]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator: ``@register_backbone("vggface")`` on a factory ``fn(weights=None, **kwargs)``."""

    def wrap(fn: Callable[..., FrozenBackbone]) -> Callable[..., FrozenBackbone]:
        _REGISTRY[name] = fn
        return fn

    return wrap
