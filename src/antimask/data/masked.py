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

from antimask.data.datamodule import FaceDataModule, FaceDataset, SeededTransform, colour_jitter
from antimask.data.row_masks import RowMasks, mask_styles
from antimask.faces.images import to_chw
from antimask.faces.negatives import not_a_face

__all__ = ["MaskedFaceDataModule", "MaskedFaceDataset", "mask_styles", "segmenter_transform"]


def segmenter_transform(cfg: DictConfig) -> SeededTransform:
    """The segmenter's train-time pipeline (masks.augment), on the masked crop and its region alike: the crop moved
    a little, as a real alignment misses, then a camera: colour, blur or lower resolution, JPEG, noise."""
    import albumentations as A
    import cv2

    m, d = cfg.masks, cfg.data
    p, shift, sigma = float(m.augment_p), float(m.shift), float(m.blur_sigma_max)
    return SeededTransform(A.Compose([
        A.Affine(scale=(1 - shift, 1 + shift), translate_percent=(-shift, shift), rotate=(-m.rotate, m.rotate),
                 border_mode=cv2.BORDER_REPLICATE, p=p),  # predict's alignment pads with the edge pixels too
        colour_jitter(cfg, p),
        A.OneOf([A.GaussianBlur(blur_limit=0, sigma_limit=(0.3, sigma)),
                 A.Downscale(scale_range=(float(m.downscale_min), 0.8))], p=p),
        A.ImageCompression(quality_range=(int(m.jpeg_quality_min), 95), p=p),
        A.GaussNoise(std_range=(0.0, float(d.noise_std_max)), p=p / 2),
    ]))


class MaskedFaceDataset(Dataset):
    """A FaceDataset's faces with a mask drawn on each: ``masked`` and ``face`` uint8 (3, S, S), ``region`` bool
    (1, S, S), ``landmarks``, ``row`` and the mask's family as ``style`` ('' when bare); the datamodule's
    ``on_after_batch_transfer`` makes faces float and the region float 0/1 on the device.

    With ``negative_p`` > 0 that share of the rows are crops that are not faces (``faces.negatives.not_a_face`` of
    the masked face) with an empty region; ``is_face`` says which (1 face, 0 not).

    The mask, and whether a row is a non-face crop, depend only on (seed, store row), never on the epoch or worker;
    ``camera`` (``segmenter_transform``, train split) then moves and degrades each crop anew, with its region.
    """

    def __init__(self, faces: FaceDataset, styles: Sequence[str], p: float, seed: int,
                 height_range: Sequence[float], negative_p: float = 0.0, camera: Optional[SeededTransform] = None):
        self.faces = faces
        self.masks = RowMasks(styles, p, seed, height_range)
        self.augment = self.masks.augment
        self.negative_p = float(negative_p)
        self.camera = camera

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
        if self.camera is not None:
            seen = self.camera(image=np.ascontiguousarray(out["masked"].numpy().transpose(1, 2, 0)),
                               mask=out["region"][0].numpy().astype(np.uint8))
            out.update(masked=to_chw(seen["image"]), region=torch.from_numpy(seen["mask"][None] > 0))
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
                                 m.p, m.seed, m.height_range, m.negative_p if m.face_weight > 0 else 0.0,
                                 camera=segmenter_transform(self.cfg) if train and m.augment else None)
