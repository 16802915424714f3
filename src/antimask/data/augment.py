"""Morph augmentation of a store (``antimask augment``): every train face morphed with its k neighbours.

Only train photo rows take part, as parents and as neighbours, so no validation or test face leaks
into training. Pairs are ordered and not deduplicated: (A, B) and (B, A) both appear when each is
among the other's neighbours. They are distinct faces (independent blend weights, and the blend
starts from a different parent), and this gives exactly k morphs per train face, the paper's "about
10 times more faces". The morphs go to ``store/morphs`` as a second row group.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig

from antimask.data.morph import morph
from antimask.data.neighbors import nearest_neighbors
from antimask.data.store import StoreError, Table, open_store, rebuild_hint, write_group
from antimask.files import atomic_write_json, read_json

PAIRING = "ordered"  # see the module docstring
_BATCH = 256  # morphs per worker task


def augment_params(cfg: DictConfig) -> dict:
    """What decides the morphs: a store whose morph header records the same params is up to date."""
    a = cfg.augment
    return {
        "neighbors": int(a.neighbors), "landmark_weight": float(a.landmark_weight),
        "blend_min": float(a.blend_min), "blend_max": float(a.blend_max),
        "feature_size": int(a.feature_size), "seed": int(cfg.augment.seed), "pairing": PAIRING,
    }


def _drop_stale_morphs(root: Path, params: dict) -> Optional[dict]:
    """The morph header if it matches these photos and params; otherwise hide the old morphs."""
    photo_header = root / "header.json"
    morph_header = root / "morphs" / "header.json"
    if not photo_header.exists():
        raise StoreError(f"{root}: no store here (no header.json); {rebuild_hint(root)}")
    if not morph_header.exists():
        return None
    header = read_json(morph_header)
    if header.get("photos_digest") == read_json(photo_header).get("digest") and header.get("params") == params:
        return header
    morph_header.unlink()  # made from other photos or with other params: rebuilt below
    return None


def _parents_in(store, train: np.ndarray) -> bool:
    """Whether every morph of ``store`` was made from two of these (train) faces."""
    morphs = store.meta["kind"] == "morph"
    parents = np.concatenate([store.meta["parent_a"][morphs], store.meta["parent_b"][morphs]])
    return bool(np.isin(parents, train).all())


def augment_store(store_root: str | Path, cfg: DictConfig, progress: bool = True) -> dict:
    """Add the morph rows to a store; returns counts. A second run with the same params adds nothing."""
    root = Path(store_root)
    params = augment_params(cfg)
    current = _drop_stale_morphs(root, params)
    store = open_store(root)
    train = store.rows("train", morphs=False)
    if current is not None and not _parents_in(store, train):
        # the same photos re-split (another prepare.seed or fractions): the content digest ignores the split,
        # and morphs of faces now held out would leak them into training
        (root / "morphs" / "header.json").unlink()
        current, store = None, open_store(root)
    if current is not None:
        return {"morphs": int(current["count"]), "added": 0, "train_faces": int(len(train)), "params": params}
    if not len(train):
        raise StoreError(f"{root}: the store has no train faces to morph; check prepare.test_fraction / "
                         f"val_fraction or add photos")
    start = time.perf_counter()
    a = cfg.augment
    photos = store.images.parts[0]
    photo_lmk = store.landmarks.parts[0]
    neigh, _ = nearest_neighbors(photos, photo_lmk, int(a.neighbors), float(a.landmark_weight),
                                 int(a.feature_size), int(a.chunk_mb), rows=train, progress=progress)
    parent_a = np.repeat(train, neigh.shape[1])
    parent_b = train[neigh.reshape(-1)]
    rng = np.random.default_rng(int(cfg.augment.seed))
    blends = rng.uniform(float(a.blend_min), float(a.blend_max), size=len(parent_a))

    folder = root / "morphs"
    folder.mkdir(parents=True, exist_ok=True)
    _remove_orphans(folder)
    tmp_images = folder / f".images.{os.getpid()}.npy.partial"
    try:
        landmarks = _make_morphs(root, tmp_images, parent_a, parent_b, blends, int(a.workers), progress)
        identity = store.meta["identity"]
        n = store.num_photos
        records = [
            {"row": n + m, "kind": "morph", "identity": f"morph:{identity[pa]}+{identity[pb]}", "split": "train",
             "parent_a": int(pa), "parent_b": int(pb), "blend": float(t)}
            for m, (pa, pb, t) in enumerate(zip(parent_a, parent_b, blends))
        ]
        extra = {"photos_digest": store.header["digest"], "params": params, "kind": "morph"}
        header = write_group(folder, tmp_images, landmarks, Table.from_records(records), extra)
    finally:
        if tmp_images.exists():
            tmp_images.unlink()

    summary_path = root / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {}
    summary["morphs"] = int(header["count"])
    summary["morphs_per_split"] = {"train": int(header["count"])}
    summary["morph_parents"] = int(len(train))
    summary["morph_params"] = params
    atomic_write_json(summary_path, summary)
    return {"morphs": int(header["count"]), "added": int(header["count"]), "train_faces": int(len(train)),
            "params": params, "seconds": round(time.perf_counter() - start, 2)}


def _remove_orphans(folder: Path) -> None:
    """Delete morph images left by a killed augment (a full-size array each); a live one's file stays."""
    for path in folder.glob(".images.*.npy.partial"):
        pid = path.name.split(".")[2]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            path.unlink(missing_ok=True)
        except PermissionError:  # a live process of another user
            pass


