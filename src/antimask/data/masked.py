"""Store faces with a synthetic mask drawn on each: (masked face, mask region) pairs for the mask segmenter.

Train rows get the training mask families, val and test rows only the held-out ones (``masks.held_out_styles``),
so validation measures masks never seen in training; each row's mask is drawn from (masks.seed, row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
from omegaconf import DictConfig
from torch.utils.data import Dataset

from antimask.data.datamodule import FaceDataModule, FaceDataset
from antimask.data.row_masks import RowMasks, mask_styles
from antimask.faces.images import to_chw
from antimask.faces.negatives import not_a_face

__all__ = ["MaskedFaceDataModule", "MaskedFaceDataset", "mask_styles"]


class MaskedFaceDataset(Dataset):
    """A FaceDataset's faces with a mask drawn on each: ``masked`` and ``face`` uint8 (3, S, S), ``region`` bool
    (1, S, S), ``landmarks``, ``row`` and the mask's family as ``style`` ('' when bare); the datamodule's
    ``on_after_batch_transfer`` makes faces float and the region float 0/1 on the device.

    With ``negative_p`` > 0 that share of the rows are crops that are not faces (``faces.negatives.not_a_face`` of
    the masked face) with an empty region; ``is_face`` says which (1 face, 0 not).

    The mask, and whether a row is a non-face crop, depend only on (seed, store row), never on the epoch or worker.
    """

    def __init__(self, faces: FaceDataset, styles: Sequence[str], p: float, seed: int,
                 height_range: Sequence[float], negative_p: float = 0.0):
        self.faces = faces
        self.masks = RowMasks(styles, p, seed, height_range)
        self.augment = self.masks.augment
        self.negative_p = float(negative_p)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> dict:
        item = self.faces[index]
        row = int(item["row"])
        image = np.ascontiguousarray(item["face"].numpy().transpose(1, 2, 0))
        drawn = self.masks(image, item["landmarks"], row)
        out = {"masked": drawn["masked"], "region": drawn["region"], "face": item["face"],
               "landmarks": item["landmarks"], "row": row, "style": drawn["style"], "is_face": 1}
        rng = np.random.default_rng((self.augment.seed, row, 1))  # a stream apart from the mask's
        if self.negative_p > 0 and rng.random() < self.negative_p:
            crop = not_a_face(np.ascontiguousarray(drawn["masked"].numpy().transpose(1, 2, 0)), rng)
            out.update(masked=to_chw(crop), region=drawn["region"].zero_(), is_face=0)
        return out


class MaskedFaceDataModule(FaceDataModule):
    """``FaceDataModule`` whose datasets are ``MaskedFaceDataset``s with each split's families (``mask_styles``);
    ``dataset(..., styles=...)`` draws others, e.g. to score the test faces under the training families."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg, stage="segmenter")  # a stage name that is not the encoder: no photometrics

    def dataset(self, split: str, train: bool = False,
                styles: Optional[Sequence[str]] = None) -> MaskedFaceDataset:  # type: ignore[override]
        m = self.cfg.masks
        return MaskedFaceDataset(super().dataset(split, train), styles or mask_styles(self.cfg, split),
                                 m.p, m.seed, m.height_range, m.negative_p if m.face_weight > 0 else 0.0)
