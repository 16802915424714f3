"""The LightningDataModule of all three training stages: store rows in, face / upper / lower tensors out.

Batches leave the loader compact: ``face`` uint8 (B, 3, S, S), the 68 landmarks normalised by the image size,
optional cached backbone features, the identity index and the store row; with ``model.mask_aware`` (mask decoder
and encoder stages) also a synthetic mask (``data.row_masks``): ``masked`` uint8, ``region`` bool, ``redraw``,
``style``. On the device, ``unpack_batch`` (the datamodule's ``on_after_batch_transfer``) mirrors training
batches (data.flip) and makes what the modules take: ``face`` float in [0, 1], ``upper`` its rows above
``split_row`` and ``lower`` the rest (cat([upper, lower], 2) == face), ``lower_landmarks`` (``LOWER_POINTS``),
``masked`` float and ``region`` float 0/1. With ``data.device_resident`` a split's batches are cut on the
device itself (``data.resident``).

Landmark units: pixel coordinates at the training size S divided by S, so x in [0, 1) whatever S is
and a landmark loss means the same at 64 and at 224. Pixel centres follow dlib (pixel i at i), so the
stored 224 px point x maps to (x + 0.5) * S / 224 - 0.5 at S, which is what INTER_AREA does to the
pixels; multiply by S to draw on the training image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from antimask.config import split_row_for
from antimask.data.resident import ResidentBatches, check_fits, memory_budget, resident_bytes, shard_positions
from antimask.data.resized import cache_path, cache_valid
from antimask.data.row_masks import RowMasks
from antimask.data.store import RowArray, Store, StoreError, open_store, rebuild_hint
from antimask.faces.align import FLIP_PERMUTATION, LOWER_POINTS
from antimask.faces.images import to_chw

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class SeededTransform:
    """An albumentations pipeline seeded once per process from torch's seed (run.seed in the main process;
    distinct per DataLoader worker and epoch): albumentations keeps its own RNG, which seed_everything does not
    reach, and this makes its runs repeat exactly. Called like the pipeline: ``t(image=..., mask=...)``."""

    def __init__(self, transform):
        self.transform = transform
        self._seeded_in: Optional[int] = None  # the process whose torch seed seeded it

    def __call__(self, **data) -> dict:
        pid = os.getpid()
        if self._seeded_in != pid:
            self.transform.set_random_seed(torch.initial_seed() % 2 ** 32)
            self._seeded_in = pid
        return self.transform(**data)


def colour_jitter(cfg: DictConfig, p: float):
    """albumentations' ColorJitter at data.jitter (brightness, contrast and saturation; hue a quarter of it)."""
    import albumentations as A

    j = float(cfg.data.jitter)
    return A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 4, p=p)


def photometric_transform(cfg: DictConfig) -> SeededTransform:
    """The encoder stage's albumentations pipeline: colour jitter, blur, JPEG artefacts, sensor noise."""
    import albumentations as A

    d = cfg.data
    p = float(d.photometric_p)
    return SeededTransform(A.Compose([
        colour_jitter(cfg, p),
        A.GaussianBlur(blur_limit=(3, int(d.blur_max)), p=p),
        A.ImageCompression(quality_range=(int(d.jpeg_quality_min), 95), p=p),
        A.GaussNoise(std_range=(0.0, float(d.noise_std_max)), p=p),
    ]))


class FaceDataset(Dataset):
    """Store rows as compact training samples (see the module docstring for what one sample holds).

    The image arrays are memory maps opened lazily in each process (never pickled into workers). Flips happen
    on the device (``unpack_batch``), after the photometrics and the mask drawn here: a mirrored sample is
    the mirror image of the whole jittered, masked face.
    """

    def __init__(self, image_files: list[Path], landmarks: np.ndarray, landmark_size: int, rows: np.ndarray,
                 identities: np.ndarray, image_size: int, features: Optional[np.ndarray] = None,
                 photometric=None, masks: Optional[RowMasks] = None):
        self.image_files = [Path(p) for p in image_files]
        self.rows = np.asarray(rows, np.int64)
        self.identities = identities
        self.size = int(image_size)
        self.features = features
        self.photometric = photometric
        self.masks = masks  # model.mask_aware: a synthetic mask drawn on each (jittered) face
        self._images: Optional[RowArray] = None
        # Landmarks in pixels at landmark_size (the stored size) to pixels at image_size.
        scaled = (np.asarray(landmarks, np.float32) + 0.5) * (self.size / landmark_size) - 0.5
        self.landmarks = scaled.astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_images"] = None  # a pickled memory map would copy the whole array
        return state

    @property
    def images(self) -> RowArray:
        if self._images is None:
            self._images = RowArray([np.load(p, mmap_mode="r") for p in self.image_files])
        return self._images

    @property
    def per_face_work(self) -> bool:
        """Whether samples need numpy work per face (photometrics, masks), which only loader workers do."""
        return self.photometric is not None or self.masks is not None

    def __getitem__(self, index: int) -> dict:
        row = int(self.rows[index])
        image = np.asarray(self.images[row])
        if image.shape[0] != self.size:
            raise StoreError(f"face {row} is {image.shape[0]} px, expected {self.size}: the resized cache is stale")
        if self.photometric is not None:
            image = self.photometric(image=np.ascontiguousarray(image))["image"]
        lmk = torch.from_numpy(self.landmarks[row] / self.size)
        item = {"face": to_chw(image), "landmarks": lmk, "identity": int(self.identities[row]), "row": row}
        if self.features is not None:
            # a copy: the store is mapped read-only
            item["features"] = torch.from_numpy(np.array(self.features[row], np.float32))
        if self.masks is not None:
            item.update(self.masks(image, lmk, row))
        return item


