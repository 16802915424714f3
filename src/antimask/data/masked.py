"""Store faces with a synthetic mask drawn on each: (masked face, mask region) pairs for the mask segmenter.

Train rows get the training mask families, val and test rows only the held-out ones (``masks.held_out_styles``),
so validation measures masks never seen in training; each row's mask is drawn from (masks.seed, row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from omegaconf import DictConfig
from torch.utils.data import Dataset

from antimask.data.datamodule import FaceDataModule, FaceDataset
from antimask.data.row_masks import RowMasks, mask_styles

__all__ = ["MaskedFaceDataModule", "MaskedFaceDataset", "mask_styles"]


class MaskedFaceDataset(Dataset):
    """A FaceDataset's faces with a mask drawn on each: ``masked`` (3, S, S) and ``face`` float in [0, 1],
    ``region`` (1, S, S) float 0/1, ``landmarks``, ``row`` and the mask's family as ``style`` ('' when bare).

    The mask depends only on (seed, store row), never on the epoch or the worker.
    """

    def __init__(self, faces: FaceDataset, styles: Sequence[str], p: float, seed: int,
                 height_range: Sequence[float]):
        self.faces = faces
        self.masks = RowMasks(styles, p, seed, height_range)
        self.augment = self.masks.augment

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> dict:
        item = self.faces[index]
        row = int(item["row"])
        drawn = self.masks(item["face"], item["landmarks"], row)
        return {"masked": drawn["masked"], "region": drawn["region"], "face": item["face"],
                "landmarks": item["landmarks"], "row": row, "style": drawn["style"]}


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
