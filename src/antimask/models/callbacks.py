"""Validation image grids (real | masked | drawn) saved as PNG under the run and logged to W&B."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid

from antimask.faces.compositing import composite
from antimask.faces.images import to_uint8
from antimask.files import atomic_path

# Grey of the hidden rows in the "masked" column.
MASK_GREY = 0.5


def render_grid(face: torch.Tensor, drawn: torch.Tensor, split_row: int, padding: int = 2,
                masked: Optional[torch.Tensor] = None) -> np.ndarray:
    """One row per face: real | masked (lower band greyed) | drawn with the real upper band composited.

    Given ``masked`` faces (model.mask_aware), the middle column shows them and ``drawn`` is already the
    completed face."""
    face = face.detach().float().cpu()
    if masked is not None:
        masked, done = masked.detach().float().cpu(), drawn.detach().float().cpu()
    else:
        masked = face.clone()
        masked[:, :, split_row:] = MASK_GREY
        done = composite(face, drawn.detach().float().cpu(), split_row, 0)
    tiles = torch.stack([face, masked, done], 1).flatten(0, 1)
    return to_uint8(make_grid(tiles, nrow=3, padding=padding))  # W&B turns float tensors black


class ImageGridCallback(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, draws the first val batch's faces (rank zero only).

    Stages whose predict_step does not return an image (the encoder) are skipped.
    """

    def __init__(self, every_n_epochs: int = 1, max_faces: int = 8, folder: Optional[str | Path] = None,
                 split_row: Optional[int] = None):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        self.every_n_epochs, self.max_faces, self.folder = every_n_epochs, max_faces, folder
        self.split_row = split_row  # None: the batch's own split (the height of "upper")
        self._batch: Optional[dict[str, torch.Tensor]] = None
        self.saved: list[Path] = []

    def _due(self, trainer: pl.Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero and self._due(trainer):
            self._batch = {k: v[: self.max_faces] for k, v in batch.items() if torch.is_tensor(v)}

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        with torch.no_grad():
            drawn = pl_module.predict_step(batch, 0)
        face = batch["face"]
        if not (torch.is_tensor(drawn) and drawn.dim() == 4 and drawn.shape[1] == 3):
            return
        row = self.split_row if self.split_row is not None else batch["upper"].shape[-2]
        grid = render_grid(face, drawn, row, masked=batch.get("masked"))
        self.saved.append(self._save(trainer, grid))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/images", images=[grid], step=trainer.global_step)

    def _save(self, trainer: pl.Trainer, grid: np.ndarray) -> Path:
        from PIL import Image

        # Not trainer.log_dir: under DDP it is a collective broadcast, and this runs on rank 0 only.
        root = Path(self.folder) if self.folder else Path(trainer.default_root_dir) / "images"
        path = root / f"epoch_{trainer.current_epoch:03d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        return path



class ChannelsLast(pl.Callback):
    """trainer.channels_last: the module's convolution weights and every image of each batch in NHWC order, the
    layout of the GPU's tensor-core convolutions (NCHW ones are transposed around each of them)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)  # 4-D weights only; the move to the device keeps it

    @staticmethod
    def _images(batch: Any) -> None:
        if isinstance(batch, dict):  # in place: Lightning hands this same dict to the step
            for key, value in batch.items():
                if torch.is_tensor(value) and value.ndim == 4 and value.is_floating_point():
                    batch[key] = value.contiguous(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._images(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._images(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._images(batch)
