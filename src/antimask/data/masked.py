"""Store faces with a synthetic mask drawn on each: (masked face, mask region) pairs for the mask segmenter.

Train rows get the training mask families, val and test rows only the held-out ones (``masks.held_out_styles``),
so validation measures masks never seen in training; each row's mask is drawn from (masks.seed, row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from antimask.config import ConfigError
from antimask.data.datamodule import FaceDataModule, FaceDataset
from antimask.faces.images import to_float, to_uint8
from antimask.faces.masks import FAMILIES, MaskAugment, draw_mask


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


class MaskedFaceDataset(Dataset):
    """A FaceDataset's faces with a mask drawn on each: ``masked`` (3, S, S) and ``face`` float in [0, 1],
    ``region`` (1, S, S) float 0/1, ``landmarks``, ``row`` and the mask's family as ``style`` ('' when bare).

    The mask depends only on (seed, store row), never on the epoch or the worker.
    """

    def __init__(self, faces: FaceDataset, styles: Sequence[str], p: float, seed: int,
                 height_range: Sequence[float]):
        self.faces = faces
        self.augment = MaskAugment(styles=tuple(styles), p=float(p), seed=int(seed),
                                   height_range=(float(height_range[0]), float(height_range[1])))

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> dict:
        item = self.faces[index]
        face = item["face"]
        row = int(item["row"])
        size = face.shape[-1]
        style = self.augment.style(np.random.default_rng((self.augment.seed, row)))
        if style is None:
            masked, region = item["face"].clone(), torch.zeros(1, size, size)
        else:
            image, region_np = draw_mask(to_uint8(face), item["landmarks"].numpy() * size, style)
            masked, region = to_float(image), torch.from_numpy(region_np[None].astype(np.float32))
        return {"masked": masked, "region": region, "face": face, "landmarks": item["landmarks"], "row": row,
                "style": "" if style is None else style.family}


class MaskedFaceDataModule(FaceDataModule):
    """``FaceDataModule`` whose datasets are ``MaskedFaceDataset``s with each split's families (``mask_styles``);
    ``dataset(..., styles=...)`` draws others, e.g. to score the test faces under the training families."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg, stage="segmenter")  # a stage name that is not the encoder: no photometrics

    def dataset(self, split: str, train: bool = False,
                styles: Optional[Sequence[str]] = None) -> MaskedFaceDataset:  # type: ignore[override]
        m = self.cfg.masks
        return MaskedFaceDataset(super().dataset(split, train), styles or mask_styles(self.cfg, split),
                                 m.p, m.seed, m.height_range)
