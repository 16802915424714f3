"""The face store: aligned uint8 faces memory-mapped on disk, their landmarks and a metadata table.

Layout of a store folder (format version ``STORE_VERSION``)::

    header.json      format, version, image_size, photo count, content digest (written last)
    images.npy       uint8 (N, S, S, 3) aligned RGB faces, S = prepare.image_size (224)
    landmarks.npy    float32 (N, 68, 2) dlib's 68 points in aligned pixel coordinates (x, y)
    meta.csv         one row per face (see ``META_COLUMNS``)
    summary.json     counts: found, aligned, rejected by reason, per split, morphs
    rejected.csv     file,reason for every file not used
    morphs/          the same four files for the morph rows added by ``antimask augment``
    features/        cached backbone features, one .npy + .json per (backbone, weights)
    parts/           prepare's atomically written chunks, kept so a re-run skips done photos

Rows 0..N-1 are photos, N..N+M-1 morphs (train split only). Every file is written atomically and
the header last, so a store whose header is missing or disagrees with its arrays is incomplete.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from antimask.errors import AntimaskError
from antimask.files import atomic_path, atomic_write_json, read_json

STORE_FORMAT = "antimask-store"
STORE_VERSION = 1
META_COLUMNS = (
    "row", "kind", "source", "sha1", "identity", "split", "detector", "faces_found", "yaw", "residual",
    "parent_a", "parent_b", "blend",
)
_INT_COLUMNS = ("row", "faces_found", "parent_a", "parent_b")
_FLOAT_COLUMNS = ("yaw", "residual", "blend")
SPLITS = ("train", "val", "test")


class StoreError(AntimaskError, RuntimeError):
    """A store that is missing, incomplete, or from another format version."""


def rebuild_hint(root: Path) -> str:
    return f"rebuild it with `antimask prepare SRC --out {root}` (delete the folder first if it persists)"


@dataclass
class Table:
    """Column-oriented metadata: a dict of equal-length numpy arrays."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @classmethod
    def from_records(cls, records: list[dict]) -> "Table":
        cols = {}
        for name in META_COLUMNS:
            values = [r.get(name, _default(name)) for r in records]
            cols[name] = np.asarray(values, dtype=_dtype(name)) if values else np.empty(0, _dtype(name))
        return cls(cols)

    def records(self) -> list[dict]:
        return [{k: _plain(v[i]) for k, v in self.columns.items()} for i in range(len(self))]

    def concat(self, other: "Table") -> "Table":
        if not len(other):
            return self
        if not len(self):
            return other
        return Table({k: np.concatenate([self[k], other[k]]) for k in self.columns})


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _default(name: str):
    if name in _INT_COLUMNS:
        return -1
    if name in _FLOAT_COLUMNS:
        return float("nan")
    return ""


def _dtype(name: str):
    if name in _INT_COLUMNS:
        return np.int64
    if name in _FLOAT_COLUMNS:
        return np.float64
    return object


def write_table(path: Path, table: Table) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(META_COLUMNS)
            for rec in table.records():
                writer.writerow([rec[c] for c in META_COLUMNS])


def read_table(path: Path) -> Table:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in META_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise StoreError(f"{path}: metadata lacks columns {missing}")
    records = []
    for r in rows:
        rec: dict = dict(r)
        for c in _INT_COLUMNS:
            rec[c] = int(r[c])
        for c in _FLOAT_COLUMNS:
            rec[c] = float(r[c]) if r[c] not in ("", "nan") else float("nan")
        records.append(rec)
    return Table.from_records(records)


_DIGEST_CHUNK_BYTES = 64 << 20  # hashed as one piece; fixed, so the digest does not depend on the thread count


