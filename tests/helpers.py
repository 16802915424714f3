"""Helpers shared by the tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from antimask.backbones.base import FrozenBackbone

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("ANTIMASK_DATA", REPO.parent / "shared" / "data")).resolve()


def require_data(*parts: str) -> Path:
    """The shared photo folder ``parts`` below ANTIMASK_DATA; skip, or fail in CI, when missing."""
    path = data_root().joinpath(*parts)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        msg = f"face photos not found at {path} (set ANTIMASK_DATA)"
        if os.environ.get("ANTIMASK_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def adult_utkface(folder: Path, n: int, start: int = 0) -> list[Path]:
    """A fixed, spread-out sample of adult UTKFace photos (every 20th adult file in name order)."""
    files = sorted(p for p in folder.iterdir() if p.name.split("_")[0].isdigit() and int(p.name.split("_")[0]) >= 18)
    return files[start::20][:n]


def build_module(cls, feature_dim: int, image_size: int, split_row: int, **changes):
    """A stage module built directly (its constructor has no defaults): the schema's defaults, then ``changes``."""
    from omegaconf import OmegaConf

    from antimask.config import Config

    kwargs = cls.hparams_from_config(OmegaConf.structured(Config), feature_dim)
    kwargs.update(image_size=image_size, split_row=split_row, **changes)
    return cls(**kwargs)


def require_face_networks(reference: bool = False) -> Path:
    """The folder of the pretrained face networks (``make face-networks``); skip, or fail in CI, when missing.

    ``reference``: TF.js must be installed beside them too (``tfjs-reference/``), and node on the PATH.
    """
    import shutil

    from antimask.backbones.face_networks import FETCH, REFERENCE_DIR, cache_dir, missing_files

    folder = cache_dir()
    missing = missing_files(folder)
    if missing:
        msg = f"face networks {', '.join(missing)} not found or changed in {folder}; run {FETCH}"
    elif reference and not (folder / REFERENCE_DIR / "node_modules" / "@tensorflow" / "tfjs-converter").is_dir():
        msg = (f"TF.js reference not installed in {folder / REFERENCE_DIR}; run make face-networks "
               "(python -m antimask.backbones.fetch --reference)")
    elif reference and shutil.which("node") is None:
        msg = "node is not on the PATH (the TF.js reference runs in it)"
    else:
        return folder
    if os.environ.get("ANTIMASK_REQUIRE_DATA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


class DiesInAWorker(FrozenBackbone):
    """A backbone outside torch (like dlib) that kills any worker process it runs in: per-channel means (D = 3)."""

    torch_network = False

    def __init__(self):
        super().__init__()
        self.name, self.feature_dim, self.input_size = "dies_in_a_worker", 3, 224
        self.differentiable, self.weights_hash = False, "none"

    def features(self, x):
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            os._exit(3)
        return x.mean(dim=(2, 3))
