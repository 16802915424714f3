"""PatchGAN discriminator and hinge losses for an adversarial patch loss on the drawn faces."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Spectral-normalised 4x4 stride-2 convs (LeakyReLU 0.2), then a 3x3 conv to per-patch logits (B,1,h,w).

    Widths are width * 2**i capped at 8 * width; each block halves the map (floor), so an input needs
    at least 2**layers rows and columns. The last conv keeps the map size, so that smallest input
    still yields a 1x1 map.
    """

    def __init__(self, width: int, layers: int, in_channels: int = 3):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        self.layers = layers
        blocks: list[nn.Module] = []
        c_in = in_channels
        for i in range(layers):
            c = width * min(2 ** i, 8)
            blocks += [spectral_norm(nn.Conv2d(c_in, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c
        blocks.append(spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smallest = 2 ** self.layers
        if x.dim() != 4 or min(x.shape[-2:]) < smallest:
            raise ValueError(f"expected (B, C, H, W) with H, W >= {smallest}, got {tuple(x.shape)}")
        return self.net(x)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss: mean(relu(1 - real)) + mean(relu(1 + fake))."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: -mean(fake)."""
    return -fake_logits.mean()
