"""Backbone features of every stored face, computed once and kept beside the store.

``features/<key>.npy`` (float32, one row per store row) appears atomically when complete; ``<key>.json``
says what it holds. The key hashes the store digest, the backbone's name, options and weights hash.
While computing, ``<key>.partial.npy`` and ``<key>.progress.json`` record the rows done, so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm import tqdm

from antimask.backbones.registry import backbone_from_config
from antimask.errors import AntimaskError
from antimask.faces.images import to_float
from antimask.files import atomic_write_json, read_json

CACHE_VERSION = 1
CHECK_ROWS = 4096  # rows per block when scanning a cache for NaN/inf


class FeatureCacheError(AntimaskError, RuntimeError):
    """A feature cache that is unreadable, of the wrong shape, or holds NaN/inf."""


def features_dir(store) -> Path:
    return Path(store.root) / "features"


def feature_description(store, backbone) -> dict:
    """Everything the cached features depend on (hashed into the key, written to the .json)."""
    return {
        "version": CACHE_VERSION,
        "store_digest": store.digest,
        "rows": len(store),
        "image_size": int(store.images.shape[1]),
        "backbone": backbone.name,
        "options": dict(backbone.options),
        "weights_hash": backbone.weights_hash,
        "feature_dim": int(backbone.feature_dim),
    }


def feature_key(store, backbone) -> str:
    """``<backbone>-<16 hex>``: readable, and different whenever the features would differ."""
    desc = feature_description(store, backbone)
    digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', backbone.name)}-{digest}"


def _bad_rows(array: np.ndarray, path: Path) -> None:
    bad = []
    for start in range(0, len(array), CHECK_ROWS):
        block = np.asarray(array[start:start + CHECK_ROWS])
        bad.extend((start + np.flatnonzero(~np.isfinite(block).all(axis=1))).tolist())
    if bad:
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        raise FeatureCacheError(f"{path}: NaN or inf in {len(bad)} rows ({shown}); delete the file to recompute it")


def load_cached_features(store, key: str) -> np.ndarray:
    """The complete cache ``key`` of ``store`` (read-only memory map), checked for shape and NaN/inf."""
    path = features_dir(store) / f"{key}.npy"
    if not path.is_file():
        raise FeatureCacheError(f"{path}: no cached features under this key; compute them with cached_features()")
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise FeatureCacheError(f"{path}: unreadable ({err}); delete it to recompute") from None
    meta_path = path.with_suffix(".json")
    want_dim = read_json(meta_path).get("feature_dim") if meta_path.is_file() else None
    if array.ndim != 2 or array.dtype != np.float32 or len(array) != len(store) or (want_dim and array.shape[1] != want_dim):
        raise FeatureCacheError(f"{path}: {array.dtype} {array.shape}, expected float32 ({len(store)}, "
                                f"{want_dim or 'D'}) for this store; delete it to recompute")
    _bad_rows(array, path)
    return array


def teacher_features(cfg, store) -> Optional[np.ndarray]:
    """The cached features of ``cfg.backbone`` for every row of ``store``; None when not computed yet
    (``antimask.pipeline.prepare_data`` computes them; a stage that needs them says so)."""
    key = feature_key(store, backbone_from_config(cfg))
    return load_cached_features(store, key) if (features_dir(store) / f"{key}.npy").exists() else None


def _open_partial(partial: Path, progress: Path, desc: dict, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Resume a partial computation of the same features, or start a fresh one."""
    if partial.is_file() and progress.is_file():
        try:
            state = read_json(progress)
            array = open_memmap(partial, mode="r+")
            if state.get("description") == desc and array.shape == shape and array.dtype == np.float32:
                return array, int(state["done"])
            del array
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass
    array = open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
    atomic_write_json(progress, {"description": desc, "done": 0})
    return array, 0


def cached_features(store, backbone, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """(N, D) float32 features of every stored face (photos then morphs), from the cache when present.

    Computed from the stored images at their stored size (224), whatever size training uses.
    """
    key = feature_key(store, backbone)
    folder = features_dir(store)
    final, meta = folder / f"{key}.npy", folder / f"{key}.json"
    desc = feature_description(store, backbone)
    if final.is_file():
        return _load_complete(store, key, meta, desc)
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / f"{key}.lock"):  # several processes (DDP ranks): one computes, the others wait
        if final.is_file():
            return _load_complete(store, key, meta, desc)
        return _compute(store, backbone, key, desc, batch_size, progress)


def _load_complete(store, key: str, meta: Path, desc: dict) -> np.ndarray:
    features = load_cached_features(store, key)
    if not meta.is_file():  # killed between the two renames: the .npy is complete, only its label is missing
        atomic_write_json(meta, {**desc, "key": key, "shape": list(features.shape)})
    return features


@contextmanager
def _exclusive(path: Path):
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: one process at a time is up to the caller
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _compute(store, backbone, key: str, desc: dict, batch_size: int, progress: bool) -> np.ndarray:
    folder = features_dir(store)
    final, meta = folder / f"{key}.npy", folder / f"{key}.json"
    partial, progress_path = folder / f"{key}.partial.npy", folder / f"{key}.progress.json"
    n, dim = len(store), int(backbone.feature_dim)
    array, done = _open_partial(partial, progress_path, desc, (n, dim))
    device = backbone.device
    with tqdm(total=n, initial=done, disable=not progress, desc=f"features {backbone.name}", unit="face") as bar:
        for start in range(done, n, batch_size):
            stop = min(start + batch_size, n)
            with torch.no_grad():
                out = backbone(to_float(store.images[start:stop], device)).float().cpu().numpy()
            if out.shape != (stop - start, dim):
                raise FeatureCacheError(f"backbone {backbone.name} returned {out.shape} for rows {start}..{stop - 1}, "
                                        f"expected ({stop - start}, {dim})")
            bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
            if len(bad):
                raise FeatureCacheError(f"backbone {backbone.name} gave NaN/inf features for store rows "
                                        f"{(start + bad).tolist()[:20]} of {store.root}")
            array[start:stop] = out
            array.flush()  # the rows must be on disk before the progress file says they are
            atomic_write_json(progress_path, {"description": desc, "done": stop})
            bar.update(stop - start)
    del array
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
    atomic_write_json(meta, {**desc, "key": key, "shape": [n, dim]})
    progress_path.unlink(missing_ok=True)
    (folder / f"{key}.lock").unlink(missing_ok=True)
    return load_cached_features(store, key)
