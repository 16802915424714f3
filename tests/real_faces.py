"""Real aligned faces and small stores for tests: UTKFace photos detected with dlib, aligned, written as a store.

Stands in for ``antimask prepare`` so tests of later steps depend only on align.py and store.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from antimask.faces import dlib_models
from antimask.faces.align import align_face
from antimask.data.store import Table, write_group

PAD = 80  # UTKFace chips are tight 200x200 crops: dlib's HOG detector needs some context


def detect_landmarks(image: np.ndarray, pad: int = PAD) -> Optional[np.ndarray]:
    """dlib's 68 landmarks (float32 (68, 2), image pixels) of the largest face, or None."""
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    detector = dlib_models.hog_detector()
    rects = detector(padded, 0) or detector(padded, 1)
    if not rects:
        return None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = dlib_models.shape_predictor()(padded, rect)
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    return pts - pad


def align_photos(paths: list[Path], size: int = 224) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 (N, size, size, 3) faces, float32 (N, 68, 2) landmarks, file names) of the photos dlib finds."""
    images, landmarks, names = [], [], []
    for path in paths:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        pts = detect_landmarks(image)
        if pts is None:
            continue
        aligned, lmk, _, _ = align_face(image, pts, size)
        images.append(aligned)
        landmarks.append(lmk)
        names.append(path.name)
    return np.stack(images), np.stack(landmarks).astype(np.float32), names


def split_of(i: int) -> str:
    """7 of 10 faces train, 1 val, 2 test (one identity per photo, as UTKFace has no identities)."""
    return "train" if i % 10 < 7 else "val" if i % 10 == 7 else "test"


def write_store(root: Path, images: np.ndarray, landmarks: np.ndarray, names: list[str],
                splits: Optional[list[str]] = None) -> Path:
    """Write a photo store at root (rows in the given order); returns root."""
    splits = splits or [split_of(i) for i in range(len(images))]
    records = [
        {"row": i, "kind": "photo", "source": name, "sha1": "", "identity": name.split(".")[0],
         "split": split, "detector": "hog", "faces_found": 1, "yaw": 0.0, "residual": 0.0}
        for i, (name, split) in enumerate(zip(names, splits))
    ]
    write_group(Path(root), images, landmarks, Table.from_records(records), extra={"image_size": images.shape[1]})
    return Path(root)
