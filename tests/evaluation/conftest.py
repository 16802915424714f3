"""Real aligned faces for the evaluation tests: adult UTKFace photos, detected and aligned with dlib."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

# The root conftest is not importable by name from here (this file is also called conftest).
_spec = importlib.util.spec_from_file_location("_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
adult_utkface = _root.adult_utkface


def align_photos(folder, n: int, size: int, start: int = 0) -> np.ndarray:
    """Up to n aligned faces (uint8 (n, size, size, 3)) from adult UTKFace photos."""
    import cv2

    from antimask import dlib_models
    from antimask.data.align import align_face

    faces = []
    for path in adult_utkface(folder, 3 * n, start):
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        img = cv2.copyMakeBorder(img, 80, 80, 80, 80, cv2.BORDER_REPLICATE)
        rects = dlib_models.hog_detector()(img, 1)
        if not rects:
            continue
        shape = dlib_models.shape_predictor()(img, rects[0])
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
        faces.append(align_face(img, pts, size)[0])
        if len(faces) == n:
            break
    assert len(faces) == n, f"only {len(faces)} of {n} faces found in {folder}"
    return np.stack(faces)


@pytest.fixture(scope="session")
def faces64(utkface_dir) -> np.ndarray:
    """24 real aligned faces at 64 px (the first 16 serve as train faces, the rest as test)."""
    return align_photos(utkface_dir, 24, 64)