# Worker state: the photo arrays and the output memory map, opened once per process.
_WORKER: dict = {}


def _init_worker(root: str, out_path: str) -> None:
    import cv2

    cv2.setNumThreads(1)
    _WORKER["images"] = np.load(Path(root) / "images.npy", mmap_mode="r")
    _WORKER["landmarks"] = np.load(Path(root) / "landmarks.npy", mmap_mode="r")
    _WORKER["out"] = np.load(out_path, mmap_mode="r+")


def _morph_batch(start: int, parent_a: np.ndarray, parent_b: np.ndarray, blends: np.ndarray) -> tuple[int, np.ndarray]:
    images, lmks, out = _WORKER["images"], _WORKER["landmarks"], _WORKER["out"]
    result = np.empty((len(parent_a), 68, 2), np.float32)
    for j, (pa, pb, t) in enumerate(zip(parent_a, parent_b, blends)):
        out[start + j], result[j] = morph(images[pa], lmks[pa], images[pb], lmks[pb], float(t))
    out.flush()
    return start, result


def _make_morphs(root: Path, out_path: Path, parent_a: np.ndarray, parent_b: np.ndarray, blends: np.ndarray,
                 workers: int, progress: bool) -> np.ndarray:
    """Morph every pair into a memory-mapped .npy at out_path; returns the morphs' landmarks."""
    size = int(np.load(root / "images.npy", mmap_mode="r").shape[1])
    count = len(parent_a)
    np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3)).flush()
    landmarks = np.empty((count, 68, 2), np.float32)
    starts = list(range(0, count, _BATCH))
    workers = min(workers or os.cpu_count() or 1, len(starts))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=count, desc="morphs", unit="face")
    jobs = [(s, parent_a[s:s + _BATCH], parent_b[s:s + _BATCH], blends[s:s + _BATCH]) for s in starts]
    if workers <= 1:
        _init_worker(str(root), str(out_path))
        results = (_morph_batch(*job) for job in jobs)
        pool = None
    else:
        # spawn, not fork: the caller may be a Lightning process holding threads (or a GPU context).
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                   initargs=(str(root), str(out_path)))
        results = pool.map(_morph_batch, *zip(*jobs))
    try:
        for s, lmk in results:
            landmarks[s:s + len(lmk)] = lmk
            if bar is not None:
                bar.update(len(lmk))
    finally:
        if pool is not None:
            pool.shutdown()
        _WORKER.clear()
        if bar is not None:
            bar.close()
    return landmarks

