"""Training-free baselines that draw the lower band of aligned faces, and seam-compositing helpers.

Every baseline takes aligned faces uint8 (N, S, S, 3) and returns the same shape and dtype with the
rows above ``split_row`` copied bit-exactly; only rows >= split_row are drawn.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from antimask.config import EvalConfig


def _check_faces(faces: np.ndarray, split_row: int) -> np.ndarray:
    arr = np.asarray(faces)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected aligned faces uint8 (N, S, S, 3), got {arr.dtype} {arr.shape}")
    if not 0 < split_row < arr.shape[1]:
        raise ValueError(f"split_row {split_row} lies outside faces of {arr.shape[1]} rows")
    return arr


def _keep_upper(out: np.ndarray, faces: np.ndarray, split_row: int) -> np.ndarray:
    out[:, :split_row] = faces[:, :split_row]
    return out


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
        return _keep_upper(out, faces, split_row)


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


# ------------------------------------------------------------------------------------------ compositing
def match_seam_colour(drawn: np.ndarray, visible: np.ndarray, split_row: int,
                      rows: int = EvalConfig.seam_rows) -> np.ndarray:
    """Shift the drawn lower band's per-channel mean so that its first ``rows`` rows match the mean
    colour of the real rows just above the seam (``visible[split_row - rows:split_row]``).

    A drawn band that is right in shape but off in skin tone shows a hard seam; a constant shift per
    face and channel removes most of it. Rows < split_row of ``drawn`` are returned untouched.
    """
    drawn_arr = np.asarray(drawn)
    single = drawn_arr.ndim == 3
    d = drawn_arr[None] if single else drawn_arr
    v = np.asarray(visible)
    v = v[None] if v.ndim == 3 else v
    if rows <= 0:
        return drawn_arr.copy()
    rows = min(rows, split_row, d.shape[1] - split_row)
    scale = 255.0 if d.dtype == np.uint8 else 1.0
    v_scale = 255.0 if v.dtype == np.uint8 else 1.0
    target = v[:, split_row - rows:split_row].astype(np.float64).mean((1, 2)) / v_scale
    current = d[:, split_row:split_row + rows].astype(np.float64).mean((1, 2)) / scale
    shift = (target - current)[:, None, None, :] * scale
    out = d.copy()
    lower = d[:, split_row:].astype(np.float64) + shift
    if d.dtype == np.uint8:
        out[:, split_row:] = np.clip(np.rint(lower), 0, 255).astype(np.uint8)
    else:
        out[:, split_row:] = np.clip(lower, 0.0, 1.0).astype(d.dtype)
    return out[0] if single else out


def feather(upper_source: np.ndarray, lower_source: np.ndarray, split_row: int, width: int) -> np.ndarray:
    """Rows < split_row from ``upper_source`` exactly, rows >= split_row + width from ``lower_source``,
    and a linear blend between them over the ``width`` rows below the seam (0 = a hard cut)."""
    up = np.asarray(upper_source)
    low = np.asarray(lower_source)
    if up.shape != low.shape:
        raise ValueError(f"upper {up.shape} and lower {low.shape} sources differ in shape")
    out = low.copy()
    out[..., :split_row, :, :] = up[..., :split_row, :, :]
    width = max(0, min(int(width), up.shape[-3] - split_row))
    if width:
        alpha = (np.arange(1, width + 1, dtype=np.float64) / (width + 1))[:, None, None]
        band = slice(split_row, split_row + width)
        mixed = (1 - alpha) * up[..., band, :, :].astype(np.float64) + alpha * low[..., band, :, :].astype(np.float64)
        out[..., band, :, :] = np.clip(np.rint(mixed), 0, 255).astype(up.dtype) if up.dtype == np.uint8 \
            else mixed.astype(up.dtype)
    return out
