"""Shared fixtures: where the face photos are, and whether missing photos skip or fail.

ANTIMASK_DATA points at the shared photo folder (../shared/data beside the checkout by default);
ANTIMASK_REQUIRE_DATA=1 (set by .ci/run) turns every skip for missing photos into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import adult_utkface, require_data  # noqa: F401  (re-exported for older imports)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")



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
