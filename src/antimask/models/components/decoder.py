"""The drawing networks: identity features -> (shared layer) -> face texture and landmarks.

The texture decoder follows the paper: a fully connected layer fills a coarse grid of
``channels x ceil(H/2**n) x ceil(W/2**n)`` that ``n`` stride-2 transposed convolutions grow to the
output size (14x14x256 -> 224x224 for the whole face); sizes that 2**n does not divide are cropped.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

# Channels never shrink below this while the grid grows (keeps the last layers expressive).
_MIN_CHANNELS = 16


def start_grid(height: int, width: int, upsamplings: int) -> tuple[int, int]:
    """The coarse grid the fully connected layer fills for an (height, width) output."""
    scale = 2 ** upsamplings
    return math.ceil(height / scale), math.ceil(width / scale)


class SharedLayer(nn.Module):
    """The paper's shared fully connected layer feeding both the landmark and the texture head."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class LandmarkHead(nn.Module):
    """Linear map to K (x, y) points normalised to [0, 1] of the whole face."""

    def __init__(self, in_dim: int, num_points: int, sigmoid: bool = True):
        super().__init__()
        self.num_points = num_points
        self.fc = nn.Linear(in_dim, num_points * 2)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x).view(x.shape[0], self.num_points, 2)
        return torch.sigmoid(out) if self.sigmoid else out


class TextureDecoder(nn.Module):
    """Fully connected grid, then transposed convolutions (BN/ReLU) to an (H, W) RGB image in [0, 1]."""

    def __init__(self, in_dim: int, height: int, width: int, channels: int = 256, upsamplings: int = 4):
        super().__init__()
        if upsamplings < 1:
            raise ValueError(f"upsamplings must be at least 1, got {upsamplings}")
        self.height, self.width, self.channels = height, width, channels
        self.grid = start_grid(height, width, upsamplings)
        gh, gw = self.grid
        self.fc = nn.Linear(in_dim, channels * gh * gw)
        self.fc_norm = nn.BatchNorm2d(channels)
        layers: list[nn.Module] = []
        c = channels
        for i in range(upsamplings):
            last = i == upsamplings - 1
            out = 3 if last else max(channels // 2 ** (i + 1), _MIN_CHANNELS)
            layers.append(nn.ConvTranspose2d(c, out, kernel_size=4, stride=2, padding=1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gh, gw = self.grid
        grid = torch.relu(self.fc_norm(self.fc(x).view(x.shape[0], self.channels, gh, gw)))
        image = torch.sigmoid(self.convs(grid))
        return image[:, :, : self.height, : self.width]


class Decoder(nn.Module):
    """Features -> optional shared layer -> texture (B,3,H,W) and optional landmarks (B,K,2)."""

    def __init__(self, feature_dim: int, height: int, width: int, num_landmarks: int = 0, shared_dim: int = 0,
                 channels: int = 256, upsamplings: int = 4, landmark_sigmoid: bool = True):
        super().__init__()
        self.shared: Optional[SharedLayer] = SharedLayer(feature_dim, shared_dim) if shared_dim > 0 else None
        trunk_dim = shared_dim if shared_dim > 0 else feature_dim
        self.landmarks: Optional[LandmarkHead] = (
            LandmarkHead(trunk_dim, num_landmarks, landmark_sigmoid) if num_landmarks > 0 else None)
        self.texture = TextureDecoder(trunk_dim, height, width, channels, upsamplings)

    def trunk(self, features: torch.Tensor) -> torch.Tensor:
        return self.shared(features) if self.shared is not None else features

    def draw(self, features: torch.Tensor) -> torch.Tensor:
        """Only the image (what inference needs)."""
        return self.texture(self.trunk(features))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        h = self.trunk(features)
        points = self.landmarks(h) if self.landmarks is not None else None
        return self.texture(h), points
