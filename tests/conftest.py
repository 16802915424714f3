"""Shared fixtures: where the face photos are, and whether missing photos skip or fail.

ANTIMASK_DATA points at the shared photo folder (../shared/data beside the checkout by default);
ANTIMASK_REQUIRE_DATA=1 (set by .ci/run) turns every skip for missing photos into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("ANTIMASK_DATA", REPO.parent / "shared" / "data")).resolve()


def require_data(*parts: str) -> Path:
    """The shared photo folder ``parts`` below ANTIMASK_DATA; skip, or fail in CI, when missing."""
    path = _data_root().joinpath(*parts)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        msg = f"face photos not found at {path} (set ANTIMASK_DATA)"
        if os.environ.get("ANTIMASK_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    return require_data("utkface")


@pytest.fixture(scope="session")
def afdb_dir() -> Path:
    return require_data("afdb_east_asian")


@pytest.fixture(scope="session")
def masked_dir() -> Path:
    return require_data("masked_real")


def adult_utkface(folder: Path, n: int, start: int = 0) -> list[Path]:
    """A fixed, spread-out sample of adult UTKFace photos (every 20th adult file in name order)."""
    files = sorted(p for p in folder.iterdir() if p.name.split("_")[0].isdigit() and int(p.name.split("_")[0]) >= 18)
    return files[start::20][:n]