def digest_arrays(*arrays: np.ndarray, names: Iterable[str] = ()) -> str:
    """A content digest of every row of the arrays and of ``names`` (the faces' sha1s), 16 hex digits.

    Every row counts: the resized faces, the teacher features and the morphs are reused while the digest
    stays the same, so a store refreshed with one face changed must get another one. It is computed only when
    a group is written (``write_group``), never when a store opens: blake2b over fixed pieces on every core
    (hashlib lets go of the GIL), ~2 s for 23,708 faces of 224 px (3.6 GB) on 2 cores, ~0.9 GB/s per core.
    """
    pieces = []
    for a in arrays:
        row_bytes = max(1, a.dtype.itemsize * int(np.prod(a.shape[1:])))
        step = max(1, _DIGEST_CHUNK_BYTES // row_bytes)
        pieces.append(_bytes(f"{a.shape}{a.dtype}"))
        pieces.extend(a[start:start + step] for start in range(0, len(a), step))
    pieces.append(_bytes("\n".join(str(name) for name in names)))
    with ThreadPoolExecutor(min(len(pieces), os.cpu_count() or 1)) as pool:
        hashes = pool.map(lambda piece: hashlib.blake2b(np.ascontiguousarray(piece), digest_size=16).digest(), pieces)
        return hashlib.blake2b(b"".join(hashes), digest_size=8).hexdigest()


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8)


def write_group(folder: Path, images: np.ndarray | Path, landmarks: np.ndarray, table: Table, extra: dict) -> dict:
    """Write one group of rows (photos or morphs) atomically; the header goes last.

    ``images`` is an array, or the path of a finished ``.npy`` file (written beside the store, e.g.
    with ``np.lib.format.open_memmap``) that is moved into place without copying.
    """
    folder.mkdir(parents=True, exist_ok=True)
    built = None
    if isinstance(images, Path):
        built, images = images, np.load(images, mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    if not (len(images) == len(landmarks) == len(table)):
        raise ValueError(f"row counts differ: {len(images)} images, {len(landmarks)} landmarks, {len(table)} meta")
    # Everything new is written beside the old files first: a full disk (or any write error) up to here
    # leaves the previous group untouched and still opening. Only the renames below change the store.
    staged: dict[str, Path] = {}
    try:
        if built is None:
            staged["images.npy"] = _stage(folder / "images.npy", lambda fh: np.save(fh, images))
        else:
            del images
            with open(built, "rb+") as fh:  # on disk before the rename makes it the store's
                os.fsync(fh.fileno())
            staged["images.npy"] = built
        staged["landmarks.npy"] = _stage(folder / "landmarks.npy",
                                         lambda fh: np.save(fh, landmarks.astype(np.float32)))
        tmp_meta = folder / f".meta.csv.{os.getpid()}.staged"
        write_table(tmp_meta, table)
        staged["meta.csv"] = tmp_meta
    except BaseException:
        for name, path in staged.items():
            if path != built:
                path.unlink(missing_ok=True)
        raise
    header_path = folder / "header.json"
    if header_path.exists():  # the arrays are about to change: the old header must not vouch for them
        header_path.unlink()
    for name, path in staged.items():
        os.replace(path, folder / name)
    images = np.load(folder / "images.npy", mmap_mode="r")
    header = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "image_size": int(images.shape[1]) if len(images) else int(extra.get("image_size", 0)),
        "count": int(len(images)),
        "digest": digest_arrays(images, landmarks.astype(np.float32), names=table["sha1"]),
        **extra,
    }
    atomic_write_json(header_path, header)
    return header