def mirror_batch(batch: dict, mirror: torch.Tensor) -> dict:
    """The batch with the faces where ``mirror`` (bool (B,)) is true flipped left-right: pixels, mask and
    landmarks (x -> S - 1 - x in pixels, left/right indices swapped)."""
    out = dict(batch)
    for key in ("face", "masked", "region", "redraw"):
        if key in out:
            out[key] = torch.where(mirror.view(-1, 1, 1, 1), out[key].flip(-1), out[key])
    size = out["face"].shape[-1]
    lmk = out["landmarks"]
    mirrored = lmk[:, FLIP_PERMUTATION]
    mirrored[..., 0] = (size - 1) / size - mirrored[..., 0]
    out["landmarks"] = torch.where(mirror.view(-1, 1, 1), mirrored, lmk)
    return out


def unpack_batch(batch: dict, split_row: int, flip: bool = False) -> dict:
    """A compact batch (uint8 faces, see the module docstring) -> the float batch the modules take, computed on
    the batch's device. ``flip``: each face mirrored with probability 1/2 (torch's generator of that device),
    on the uint8 pixels before the division."""
    face = batch["face"]
    if face.dtype != torch.uint8:
        raise TypeError(f"unpack_batch expects the loader's uint8 faces, got {face.dtype}")
    out = mirror_batch(batch, torch.rand(len(face), device=face.device) < 0.5) if flip else dict(batch)
    out["face"] = out["face"].float().div_(255)  # a division, as to_float: the same float32 values
    out["upper"] = out["face"][:, :, :split_row].contiguous()
    out["lower"] = out["face"][:, :, split_row:].contiguous()
    out["lower_landmarks"] = out["landmarks"][:, LOWER_POINTS]
    if "masked" in out:
        out["masked"] = out["masked"].float().div_(255)
    if "region" in out:
        out["region"] = out["region"].float()
    return out


