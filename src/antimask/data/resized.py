"""The store's faces at the training size: resized once into ``STORE/cache/images_<size>.npy``, read by
training and evaluation alike so both see the same pixels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from antimask.data.store import Store
from antimask.files import atomic_write_json, read_json


def cache_path(root: Path, size: int) -> Path:
    return Path(root) / "cache" / f"images_{size}.npy"


def cache_valid(store: Store, size: int) -> bool:
    """Whether the resized cache at ``size`` exists, is complete and was made from this store."""
    path = cache_path(store.root, size)
    info = path.with_suffix(".json")
    if not (path.exists() and info.exists()):
        return False
    if read_json(info).get("store_digest") != store.digest:
        return False
    try:
        return np.load(path, mmap_mode="r").shape == (len(store), size, size, 3)
    except (OSError, ValueError):
        return False


def build_resized_cache(store: Store, size: int, progress: bool = True) -> Optional[Path]:
    """Resize every face (photos and morphs) to size once (INTER_AREA), so loading does no resizing.

    Written through a memory map beside the target and renamed into place; the .json beside it names
    the store digest it was made from, so a changed store gets a fresh cache. None at the stored size.
    """
    import cv2

    if size == store.image_size:
        return None
    path = cache_path(store.root, size)
    if cache_valid(store, size):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(store), size, size, 3))
        rows = range(len(store))
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc=f"resize to {size}", unit="face")
        for row in rows:
            out[row] = cv2.resize(np.asarray(store.images[row]), (size, size), interpolation=cv2.INTER_AREA)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    atomic_write_json(path.with_suffix(".json"), {"store_digest": store.digest, "size": size})
    return path


def faces_at(store: Store, rows: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3) faces of store ``rows``: from the resized cache when it is valid, else
    resized here the same way (INTER_AREA)."""
    import cv2

    rows = np.asarray(rows, np.int64)
    if size == store.image_size:
        return store.images[rows]
    if cache_valid(store, size):
        return np.asarray(np.load(cache_path(store.root, size), mmap_mode="r")[rows])
    out = np.empty((len(rows), size, size, 3), np.uint8)
    for i, row in enumerate(rows):
        out[i] = cv2.resize(np.asarray(store.images[int(row)]), (size, size), interpolation=cv2.INTER_AREA)
    return out
