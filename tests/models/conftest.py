"""Synthetic faces for the model tests: smooth colour fields that the features fully determine.

Each face is sigmoid(sum_k f_k * field_k) over fixed low-frequency colour fields, its landmarks the
template shifted by a fixed linear map of the same features, so a decoder can learn features -> face
and an encoder can learn upper rows -> features in a few epochs.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from antimask.config import load_config, split_row_for
from antimask.faces.align import LOWER_POINTS, TEMPLATE_224

# These nets are tiny: on a shared 2-core box, OpenMP threads fighting over the cores make a step
# 20x slower than one thread.
torch.set_num_threads(1)


class SyntheticFaces(Dataset):
    def __init__(self, n: int = 64, size: int = 64, feature_dim: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.size, self.split_row = size, split_row_for(size)
        self.features = torch.rand(n, feature_dim, generator=g) * 2 - 1
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        freqs = torch.randint(0, 3, (feature_dim, 2), generator=g).float()
        phase = torch.rand(feature_dim, generator=g) * 2 * math.pi
        base = torch.cos(math.pi * (freqs[:, 0, None, None] * yy + freqs[:, 1, None, None] * xx) + phase[:, None, None])
        colour = torch.randn(feature_dim, 3, generator=g)
        fields = colour[:, :, None, None] * base[:, None]  # (D,3,S,S)
        self.faces = torch.sigmoid(torch.einsum("nd,dchw->nchw", self.features, fields)).float()
        shift = torch.randn(feature_dim, 68 * 2, generator=g) * 0.01
        template = torch.from_numpy(TEMPLATE_224 / 224.0).float()
        self.landmarks = (template + (self.features @ shift).view(n, 68, 2)).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        face, r = self.faces[i], self.split_row
        return {"face": face, "upper": face[:, :r], "lower": face[:, r:], "landmarks": self.landmarks[i],
                "lower_landmarks": self.landmarks[i][LOWER_POINTS], "features": self.features[i],
                "identity": torch.tensor(i), "row": torch.tensor(i)}


@pytest.fixture
def synthetic():
    """loader(n, size, feature_dim, shuffle) over a fixed synthetic set."""

    def make(n: int = 64, size: int = 64, feature_dim: int = 16, shuffle: bool = False, batch_size: int = 16):
        return DataLoader(SyntheticFaces(n, size, feature_dim), batch_size=batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(0) if shuffle else None)

    return make


@pytest.fixture
def small_cfg():
    """The schema defaults with a small, fast model at 64 px (overrides appended)."""

    def make(*overrides: str):
        base = ["data.image_size=64", "model.shared_dim=64", "model.decoder_channels=32",
                "model.decoder_upsamplings=3", "model.encoder_width=8"]
        return load_config(None, base + list(overrides))

    return make


@pytest.fixture
def trainer_kwargs(tmp_path):
    return dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
