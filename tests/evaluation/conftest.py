"""Real aligned faces for the evaluation tests: adult UTKFace photos, detected and aligned with dlib."""

from __future__ import annotations


import numpy as np
import pytest

from real_faces import align_photos as _align
from helpers import adult_utkface


def align_photos(folder, n: int, size: int, start: int = 0) -> np.ndarray:
    """Up to n aligned faces (uint8 (n, size, size, 3)) from adult UTKFace photos."""
    faces = _align(adult_utkface(folder, 3 * n, start), size)[0][:n]
    assert len(faces) == n, f"only {len(faces)} of {n} faces found in {folder}"
    return faces


@pytest.fixture(scope="session")
def faces64(utkface_dir) -> np.ndarray:
    """24 real aligned faces at 64 px (the first 16 serve as train faces, the rest as test)."""
    return align_photos(utkface_dir, 24, 64)
