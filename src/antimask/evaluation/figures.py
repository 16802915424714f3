"""The report's PNG figures (matplotlib, Agg): a face grid, loss per epoch, drawn vs real features, and
the worst cases with their yaw (the paper's Figs 6/8, 10/11 and 13). Each function writes one file."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import numpy as np

from antimask.files import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return path


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return img if img.dtype == np.uint8 else np.clip(img, 0, 1)


def masked_faces(real: np.ndarray, split_row: int) -> np.ndarray:
    """What the model sees: the real face with its lower band blacked out."""
    out = np.array(real, copy=True)
    out[:, split_row:] = 0
    return out


def face_grid(path: Path, real: np.ndarray, masked: np.ndarray, drawn: dict[str, np.ndarray],
              rows: int) -> Path:
    """One test face per row: real | masked | each method's drawn face."""
    plt = _plt()
    n = min(rows, len(real))
    columns = [("real", real), ("masked", masked)] + list(drawn.items())
    fig, axes = plt.subplots(n, len(columns), figsize=(1.6 * len(columns), 1.6 * n + 0.3), squeeze=False)
    for r in range(n):
        for c, (name, images) in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(_rgb(images[r]))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    return _save(fig, path)


def read_loss_csv(path: str | Path) -> dict[str, dict[int, float]]:
    """Lightning CSVLogger metrics.csv -> {"train": {epoch: loss}, "val": {epoch: loss}}.

    Train loss is ``train/loss_epoch`` when logged, else the mean of ``train/loss`` steps per epoch.
    """
    sums: dict[str, dict[int, list[float]]] = {"train/loss_epoch": {}, "train/loss": {}, "val/loss": {}}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                epoch = int(float(row.get("epoch") or "nan"))
            except ValueError:
                continue
            for key, per_epoch in sums.items():
                value = (row.get(key) or "").strip()
                if value:
                    per_epoch.setdefault(epoch, []).append(float(value))
    train = sums["train/loss_epoch"] or sums["train/loss"]
    return {"train": {e: float(np.mean(v)) for e, v in sorted(train.items())},
            "val": {e: float(np.mean(v)) for e, v in sorted(sums["val/loss"].items())}}


def loss_curves(path: Path, loss_csv: dict[str, str | Path]) -> Path:
    """Train and val loss per epoch, one panel per stage."""
    plt = _plt()
    stages = list(loss_csv)
    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        curves = read_loss_csv(loss_csv[stage])
        for split, curve in curves.items():
            if curve:
                ax.plot(list(curve), list(curve.values()), marker="o", markersize=3, label=split)
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    return _save(fig, path)


def feature_values(path: Path, real: np.ndarray, drawn: dict[str, np.ndarray], face: int = 0,
                   dims: int = 64) -> Path:
    """Left: the first ``dims`` teacher features of one face, real vs drawn by each method.
    Right: every feature of that face, drawn against real (the diagonal is a perfect drawing)."""
    plt = _plt()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.5))
    r = np.asarray(real[face], np.float64).reshape(-1)
    k = min(dims, len(r))
    ax0.plot(range(k), r[:k], color="black", linewidth=1.5, label="real")
    for name, feats in drawn.items():
        d = np.asarray(feats[face], np.float64).reshape(-1)
        ax0.plot(range(k), d[:k], linewidth=1, label=name)
        ax1.scatter(r, d, s=4, alpha=0.6, label=name)
    lo, hi = float(r.min()), float(r.max())
    ax1.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    ax0.set_title(f"face {face}: first {k} feature dims")
    ax0.set_xlabel("feature dim")
    ax1.set_title("drawn vs real, all dims")
    ax1.set_xlabel("real")
    ax1.set_ylabel("drawn")
    ax0.legend(fontsize=7)
    ax1.legend(fontsize=7)
    return _save(fig, path)


def worst_cases(path: Path, real: np.ndarray, drawn: np.ndarray, values: np.ndarray, metric: str,
                count: int, higher_is_better: bool, yaw: Optional[np.ndarray] = None) -> Path:
    """The ``count`` worst faces by ``metric``: real above drawn, titled with the value and yaw."""
    plt = _plt()
    v = np.asarray(values, np.float64)
    finite = np.where(np.isfinite(v), v, np.inf if higher_is_better else -np.inf)
    order = np.argsort(finite if higher_is_better else -finite)[:count]
    n = max(1, len(order))
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.2), squeeze=False)
    for c, i in enumerate(order):
        axes[0][c].imshow(_rgb(real[i]))
        axes[1][c].imshow(_rgb(drawn[i]))
        title = f"#{i} {metric}={v[i]:.3g}"
        if yaw is not None and math.isfinite(float(yaw[i])):
            title += f"\nyaw {float(yaw[i]):+.0f}°"
        axes[0][c].set_title(title, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_ylabel("real", fontsize=8)
    axes[1][0].set_ylabel("drawn", fontsize=8)
    return _save(fig, path)
