"""The upper-face encoder: the visible rows above the mask -> the frozen backbone's feature vector.

Either our small VGG-style net (``vgg``) or any timm architecture (``timm:<name>``, random init unless
local weights are given), always ending in a linear layer to the backbone's feature size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from antimask.files import WeightsFileError, read_state_dict

# Conv blocks (two 3x3 convs + 2x2 max-pool each) of the VGG-style encoder; widths w, 2w, 4w, 8w.
_VGG_BLOCKS = 4


def _vgg_trunk(width: int) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    c_in = 3
    for i in range(_VGG_BLOCKS):
        c = width * 2 ** i
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        # ceil_mode keeps a 1-row map alive for the short upper crops of small faces
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), c_in


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local .safetensors or torch file (never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} not found (model.encoder_weights)")
    try:
        return read_state_dict(path)
    except WeightsFileError as err:
        if err.unreadable:
            raise ValueError(f"encoder weights file {path} refused: not a weights-only state dict (loading it "
                             f"would unpickle arbitrary objects or the file is corrupt: {err})") from None
        raise ValueError(f"encoder weights file {path}: {err}") from None


class UpperEncoder(nn.Module):
    """Upper crop (B,3,R,S) in [0,1] -> (B, feature_dim)."""

    def __init__(self, feature_dim: int, arch: str, width: int, weights: Optional[str] = None):
        super().__init__()
        self.arch = arch
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        if arch == "vgg":
            self.backbone, dim = _vgg_trunk(width)
        elif arch.startswith("timm:"):
            import timm

            self.backbone = timm.create_model(arch[5:], pretrained=False, num_classes=0, in_chans=3)
            dim = self.backbone.num_features
            cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
            mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        else:
            raise ValueError(f"unknown encoder '{arch}': use 'vgg' or 'timm:<model name>'")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Linear(dim, feature_dim)
        if weights:
            self.load_backbone_weights(weights)

    def load_backbone_weights(self, path: str | Path) -> list[str]:
        """Load matching tensors into the backbone; returns the loaded names, raises when none match."""
        state = load_weights_file(path)
        own = self.backbone.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ValueError(f"encoder weights file {path}: none of its {len(state)} tensors match "
                             f"the backbone '{self.arch}' (first key: {next(iter(state), None)})")
        self.backbone.load_state_dict(usable, strict=False)
        return sorted(usable)

    def forward(self, upper: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone((upper - self.mean) / self.std))
