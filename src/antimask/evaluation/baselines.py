"""Training-free baselines that draw the lower band of aligned faces.

Every baseline takes aligned faces uint8 (N, S, S, 3) and returns the same shape and dtype with the
rows above ``split_row`` copied bit-exactly; only rows >= split_row are drawn.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from antimask.config import EvalConfig
from antimask.faces.compositing import keep_real_rows


def _check_faces(faces: np.ndarray, split_row: int) -> np.ndarray:
    arr = np.asarray(faces)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected aligned faces uint8 (N, S, S, 3), got {arr.dtype} {arr.shape}")
    if not 0 < split_row < arr.shape[1]:
        raise ValueError(f"split_row {split_row} lies outside faces of {arr.shape[1]} rows")
    return arr


class Inpaint:
    """OpenCV inpainting of the lower band from the visible rows (Telea or Navier-Stokes)."""

    def __init__(self, method: str = "telea", radius: int = EvalConfig.inpaint_radius):
        import cv2

        flags = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}
        if method not in flags:
            raise ValueError(f"inpainting method '{method}' is not one of {sorted(flags)}")
        self.method, self.flag, self.radius = method, flags[method], int(radius)

    def fit(self, train_faces: Optional[np.ndarray] = None) -> "Inpaint":
        return self

    def complete(self, faces: np.ndarray, split_row: int) -> np.ndarray:
        import cv2

        faces = _check_faces(faces, split_row)
        mask = np.zeros(faces.shape[1:3], np.uint8)
        mask[split_row:] = 255
        out = np.stack([cv2.inpaint(np.ascontiguousarray(f), mask, self.radius, self.flag) for f in faces]) \
            if len(faces) else faces.copy()
        return keep_real_rows(out, faces, split_row, 0)

    def complete_regions(self, faces: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """Inpaint each face only where its bool (S, S) region is set (a mask's region), real pixels elsewhere."""
        import cv2

        faces, regions = np.asarray(faces), np.asarray(regions, bool)
        if faces.dtype != np.uint8 or faces.ndim != 4 or regions.shape != faces.shape[:3]:
            raise ValueError(f"expected uint8 faces (N, S, S, 3) and bool regions (N, S, S), got {faces.dtype} "
                             f"{faces.shape} and {regions.shape}")
        return np.stack([cv2.inpaint(np.ascontiguousarray(f), r.astype(np.uint8) * 255, self.radius, self.flag)
                         for f, r in zip(faces, regions)]) if len(faces) else faces.copy()


class MeanFace:
    """The mean lower face of the train split, pasted under every visible upper band."""

    def __init__(self, **_: Any):
        self.mean: Optional[np.ndarray] = None

    def fit(self, train_faces: np.ndarray) -> "MeanFace":
        train = np.asarray(train_faces)
        if len(train) == 0:
            raise ValueError("mean_face needs at least one train face")
        self.mean = np.rint(train.astype(np.float64).mean(0)).clip(0, 255).astype(np.uint8)
        return self

    def complete(self, faces: np.ndarray, split_row: int) -> np.ndarray:
        faces = _check_faces(faces, split_row)
        if self.mean is None:
            raise RuntimeError("mean_face: call fit(train_faces) first")
        if self.mean.shape != faces.shape[1:]:
            raise ValueError(f"mean_face was fit on {self.mean.shape} faces, asked for {faces.shape[1:]}")
        out = faces.copy()
        out[:, split_row:] = self.mean[split_row:]
        return out


class NearestNeighbour:
    """The lower band of the train face whose upper band is closest (L2 on pixels)."""

    def __init__(self, chunk_mb: int = EvalConfig.neighbour_chunk_mb, **_: Any):
        self.chunk_mb = int(chunk_mb)
        self.train: Optional[np.ndarray] = None

    def fit(self, train_faces: np.ndarray) -> "NearestNeighbour":
        train = np.asarray(train_faces)
        if len(train) == 0:
            raise ValueError("nearest_neighbour needs at least one train face")
        self.train = train
        return self

    def nearest(self, faces: np.ndarray, split_row: int) -> np.ndarray:
        """Index into the train faces of each face's nearest upper band, (N,)."""
        if self.train is None:
            raise RuntimeError("nearest_neighbour: call fit(train_faces) first")
        if self.train.shape[1:] != np.asarray(faces).shape[1:]:
            raise ValueError(f"nearest_neighbour was fit on {self.train.shape[1:]} faces, "
                             f"asked for {np.asarray(faces).shape[1:]}")
        bank = self.train[:, :split_row].reshape(len(self.train), -1).astype(np.float32)
        bank_sq = (bank.astype(np.float64) ** 2).sum(1)
        # ||q - b||^2 = ||q||^2 - 2 q.b + ||b||^2; ||q||^2 is constant per query, so it drops out.
        rows = max(1, (self.chunk_mb << 20) // max(1, 4 * (len(bank) + bank.shape[1])))
        out = np.empty(len(faces), np.int64)
        for start in range(0, len(faces), rows):
            q = np.asarray(faces[start:start + rows, :split_row]).reshape(-1, bank.shape[1]).astype(np.float32)
            dist = bank_sq[None] - 2.0 * (q @ bank.T).astype(np.float64)
            out[start:start + rows] = dist.argmin(1)
        return out

    def complete(self, faces: np.ndarray, split_row: int) -> np.ndarray:
        faces = _check_faces(faces, split_row)
        out = faces.copy()
        if len(faces):
            out[:, split_row:] = self.train[self.nearest(faces, split_row), split_row:]
        return out


BASELINES: dict[str, Callable[..., Any]] = {
    "telea": lambda **kw: Inpaint("telea", **kw),
    "navier_stokes": lambda **kw: Inpaint("navier_stokes", **kw),
    "mean_face": MeanFace,
    "nearest_neighbour": NearestNeighbour,
}


def create_baseline(name: str, eval_cfg: Any = None):
    """A baseline by name, its tunables (inpaint radius, search chunk) read from the ``eval`` config."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline '{name}'; known: {', '.join(BASELINES)}")
    cfg = eval_cfg if eval_cfg is not None else EvalConfig()
    if name in ("telea", "navier_stokes"):
        return BASELINES[name](radius=cfg.inpaint_radius)
    if name == "nearest_neighbour":
        return BASELINES[name](chunk_mb=cfg.neighbour_chunk_mb)
    return BASELINES[name]()


def list_baselines() -> list[str]:
    return list(BASELINES)
