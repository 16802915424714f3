"""Data-test fixtures: real UTKFace faces aligned once per session, and small stores built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from real_faces import align_photos, write_store
from helpers import adult_utkface


N_FACES = 240  # enough for a few hundred-face neighbour check and 168 train faces


@pytest.fixture(scope="session")
def utk_faces(utkface_dir):
    """(images uint8 (N, 224, 224, 3), landmarks float32 (N, 68, 2), names) of real aligned faces."""
    images, landmarks, names = align_photos(adult_utkface(utkface_dir, N_FACES))
    assert len(images) >= 0.9 * N_FACES, f"dlib found only {len(images)} of {N_FACES} faces"
    return images, landmarks, names


@pytest.fixture
def make_store(utk_faces, tmp_path):
    """A fresh photo store of the first n faces (optionally with given splits) in this test's tmp_path."""
    images, landmarks, names = utk_faces

    def make(n: int = 60, splits=None, name: str = "store") -> Path:
        return write_store(tmp_path / name, images[:n], landmarks[:n], names[:n], splits)

    return make


@pytest.fixture
def store64_cfg(make_store):
    """config(*overrides) over a 30-face store (21 train, 3 val, 6 test) with its 64 px cache."""
    from antimask.config import load_config
    from antimask.data.resized import build_resized_cache
    from antimask.data.store import open_store

    root = make_store(30)
    build_resized_cache(open_store(root), 64, progress=False)

    def make(*overrides: str):
        return load_config(None, [f"data.store={root}", "data.image_size=64", "data.num_workers=0", *overrides])

    return make
