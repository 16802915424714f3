"""Backbone features of every stored face, computed once and kept beside the store.

``features/<key>.npy`` (float32, one row per store row) appears atomically when complete; ``<key>.json``
says what it holds. The key hashes the store digest, the backbone's name, options and weights hash.
While computing, ``<key>.partial.npy`` and ``<key>.progress.json`` record the rows done, so a killed
run resumes where it stopped.

A torch backbone computes where it lies (``to_training_device`` puts it on the trainer's GPU; bf16 there
when the backbone allows it) while a thread reads the next batch of faces; dlib, which runs outside torch
holding the GIL, spreads its batches over processes. On the CPU the features are those of a plain loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm import tqdm

from antimask.backbones.base import features_of
from antimask.backbones.registry import backbone_from_config
from antimask.errors import AntimaskError
from antimask.files import atomic_write_json, read_json
from antimask.parallel import in_order

CACHE_VERSION = 1
CHECK_ROWS = 4096  # rows per block when scanning a cache for NaN/inf
# The rows done are flushed and recorded at most this often (and when the computation stops, even by an
# error): a GPU computes a batch in milliseconds, and a flush per batch would cost more than the batch.
SAVE_EVERY_S = 1.0
POOL_MIN_ROWS = 256  # fewer rows than this are not worth starting processes for


class FeatureCacheError(AntimaskError, RuntimeError):
    """A feature cache that is unreadable, of the wrong shape, or holds NaN/inf."""


def features_dir(store) -> Path:
    return Path(store.root) / "features"


def cache_file(store, key: str) -> Path:
    """The complete feature cache ``key`` of ``store`` (it exists only once every row is computed)."""
    return features_dir(store) / f"{key}.npy"


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
    path = cache_file(store, key)
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
    return load_cached_features(store, key) if cache_file(store, key).exists() else None


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


def cached_features(store, backbone, batch_size: int = 64, progress: bool = True, workers: int = 1) -> np.ndarray:
    """(N, D) float32 features of every stored face (photos then morphs), from the cache when present.

    Computed from the stored images at their stored size (224), whatever size training uses, on the
    backbone's device (move it first with ``to_training_device``). ``workers``: processes for a backbone
    outside torch (dlib); 0 = every CPU core.
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
        return _compute(store, backbone, key, desc, batch_size, progress, workers)


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


def _compute(store, backbone, key: str, desc: dict, batch_size: int, progress: bool, workers: int) -> np.ndarray:
    folder = features_dir(store)
    final, meta = folder / f"{key}.npy", folder / f"{key}.json"
    partial, progress_path = folder / f"{key}.partial.npy", folder / f"{key}.progress.json"
    n, dim = len(store), int(backbone.feature_dim)
    array, done = _open_partial(partial, progress_path, desc, (n, dim))
    saved, last_save = done, time.monotonic()
    device = backbone.device
    precision = "bf16" if device.type == "cuda" and backbone.bf16 else "float32"
    try:
        with tqdm(total=n, initial=done, disable=not progress, desc=f"features {backbone.name} ({device.type})",
                  unit="face") as bar, DescriptorPool(workers) as pool:
            for start, stop, out in _feature_batches(store.images, done, n, batch_size, backbone, pool):
                if out.shape != (stop - start, dim):
                    raise FeatureCacheError(f"backbone {backbone.name} returned {out.shape} for rows "
                                            f"{start}..{stop - 1}, expected ({stop - start}, {dim})")
                bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
                if len(bad):
                    raise FeatureCacheError(f"backbone {backbone.name} gave NaN/inf features for store rows "
                                            f"{(start + bad).tolist()[:20]} of {store.root}")
                array[start:stop] = out
                done = stop
                bar.update(stop - start)
                if time.monotonic() - last_save >= SAVE_EVERY_S:
                    saved, last_save = _save_progress(array, progress_path, desc, done), time.monotonic()
    finally:  # stopped, by the end or an error: the rows computed so far are kept for the next run
        if done > saved:
            _save_progress(array, progress_path, desc, done)
    del array
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
    atomic_write_json(meta, {**desc, "key": key, "shape": [n, dim], "computed_on": device.type, "precision": precision})
    progress_path.unlink(missing_ok=True)
    (folder / f"{key}.lock").unlink(missing_ok=True)
    return load_cached_features(store, key)


