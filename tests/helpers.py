"""Helpers shared by the tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
