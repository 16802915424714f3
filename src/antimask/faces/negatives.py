"""Aligned crops that are not faces, made from aligned faces: what a face finder accepts by mistake.

The shape predictor draws a face shape into any box, so a detector's false box (an eye close-up, a patterned
shirt, part of a face) still comes out "aligned". These crops teach the mask segmenter's face head to say no:

- ``close_up``: a window of 15-45 % of the face side (half of them on an eye) blown up to the whole crop;
- ``shifted``: the face moved by 40-70 % of its side, so the crop holds an edge of it and the background;
- ``turned``: the face turned by 90, 180 or 270 degrees or mirrored top to bottom;
- ``texture``: a small patch (hair, skin, mask, clothing) tiled by mirroring and blurred.
"""

from __future__ import annotations

import cv2
import numpy as np

from antimask.faces.align import EYES, template

KINDS = ("close_up", "shifted", "turned", "texture")


def _check(face: np.ndarray) -> int:
    if face.dtype != np.uint8 or face.ndim != 3 or face.shape[2] != 3 or face.shape[0] != face.shape[1]:
        raise ValueError(f"not_a_face expects an aligned uint8 (S, S, 3) face, got {face.dtype} {face.shape}")
    return face.shape[0]


def _window(face: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """The square window (centre, side in px) resampled to the face's size, replicated beyond the edges."""
    size = face.shape[0]
    scale = size / side
    matrix = np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]], np.float32)
    return cv2.warpAffine(face, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def not_a_face(face: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A uint8 (S, S, 3) crop of ``kind`` (drawn from ``KINDS`` when None) made from an aligned face."""
    size = _check(face)
    kind = kind or str(rng.choice(KINDS))
    if kind == "close_up":
        side = rng.uniform(0.15, 0.45) * size
        if rng.random() < 0.5:
            eyes = template(size)[EYES]
            cx, cy = (eyes[:6] if rng.random() < 0.5 else eyes[6:]).mean(0) + rng.normal(0, 0.03 * size, 2)
        else:
            cx, cy = rng.uniform(side / 2, size - side / 2, 2)
        return _window(face, float(cx), float(cy), side)
    if kind == "shifted":
        dx, dy = rng.uniform(0.4, 0.7, 2) * size * rng.choice([-1, 1], 2)
        if rng.random() < 0.5:  # along one axis only, half of the time
            (dx, dy) = (dx, rng.uniform(-0.1, 0.1) * size) if rng.random() < 0.5 else (rng.uniform(-0.1, 0.1) * size, dy)
        return _window(face, size / 2 + float(dx), size / 2 + float(dy), float(size))
    if kind == "turned":
        k = int(rng.integers(0, 4))
        return np.ascontiguousarray(np.flipud(face) if k == 0 else np.rot90(face, k))
    if kind == "texture":
        side = int(rng.uniform(0.08, 0.2) * size)
        x, y = rng.integers(0, size - side, 2)
        patch = face[y:y + side, x:x + side]
        tile = np.concatenate([patch, patch[:, ::-1]], 1)
        tile = np.concatenate([tile, tile[::-1]], 0)
        reps = -(-size // tile.shape[0])
        out = np.ascontiguousarray(np.tile(tile, (reps, reps, 1))[:size, :size])
        return cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 2.0)))
    raise ValueError(f"unknown kind '{kind}'; choose from {', '.join(KINDS)}")