def _save_progress(array: np.ndarray, progress_path: Path, desc: dict, done: int) -> int:
    array.flush()  # the rows must be on disk before the progress file says they are
    atomic_write_json(progress_path, {"description": desc, "done": done})
    return done


class DescriptorPool:
    """Processes for a backbone outside torch (dlib): its batches spread over ``workers`` of them (0 = every
    CPU core). Started on first use and kept until ``close`` (or the ``with`` block's end), so that an
    evaluation's many feature passes pay the processes' start once."""

    def __init__(self, workers: int = 0, min_rows: Optional[int] = None):
        self.workers = int(workers) or os.cpu_count() or 1
        # a caller with many passes of a few faces each sets this lower: the start is paid once for them all
        self.min_rows = POOL_MIN_ROWS if min_rows is None else int(min_rows)
        self._executor: Optional[ProcessPoolExecutor] = None
        self.broken = False

    def spreads(self, backbone, rows: int) -> bool:
        """Whether ``rows`` faces for ``backbone`` are worth spreading (not a torch network, >1 process, enough
        rows, and the processes have not died before)."""
        return not backbone.torch_network and self.workers > 1 and rows >= max(self.min_rows, 2) and not self.broken

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the caller may hold threads (Lightning's, dlib's own) or a GPU context
            self._executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                                 initializer=_init_worker)
        return self._executor

    def close(self, broken: bool = False) -> None:
        self.broken = self.broken or broken
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "DescriptorPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def features_in_memory(backbone, faces: np.ndarray, batch_size: int = 64,
                       pool: Optional[DescriptorPool] = None) -> np.ndarray:
    """(N, D) float32 features of uint8 faces (N, S, S, 3) held in memory, computed as the cache computes
    them: a torch backbone batched on its device, one outside torch spread over ``pool``'s processes
    (in this process without a pool, or for fewer faces than its ``min_rows``)."""
    out = [f for _, _, f in _feature_batches(faces, 0, len(faces), batch_size, backbone, pool or DescriptorPool(1))]
    return np.concatenate(out) if out else np.zeros((0, int(backbone.feature_dim)), np.float32)


def _feature_batches(images, start: int, stop: int, batch_size: int, backbone,
                     pool: DescriptorPool) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first row, end row, features) of each batch of ``images[start:stop]``, in order."""
    pooled = pool.spreads(backbone, stop - start)
    if pooled:  # as many batches of about equal size as keep every process busy to the end
        batches = math.ceil(math.ceil((stop - start) / batch_size) / pool.workers) * pool.workers
        batch_size = max(1, math.ceil((stop - start) / batches))
    starts = range(start, stop, batch_size)

    def read(s: int) -> np.ndarray:
        return np.ascontiguousarray(images[s:min(s + batch_size, stop)])

    if pooled:
        executor, done = pool.executor(), start
        try:
            # at most two batches per process in flight: the faces travel to them, the store may not fit in memory
            for s, out in in_order(lambda s: executor.submit(_worker_features, backbone, read(s)), starts,
                                 2 * pool.workers):
                yield s, min(s + batch_size, stop), out
                done = min(s + batch_size, stop)
            return
        except BrokenProcessPool as err:  # a process died (killed, out of memory, a script read from stdin)
            pool.close(broken=True)
            print(f"[features] {backbone.name}'s worker processes stopped ({err}); rows {done}..{stop - 1} and "
                  "every later pass run in this process")
            starts = range(done, stop, batch_size)
    # torch (or one process): the next batch is read from the memory-mapped store while this one computes
    with ThreadPoolExecutor(1) as reader:
        for s, faces in in_order(lambda s: reader.submit(read, s), starts, 1):
            yield s, min(s + batch_size, stop), features_of(backbone, faces)


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per process: the pool is the parallelism


def _worker_features(backbone, faces: np.ndarray) -> np.ndarray:
    return features_of(backbone, faces)