class FaceDataModule(pl.LightningDataModule):
    """A prepared store -> datasets -> loaders for every stage; ``FaceDataModule(cfg)`` with the full config.

    It only opens what ``antimask.pipeline.prepare_data`` made (store, morphs, resized cache); the teacher
    features are handed in (``features=`` or ``attach_features``) by whoever knows the backbone.

    Its ``on_after_batch_transfer`` unpacks the uint8 batches on the device. It is the datamodule's hook, not the
    LightningModule's: the batch format, the split row and data.flip are the data's, so every module trained on
    it (the three stages, the segmenter) gets the float batch it always got, and takes float batches from
    anywhere else unchanged.
    """

    def __init__(self, cfg: DictConfig, features: Optional[np.ndarray] = None, stage: Optional[str] = None):
        super().__init__()
        # data.photometric is for the encoder (distillation) stage: for a decoder it would jitter the target
        # faces away from the teacher features that describe them. stage=None (a bare datamodule) applies it.
        self.photometric = bool(cfg.data.photometric) and stage in (None, "encoder")
        # model.mask_aware: the stages that learn from masked faces get masked / region / redraw in each sample
        self.mask_aware = stage in ("mask_decoder", "encoder") and bool(cfg.model.mask_aware)
        self.cfg = cfg
        self.root = Path(cfg.data.store)
        self.size = int(cfg.data.image_size)
        self.split_row = split_row_for(self.size, cfg.data.split_row)
        self.features = features
        self.store: Optional[Store] = None
        self._identities: Optional[np.ndarray] = None
        self._resident: dict[tuple[str, bool], ResidentBatches] = {}  # data.device_resident, per (split, train)
        self._budget: Optional[tuple[int, str]] = None

    @property
    def use_morphs(self) -> bool:
        return bool(self.cfg.data.use_morphs and self.cfg.augment.enabled)

    def setup(self, stage: Optional[str] = None) -> None:
        """Every rank: open the store read-only (memory-mapped); nothing is written."""
        if self.store is not None:
            return
        store = open_store(self.root)
        if self.size > store.image_size:
            raise StoreError(f"{self.root}: data.image_size={self.size} is larger than the stored "
                             f"{store.image_size} px; {rebuild_hint(self.root)} with a larger prepare.image_size")
        if self.size != store.image_size and not cache_valid(store, self.size):
            raise StoreError(f"{cache_path(self.root, self.size)}: the {self.size} px image cache is missing or "
                             f"stale; `antimask train-all` (antimask.pipeline.prepare_data) builds it")
        self.store = store
        self._identities = np.unique(store.meta["identity"], return_inverse=True)[1].astype(np.int64)
        if self.features is not None:
            self.attach_features(self.features)

    @property
    def feature_dim(self) -> int:
        if self.features is None:
            raise RuntimeError(f"{self.root}: no cached '{self.cfg.backbone.name}' features for this store; "
                               "`antimask train-all` (antimask.pipeline.prepare_data) computes them")
        return int(self.features.shape[1])

    def attach_features(self, features: np.ndarray) -> None:
        """Cached backbone features, (N, D) for every store row (photos and morphs)."""
        if self.store is not None and len(features) != len(self.store):
            raise ValueError(f"features have {len(features)} rows, the store {self.root} has {len(self.store)}; "
                             "recompute the feature cache for this store")
        self.features = features
        self._resident.clear()  # device-resident splits hold the features they were built with

    @property
    def image_files(self) -> list[Path]:
        if self.size != self.store.image_size:
            return [cache_path(self.root, self.size)]
        files = [self.root / "images.npy"]
        if self.store.num_morphs:
            files.append(self.root / "morphs" / "images.npy")
        return files

    def dataset(self, split: str, train: bool = False) -> FaceDataset:
        """The dataset of a split; ``train`` adds the morphs (data.use_morphs), flips and photometrics."""
        if self.store is None:
            self.setup()
        rows = self.store.rows(split, morphs=train and self.use_morphs)
        if not len(rows):
            raise StoreError(f"{self.root}: the '{split}' split has no faces ({self.store.summary() or 'no summary'}); "
                             f"check prepare.test_fraction / prepare.val_fraction or add photos")
        return FaceDataset(
            self.image_files, np.concatenate([np.asarray(p) for p in self.store.landmarks.parts]),
            self.store.image_size, rows, self._identities,
            self.size, self.features,
            photometric=photometric_transform(self.cfg) if train and self.photometric else None,
            masks=RowMasks.from_config(self.cfg, split) if self.mask_aware else None)

    @property
    def batch_size_per_device(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        total = int(self.cfg.data.batch_size)
        if total % world:
            raise ValueError(f"data.batch_size={total} is not divisible by the {world} devices; "
                             f"use a multiple of {world}")
        return total // world

    @property
    def device(self) -> torch.device:
        """The device batches go to: the trainer's, the CPU without one."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        training = self.trainer is not None and self.trainer.training
        return unpack_batch(batch, self.split_row, flip=training and bool(self.cfg.data.flip))

    def _loader(self, split: str, train: bool) -> DataLoader | ResidentBatches:
        d = self.cfg.data
        dataset = self.dataset(split, train)
        if d.device_resident and isinstance(dataset, FaceDataset) and not dataset.per_face_work:
            return self._resident_batches(split, train, dataset)
        workers = int(d.num_workers)
        return DataLoader(
            dataset, batch_size=self.batch_size_per_device, shuffle=train,
            num_workers=workers, pin_memory=bool(d.pin_memory) and self.device.type == "cuda",
            persistent_workers=bool(d.persistent_workers) and workers > 0)

    def _resident_batches(self, split: str, train: bool, dataset: FaceDataset) -> ResidentBatches:
        """The split on the device, this rank's share only; refused (DeviceMemoryError) beyond the budget."""
        key = (split, train)
        if key not in self._resident:
            rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
            positions = shard_positions(len(dataset), rank, world)
            feature_dim = 0 if dataset.features is None else int(dataset.features.shape[1])
            if self._budget is None:  # once: the RAM available shrinks as the splits move in
                self._budget = memory_budget(self.device, float(self.cfg.data.device_memory_fraction))
            held = sum(r.nbytes for r in self._resident.values())
            check_fits(resident_bytes(len(positions), self.size, feature_dim), held, *self._budget,
                       f"the {len(positions)} '{split}' faces of this rank at {self.size} px with their landmarks"
                       + (" and features" if feature_dim else ""), str(self.root), self.device)
            self._resident[key] = ResidentBatches(dataset, positions, self.batch_size_per_device, train, self.device)
        return self._resident[key]

    def train_dataloader(self) -> DataLoader | ResidentBatches:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | ResidentBatches:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader | ResidentBatches:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader | ResidentBatches:
        return self._loader(str(self.cfg.eval.split), train=False)
