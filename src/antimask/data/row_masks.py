"""One synthetic mask per store row, drawn onto a training face: the masked face, the mask region and the
region a completion model redraws; the mask depends only on (masks.seed, row), never on the epoch or worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from antimask.config import ConfigError
from antimask.faces.images import to_chw
from antimask.faces.masks import FAMILIES, MaskAugment, draw_mask, redraw_region


def mask_styles(cfg: DictConfig, split: str) -> tuple[str, ...]:
    """The mask families drawn on ``split``: the held-out ones for val and test, all the others for train."""
    held_out = tuple(cfg.masks.held_out_styles)
    unknown = [s for s in held_out if s not in FAMILIES]
    if unknown:
        raise ConfigError(f"invalid config value for 'masks.held_out_styles': unknown families {unknown}; "
                          f"choose from {', '.join(FAMILIES)}")
    if split != "train":
        return held_out
    train = tuple(name for name in FAMILIES if name not in held_out)
    if not train:
        raise ConfigError("invalid config value for 'masks.held_out_styles': holds out every family, "
                          "which leaves none to train on")
    return train


class RowMasks:
    """``(image, landmarks, row) -> {masked, region[, redraw], style}`` for one uint8 (S, S, 3) face.

    Compact, as batches travel: ``masked`` uint8 (3, S, S), ``region`` bool (1, S, S); with
    ``redraw=(dilate_px, feather_px)`` also ``redraw``, float (1, S, S) in [0, 1] (``faces.masks.redraw_region``;
    feathered, so not uint8); ``style`` is the family's name, '' for a face left bare (masks.p).
    """

    def __init__(self, styles: Sequence[str], p: float, seed: int, height_range: Sequence[float],
                 redraw: Optional[tuple[int, int]] = None):
        self.augment = MaskAugment(styles=tuple(styles), p=float(p), seed=int(seed),
                                   height_range=(float(height_range[0]), float(height_range[1])))
        self.redraw = None if redraw is None else (int(redraw[0]), int(redraw[1]))

    @classmethod
    def from_config(cls, cfg: DictConfig, split: str, styles: Optional[Sequence[str]] = None,
                    redraw: bool = True) -> "RowMasks":
        m = cfg.masks
        return cls(styles or mask_styles(cfg, split), m.p, m.seed, m.height_range,
                   (m.redraw_dilate_px, m.redraw_feather_px) if redraw else None)

    def __call__(self, image: np.ndarray, landmarks: torch.Tensor, row: int) -> dict:
        """``landmarks`` (68, 2) normalised by the face size, as the datasets give them."""
        size = image.shape[0]
        style = self.augment.style(np.random.default_rng((self.augment.seed, int(row))))
        if style is None:
            masked, region = image, np.zeros((size, size), bool)
        else:
            masked, region = draw_mask(image, landmarks.numpy() * size, style)
        out = {"masked": to_chw(masked), "region": torch.from_numpy(region[None]),
               "style": "" if style is None else style.family}
        if self.redraw is not None:
            out["redraw"] = torch.from_numpy(redraw_region(region, *self.redraw)[None])
        return out
