"""The validation image grid: a uint8 PNG per due epoch, logged to W&B as uint8."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import WandbLogger

from antimask.models import EncoderDistillModule, ImageGridCallback, MaskDecoderModule, render_grid
from helpers import build_module


class RecordingWandb(WandbLogger):
    """A WandbLogger that records instead of starting a wandb run."""

    def __init__(self):
        super().__init__(offline=True)
        self.images: list = []

    @property
    def experiment(self):
        return None

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append((key, images))

    def after_save_checkpoint(self, checkpoint_callback):
        pass

    def finalize(self, status):
        pass

    @property
    def save_dir(self):
        return None


def test_render_grid_layout():
    face = torch.rand(2, 3, 64, 64)
    grid = render_grid(face, torch.zeros(2, 3, 37, 64), 27, padding=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 66 + 2, 3 * 66 + 2, 3)
    masked = grid[2:66, 68:132]
    assert np.all(masked[27:] == 128)  # the lower band greyed
    assert np.array_equal(masked[:27], grid[2:29, 2:66])  # real upper band unchanged


def test_callback_writes_uint8_png(synthetic, trainer_kwargs, tmp_path):
    module = build_module(MaskDecoderModule, 16, 64, 27, shared_dim=32, decoder_channels=32, decoder_upsamplings=3)
    callback = ImageGridCallback(every_n_epochs=2, max_faces=4)
    wandb = RecordingWandb()
    kwargs = {**trainer_kwargs, "logger": wandb}
    trainer = pl.Trainer(max_epochs=4, limit_train_batches=1, limit_val_batches=1, callbacks=[callback], **kwargs)
    trainer.fit(module, synthetic(16), synthetic(16))
    names = sorted(p.name for p in callback.saved)
    assert names == ["epoch_001.png", "epoch_003.png"]
    image = np.asarray(Image.open(callback.saved[0]))
    assert image.dtype == np.uint8 and image.shape == (4 * 66 + 2, 3 * 66 + 2, 3) and image.std() > 0
    assert len(wandb.images) == 2
    key, images = wandb.images[0]
    assert key == "val/images" and images[0].dtype == np.uint8


def test_callback_skips_encoder_stage(synthetic, trainer_kwargs, tmp_path):
    callback = ImageGridCallback(folder=tmp_path / "img")
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[callback],
                         **trainer_kwargs)
    trainer.fit(build_module(EncoderDistillModule, 16, 64, 27, encoder_width=8), synthetic(16), synthetic(16))
    assert callback.saved == [] and not (tmp_path / "img").exists()
