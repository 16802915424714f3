"""The drawing networks: identity features -> (shared layer) -> face texture and landmarks.

The texture decoder follows the paper: a fully connected layer fills a coarse grid of
``channels x ceil(H/2**n) x ceil(W/2**n)`` that ``n`` stride-2 transposed convolutions grow to the
output size (14x14x256 -> 224x224 for the whole face); sizes that 2**n does not divide are cropped.
Each doubling may instead be a convolution and a pixel shuffle, or a nearest resize and a convolution
(``UPSAMPLES``): the same shapes, without the transposed convolution's slow kernel.
"""

from __future__ import annotations

import math
from typing import Optional, get_args

import torch
import torch.nn.functional as F
from torch import nn

from antimask.config import UpsampleKind
from antimask.faces.compositing import hide_region
from antimask.models.components.warp import tps_warp

# Channels never shrink below this while the grid grows (keeps the last layers expressive).
_MIN_CHANNELS = 16
# How a layer of the texture decoder doubles its grid (model.upsample).
UPSAMPLES = get_args(UpsampleKind)


def upsample_layer(c_in: int, c_out: int, kind: str, bias: bool) -> nn.Module:
    """(B, c_in, h, w) -> (B, c_out, 2h, 2w): the paper's 4x4 stride-2 transposed convolution, a 3x3
    convolution to 4 x c_out channels rearranged by PixelShuffle(2), or a nearest 2x resize then a 3x3 convolution."""
    if kind == "transpose":
        return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=bias)
    if kind == "pixel_shuffle":
        return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 3, padding=1, bias=bias), nn.PixelShuffle(2))
    if kind == "resize_conv":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))
    raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}, got '{kind}'")


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
    """Fully connected grid, then ``upsample`` layers (BN/ReLU) to an (H, W) RGB image in [0, 1]."""

    def __init__(self, in_dim: int, height: int, width: int, channels: int, upsamplings: int, upsample: str):
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
            layers.append(upsample_layer(c, out, upsample, bias=last))
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

    def __init__(self, feature_dim: int, height: int, width: int, num_landmarks: int, shared_dim: int,
                 channels: int, upsamplings: int, upsample: str, landmark_sigmoid: bool = True):
        super().__init__()
        self.shared: Optional[SharedLayer] = SharedLayer(feature_dim, shared_dim) if shared_dim > 0 else None
        trunk_dim = shared_dim if shared_dim > 0 else feature_dim
        self.landmarks: Optional[LandmarkHead] = (
            LandmarkHead(trunk_dim, num_landmarks, landmark_sigmoid) if num_landmarks > 0 else None)
        self.texture = TextureDecoder(trunk_dim, height, width, channels, upsamplings, upsample)
        self.warp: Optional[nn.Module] = None  # a LandmarkWarp: the texture follows the predicted landmarks

    def trunk(self, features: torch.Tensor) -> torch.Tensor:
        return self.shared(features) if self.shared is not None else features

    def draw(self, features: torch.Tensor, upper: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Only the image (what inference needs); ``upper`` is ignored (the paper's decoder sees features only)."""
        if self.warp is not None:
            return self.forward(features)[0]
        return self.texture(self.trunk(features))

    def forward(self, features: torch.Tensor, upper: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        h = self.trunk(features)
        points = self.landmarks(h) if self.landmarks is not None else None
        image = self.texture(h)
        if self.warp is not None:
            image = self.warp(image, points)
        return image, points


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class AppearanceDecoder(nn.Module):
    """Identity features + the visible upper crop -> the lower band (B,3,S-R,S) and optional landmarks.

    The upper crop sits on an (S, S) canvas (rows below the split are zero; a fourth channel marks the
    real rows). A U-Net encodes the canvas in ``levels`` stride-2 steps; at the bottleneck the shared
    layer's identity code fills a grid beside it; the decoder grows it back with a skip connection at
    every level, so skin tone, light and background of the visible rows reach the drawn band.
    ``code_every_level`` also lets the code scale and shift every decoder level's channels (FiLM, starting
    at the identity), so the drawn band can follow the code rather than only the visible rows.
    Canvases that 2**levels does not divide are zero-padded at the bottom right and cropped after.
    """

    def __init__(self, feature_dim: int, image_size: int, split_row: int, num_landmarks: int,
                 shared_dim: int, channels: int, levels: int, code_every_level: bool, landmark_sigmoid: bool = True):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        self.image_size, self.split_row, self.levels = image_size, split_row, levels
        self.padded = math.ceil(image_size / 2 ** levels) * 2 ** levels
        self.shared: Optional[SharedLayer] = SharedLayer(feature_dim, shared_dim) if shared_dim > 0 else None
        trunk_dim = shared_dim if shared_dim > 0 else feature_dim
        self.landmarks: Optional[LandmarkHead] = (
            LandmarkHead(trunk_dim, num_landmarks, landmark_sigmoid) if num_landmarks > 0 else None)
        widths = [max(channels // 2 ** (levels - 1 - i), _MIN_CHANNELS) for i in range(levels)]
        self.down = nn.ModuleList(_conv_block(c_in, c, stride=2) for c_in, c in zip([4] + widths[:-1], widths))
        grid = self.padded // 2 ** levels
        self.code_channels = widths[-1] // 2
        self.code = nn.Linear(trunk_dim, self.code_channels * grid * grid)
        self.bottleneck = _conv_block(widths[-1] + self.code_channels, widths[-1])
        self.up = nn.ModuleList(_conv_block(widths[i] + widths[i - 1], widths[i - 1]) for i in range(levels - 1, 0, -1))
        self.film: Optional[nn.ModuleList] = None
        if code_every_level:  # per level: the code -> (scale, shift) of its channels, zero-initialised
            self.film = nn.ModuleList(nn.Linear(trunk_dim, 2 * c) for c in [widths[-1]] + widths[-2::-1])
            for layer in self.film:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.out = nn.Sequential(nn.Conv2d(widths[0] + 4, widths[0], 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(widths[0], 3, 1))
        self.warp: Optional[nn.Module] = None  # a LandmarkWarp: the texture follows the predicted landmarks

    def trunk(self, features: torch.Tensor) -> torch.Tensor:
        return self.shared(features) if self.shared is not None else features

    def canvas(self, upper: torch.Tensor) -> torch.Tensor:
        """(B,3,R,S) visible rows -> (B,4,P,P): RGB with zeros below the split, and the visibility mask."""
        b, _, r, s = upper.shape
        if (r, s) != (self.split_row, self.image_size):
            raise ValueError(f"upper crop is {r}x{s}, this decoder takes {self.split_row}x{self.image_size}")
        x = upper.new_zeros(b, 4, self.padded, self.padded)
        x[:, :3, :r, :s] = upper
        x[:, 3, :r, :s] = 1.0
        return x

    def texture(self, h: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.unet(h, self.canvas(upper))[:, :, self.split_row:self.image_size, :self.image_size])

    def unet(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Trunk code h and a (B,4,P,P) canvas -> (B,3,P,P) logits over the whole padded canvas."""
        skips, y = [], x
        for block in self.down:
            y = block(y)
            skips.append(y)
        g = self.padded // 2 ** self.levels
        code = torch.relu(self.code(h)).view(h.shape[0], self.code_channels, g, g)
        y = self._modulate(self.bottleneck(torch.cat([skips[-1], code], 1)), h, 0)
        for i, (block, skip) in enumerate(zip(self.up, reversed(skips[:-1])), 1):
            y = self._modulate(block(torch.cat([F.interpolate(y, scale_factor=2, mode="nearest"), skip], 1)), h, i)
        return self.out(torch.cat([F.interpolate(y, scale_factor=2, mode="nearest"), x], 1))

    def _modulate(self, y: torch.Tensor, h: torch.Tensor, level: int) -> torch.Tensor:
        if self.film is None:
            return y
        scale, shift = self.film[level](h)[:, :, None, None].chunk(2, dim=1)
        return y * (1 + scale) + shift

    def draw(self, features: torch.Tensor, upper: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.warp is not None:
            return self.forward(features, upper)[0]
        if upper is None:
            raise ValueError("the appearance decoder draws from the features and the upper crop; pass upper=")
        return self.texture(self.trunk(features), upper)

    def forward(self, features: torch.Tensor, upper: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if upper is None:
            raise ValueError("the appearance decoder draws from the features and the upper crop; pass upper=")
        h = self.trunk(features)
        points = self.landmarks(h) if self.landmarks is not None else None
        image = self.texture(h, upper)
        if self.warp is not None:
            image = self.warp(image, points)
        return image, points


class MaskAwareDecoder(AppearanceDecoder):
    """Identity features + a masked face and its redraw alpha -> the whole face (B,3,S,S) and optional landmarks.

    The same U-Net as ``AppearanceDecoder`` (same layers, same state dict names), but its canvas is the whole
    masked face with the redraw region blanked (``hide_region``) and 1 - alpha as the fourth channel, so it
    draws where a mask is rather than below a fixed row and sees every real pixel the mask leaves.
    """

    def __init__(self, feature_dim: int, image_size: int, num_landmarks: int, shared_dim: int, channels: int,
                 levels: int, code_every_level: bool, landmark_sigmoid: bool = True):
        super().__init__(feature_dim, image_size, 0, num_landmarks, shared_dim, channels, levels, code_every_level,
                         landmark_sigmoid)

    def canvas(self, masked: torch.Tensor, redraw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B,3,S,S) masked faces and (B,1,S,S) redraw alpha -> (B,4,P,P): visible RGB and visibility."""
        if redraw is None:
            raise ValueError("the mask-aware decoder draws from the masked face and its redraw region; pass redraw=")
        b, _, h, w = masked.shape
        if (h, w) != (self.image_size, self.image_size) or tuple(redraw.shape[-3:]) != (1, h, w):
            raise ValueError(f"masked face {h}x{w} and redraw {tuple(redraw.shape[-3:])}: this decoder takes "
                             f"{self.image_size}x{self.image_size} faces and a (1, {self.image_size}, "
                             f"{self.image_size}) redraw alpha")
        x = masked.new_zeros(b, 4, self.padded, self.padded)
        x[:, :3, :h, :w] = hide_region(masked, redraw)
        x[:, 3:, :h, :w] = 1 - redraw  # how visible each pixel is, as the appearance decoder's mask channel
        return x

    def texture(self, h: torch.Tensor, masked: torch.Tensor, redraw: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.image_size
        return torch.sigmoid(self.unet(h, self.canvas(masked, redraw))[:, :, :s, :s])

    def draw(self, features: torch.Tensor, masked: Optional[torch.Tensor] = None,
             redraw: Optional[torch.Tensor] = None) -> torch.Tensor:
        if masked is None:
            raise ValueError("the mask-aware decoder draws from the features and the masked face; pass masked=")
        return self.texture(self.trunk(features), masked, redraw)

    def forward(self, features: torch.Tensor, masked: Optional[torch.Tensor] = None,
                redraw: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if masked is None:
            raise ValueError("the mask-aware decoder draws from the features and the masked face; pass masked=")
        h = self.trunk(features)
        return self.texture(h, masked, redraw), self.landmarks(h) if self.landmarks is not None else None


class LandmarkWarp(nn.Module):
    """Cole et al.'s landmark-guided texture warp for a drawn lower band: a thin-plate spline moves the
    template's lower-face landmarks to the predicted ones, so the texture follows the drawn geometry.

    Points are (x, y) normalised to the whole face, as the landmark head predicts them.
    """

    def __init__(self, image_size: int, split_row: int, template_points: torch.Tensor):
        super().__init__()
        self.image_size, self.split_row = image_size, split_row
        self.register_buffer("template", self.to_band(template_points.float()[None]), persistent=False)

    def to_band(self, points: torch.Tensor) -> torch.Tensor:
        """Whole-face normalised points -> normalised to the lower band (rows split_row..S)."""
        s, r = self.image_size, self.split_row
        return torch.stack([points[..., 0], (points[..., 1] * s - r) / (s - r)], -1)

    def forward(self, band: torch.Tensor, points: Optional[torch.Tensor]) -> torch.Tensor:
        if points is None or points.shape[1] != self.template.shape[1]:
            got = None if points is None else tuple(points.shape)
            raise ValueError(f"the landmark warp needs {self.template.shape[1]} predicted points, got {got}")
        src = self.template.to(band.dtype).expand(band.shape[0], -1, -1)
        return tps_warp(band, src, self.to_band(points.to(band.dtype)))