def _stage(path: Path, write) -> Path:
    """``write(fh)`` into a synced temporary file beside ``path``; returns it (removed again on failure)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".staged", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path


def _read_group(folder: Path, root: Path) -> tuple[dict, np.ndarray, np.ndarray, Table]:
    header_path = folder / "header.json"
    if not header_path.exists():
        raise StoreError(f"{folder}: no header.json, the store is incomplete; {rebuild_hint(root)}")
    header = read_json(header_path)
    if header.get("format") != STORE_FORMAT:
        raise StoreError(f"{header_path}: not an antimask store; {rebuild_hint(root)}")
    if header.get("version") != STORE_VERSION:
        raise StoreError(
            f"{header_path}: store format version {header.get('version')}, this antimask reads version "
            f"{STORE_VERSION}; {rebuild_hint(root)}")
    try:
        images = np.load(folder / "images.npy", mmap_mode="r")
        landmarks = np.load(folder / "landmarks.npy", mmap_mode="r")
    except (OSError, ValueError) as err:
        raise StoreError(f"{folder}: missing or truncated array ({err}); {rebuild_hint(root)}") from None
    table = read_table(folder / "meta.csv") if (folder / "meta.csv").exists() else None
    if table is None:
        raise StoreError(f"{folder / 'meta.csv'}: missing; {rebuild_hint(root)}")
    n = header["count"]
    if not (len(images) == len(landmarks) == len(table) == n):
        raise StoreError(
            f"{folder}: header says {n} rows but images {len(images)}, landmarks {len(landmarks)}, meta "
            f"{len(table)}; {rebuild_hint(root)}")
    return header, images, landmarks, table


class RowArray:
    """Read-only view of several memory-mapped arrays as one, indexed by row."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = [p for p in parts]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple:
        return (len(self),) + tuple(self.parts[0].shape[1:])

    @property
    def dtype(self):
        return self.parts[0].dtype

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(index)
            g = int(np.searchsorted(self.offsets, i, side="right") - 1)
            return self.parts[g][i - self.offsets[g]]
        if isinstance(index, slice) and index.step in (None, 1):  # a run of rows: one copy per part, not per row
            start, stop, _ = index.indices(len(self))
            pieces = [p[max(start - o, 0):max(min(stop - o, len(p)), 0)] for p, o in zip(self.parts, self.offsets)]
            pieces = [p for p in pieces if len(p)]
            return np.concatenate(pieces) if pieces else np.empty((0,) + self.shape[1:], self.dtype)
        rows = np.arange(len(self))[index]
        return np.stack([self[int(r)] for r in rows]) if len(rows) else np.empty((0,) + self.shape[1:], self.dtype)


@dataclass
class Store:
    """An opened store: memory-mapped images and landmarks, metadata, header and summary."""

    root: Path
    header: dict
    images: RowArray  # uint8 (N+M, S, S, 3)
    landmarks: RowArray  # float32 (N+M, 68, 2)
    meta: Table
    morph_header: Optional[dict] = None

    @property
    def image_size(self) -> int:
        return int(self.header["image_size"])

    @property
    def num_photos(self) -> int:
        return int(self.header["count"])

    @property
    def num_morphs(self) -> int:
        return int(self.morph_header["count"]) if self.morph_header else 0

    def __len__(self) -> int:
        return self.num_photos + self.num_morphs

    def rows(self, split: str, morphs: bool = True) -> np.ndarray:
        mask = self.meta["split"] == split
        if not morphs:
            mask &= self.meta["kind"] == "photo"
        return np.flatnonzero(mask)

    @property
    def digest(self) -> str:
        """Identifies the store's contents (photos and morphs) for caches and manifests."""
        morph = self.morph_header["digest"] if self.morph_header else "none"
        return f"{self.header['digest']}-{morph}"

    @property
    def split_digest(self) -> str:
        """Identifies which photo is in which split (the content digest does not): a run records it, so an
        evaluation notices a store re-split under it (other prepare.seed or fractions)."""
        photos = self.meta["kind"] == "photo"
        pairs = "\n".join(f"{sha}:{split}" for sha, split in zip(self.meta["sha1"][photos], self.meta["split"][photos]))
        return hashlib.sha256(pairs.encode()).hexdigest()[:16]

    def summary(self) -> dict:
        path = self.root / "summary.json"
        return read_json(path) if path.exists() else {}


def open_store(path: str | Path) -> Store:
    """Open a store in one call: images, landmarks and metadata of photos and morphs."""
    root = Path(path)
    if not root.is_dir():
        raise StoreError(f"{root}: no store here; create one with `antimask prepare SRC --out {root}`")
    header, images, landmarks, table = _read_group(root, root)
    parts_i, parts_l, meta = [images], [landmarks], table
    morph_header = None
    if (root / "morphs" / "header.json").exists():
        morph_header, m_img, m_lmk, m_table = _read_group(root / "morphs", root)
        if morph_header.get("photos_digest") != header["digest"]:
            raise StoreError(f"{root / 'morphs'}: morphs were made from other photos; rerun `antimask augment {root}`")
        if len(m_img):
            parts_i.append(m_img)
            parts_l.append(m_lmk)
            meta = meta.concat(m_table)
    return Store(root, header, RowArray(parts_i), RowArray(parts_l), meta, morph_header)
