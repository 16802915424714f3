"""A small U-Net that marks the pixels a face mask covers: aligned face (B, 3, S, S) in [0, 1] -> logits (B, 1, S, S),
and (``face_head``) one logit per crop from its deepest level: whether the aligned crop is a face at all."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class MaskSegmenter(nn.Module):
    """``depth`` levels of two 3x3 convs, widths width, 2*width, ...; each level below the first sees the
    face at half the size of the one above, and the decoder climbs back with the skip connections. With
    ``face_head`` a linear layer on the deepest level's mean says whether the crop is a face (``classify``)."""

    def __init__(self, width: int, depth: int, face_head: bool = False):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"MaskSegmenter needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        widths = [width * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList([_double_conv(3, widths[0])]
                                  + [_double_conv(a, b) for a, b in zip(widths, widths[1:])])
        self.up = nn.ModuleList([_double_conv(widths[i + 1] + widths[i], widths[i]) for i in range(depth - 1)])
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.face_head = nn.Linear(widths[-1], 1) if face_head else None

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        return self.both(face)[0]

    def classify(self, face: torch.Tensor) -> torch.Tensor:
        """(B,) logits that each crop is a face; only the encoder half runs."""
        if self.face_head is None:
            raise RuntimeError("this segmenter has no face head (trained before masks.face_weight existed, or with 0)")
        return self._face_logit(self._encode(face)[-1])

    def both(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask logits (B, 1, S, S), face logits (B,) or None without a face head)."""
        skips = self._encode(face)
        x = skips[-1]
        face_logit = None if self.face_head is None else self._face_logit(x)
        for i in reversed(range(len(self.up))):
            skip = skips[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skip], 1))
        return self.head(x), face_logit

    def _face_logit(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.face_head(deepest.mean((2, 3))).squeeze(1)

    def _encode(self, face: torch.Tensor) -> list[torch.Tensor]:
        x = face * 2 - 1  # centred input: the BatchNorm after the first conv then starts near its fixed point
        skips = []
        for i, block in enumerate(self.down):
            if i:
                # ceil_mode: sizes that are not a power of two keep their last row and column
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        return skips
