"""`antimask prepare`: photos -> detected, landmarked, aligned faces -> a store.

Work is done in chunks that are written atomically under ``STORE/parts/``; a re-run (or a run after
a crash) skips every photo whose content hash a finished part already holds, then consolidates the
parts into the store in source-path order, so an interrupted run ends with the same store as an
uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing as mp
import os
import warnings
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from antimask.config import FaceFinderConfig, PrepareConfig, save_config, split_row_for
from antimask.data.sample import write_sample
from antimask.data.store import SPLITS, Table, read_table, write_group
from antimask.faces import finder
from antimask.faces.photos import Rejected, find_images, load_rgb
from antimask.files import atomic_path, atomic_write_json, file_digest, read_json

# Options that change what prepare writes for a photo; parts made with other values are not reused.
_PHOTO_OPTIONS = ("image_size", "pad", "upsample", "cnn_fallback", "crop_fallback", "crop_max_aspect", "keep",
                  "min_face", "max_yaw", "max_residual", "max_pixels", "detect_max_side")
# The face finder's other keys came after the first stores were written: they join the digest only when
# they differ from their defaults (which behave as prepare did before them), so those stores' parts are reused.
_FINDER_OPTIONS = tuple(f.name for f in fields(FaceFinderConfig) if f.name not in _PHOTO_OPTIONS)


@dataclass
class Photo:
    path: Path
    sha1: str
    source_root: Path


def process_photo(path: str, options: dict) -> dict:
    """Find, landmark and align the face of one photo with the face finder ``predict`` runs too.

    Returns ``{"status": "ok", "image", "landmarks", ...}`` or ``{"status": "rejected", "reason"}``;
    never raises for a bad photo.
    """
    try:
        rgb = load_rgb(path, options["max_pixels"], options["min_face"])  # as predict: no face fits
        detectors = ["hog"] + ["cnn"] * bool(options["cnn_fallback"]) + ["crop"] * bool(options["crop_fallback"])
        size = options["image_size"]
        found = finder.find_faces(rgb, options, size, split_row_for(size), detectors=detectors,
                                  keep=options["keep"], section="prepare")
        face = found.faces[0]
        return {"status": "ok", "image": face.aligned, "landmarks": face.aligned_landmarks, "detector": face.detector,
                "faces_found": found.boxes, "yaw": face.yaw, "residual": face.residual}
    except Rejected as err:
        return {"status": "rejected", "reason": str(err)}
    except Exception as err:  # a photo must never stop the run; the reason names what went wrong
        return {"status": "rejected", "reason": f"failed: {type(err).__name__}: {err}"}


def _work(item: tuple[str, str, dict]) -> tuple[str, dict]:
    path, sha1, options = item
    return sha1, process_photo(path, options)


def _photo_options(cfg: DictConfig) -> dict:
    prepare = OmegaConf.to_container(cfg.prepare, resolve=True)
    return {k: prepare[k] for k in _PHOTO_OPTIONS + _FINDER_OPTIONS}


def _options_digest(options: dict) -> str:
    defaults = PrepareConfig()
    keyed = {k: v for k, v in options.items() if k in _PHOTO_OPTIONS or v != getattr(defaults, k)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def _done_parts(folder: Path) -> dict[str, dict]:
    """sha1 -> {"part": npz path, "index": row in part or -1, "result": record} for finished parts."""
    done: dict[str, dict] = {}
    for meta_path in sorted(folder.glob("part-*.json")):
        try:
            records = read_json(meta_path)
        except (OSError, json.JSONDecodeError):
            continue  # a torn write cannot happen (atomic), but a hand-edited file must not stop the run
        npz = meta_path.with_suffix(".npz")
        for rec in records:
            done[rec["sha1"]] = {"part": npz, **rec}
    return done


def _write_part(folder: Path, results: list[tuple[str, dict]]) -> None:
    images = [r["image"] for _, r in results if r["status"] == "ok"]
    landmarks = [r["landmarks"] for _, r in results if r["status"] == "ok"]
    records, index = [], 0
    for sha1, r in results:
        rec = {"sha1": sha1, "status": r["status"]}
        if r["status"] == "ok":
            rec.update(index=index, detector=r["detector"], faces_found=r["faces_found"], yaw=r["yaw"],
                       residual=r["residual"])
            index += 1
        else:
            rec["reason"] = r["reason"]
        records.append(rec)
    name = "part-" + hashlib.sha1("".join(s for s, _ in results).encode()).hexdigest()[:16]
    with atomic_path(folder / f"{name}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, images=np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8),
                     landmarks=np.stack(landmarks) if landmarks else np.zeros((0, 68, 2), np.float32))
    atomic_write_json(folder / f"{name}.json", records)  # written last: the part counts as done


def _identities(photos: list[Photo], cfg: DictConfig) -> list[str]:
    mode = cfg.prepare.identity
    manifest: dict[str, str] = {}
    if cfg.prepare.identity_manifest:
        mode = "manifest" if mode == "auto" else mode
        with open(cfg.prepare.identity_manifest, newline="") as fh:
            for row in csv.DictReader(fh):
                manifest[row["file"]] = row["identity"]
    if mode == "auto":
        nested = any(p.path.parent.resolve() != p.source_root.resolve() for p in photos)
        mode = "folder" if nested else "photo"
    ids = []
    for p in photos:
        folder = p.path.parent.relative_to(p.source_root)  # as found: a person folder may link outside the source
        if mode == "folder" and folder != Path("."):
            ids.append(str(folder))
        elif mode == "manifest":
            key = next((k for k in (str(p.path), p.path.name, str(p.path.relative_to(p.source_root)))
                        if k in manifest), None)
            ids.append(manifest[key] if key else f"photo:{p.path.name}")
        else:  # a flat folder, or a photo beside the person folders of its source (or named on its own): one each
            ids.append(f"photo:{p.sha1[:12]}")
    return ids


def assign_splits(identities: list[str], test_fraction: float, val_fraction: float, seed: int) -> dict[str, str]:
    """identity -> train/val/test, seeded, by whole identities (no identity crosses splits)."""
    unique = sorted(set(identities))
    order = np.random.default_rng(seed).permutation(len(unique))
    n = len(unique)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if n >= 3:  # small sets still get a face in every split the fractions ask for
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    split = {}
    for rank, i in enumerate(order):
        split[unique[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return split


def _reason_key(reason: str) -> str:
    return reason.split(":", 1)[0]


def prepare_store(sources: Iterable[str | Path], out: str | Path, cfg: DictConfig, progress: bool = True) -> dict:
    """Prepare (or complete, or refresh) the store at ``out`` from photos under ``sources``.

    Returns the summary that is also written to ``out/summary.json``.
    """
    out = Path(out)
    sources = [Path(s) for s in sources]
    files = find_images(sources)
    if cfg.prepare.max_photos:
        files = files[: cfg.prepare.max_photos]
    out.mkdir(parents=True, exist_ok=True)
    options = _photo_options(cfg)
    parts = out / "parts" / _options_digest(options)
    parts.mkdir(parents=True, exist_ok=True)

    photos: list[Photo] = []
    rejected: list[tuple[str, str]] = []
    for path in files:
        source = next(s for s in sources if s == path or s in path.parents)
        root = source.parent if source == path else source  # a photo given by name: its folder is the root
        try:
            photos.append(Photo(path, file_digest(path, "sha1"), root))
        except OSError as err:
            rejected.append((str(path), f"unreadable file: {err.strerror or err}"))

    done = _done_parts(parts)
    todo, queued = [], set()
    for p in photos:
        if p.sha1 not in done and p.sha1 not in queued:
            todo.append((str(p.path), p.sha1, options))
            queued.add(p.sha1)
    workers = cfg.prepare.workers or os.cpu_count() or 1
    if todo:
        _run_chunks(todo, parts, workers, cfg.prepare.chunk, progress)
        done = _done_parts(parts)

    summary = _consolidate(out, photos, rejected, done, cfg, len(files))
    if progress:
        print(json.dumps(summary, indent=2))
    return summary


def _run_chunks(todo: list, parts: Path, workers: int, chunk: int, progress: bool) -> None:
    bar = tqdm(total=len(todo), desc="prepare", unit="photo", disable=not progress)
    buffer: list[tuple[str, dict]] = []

    def consume(results):
        for item in results:
            buffer.append(item)
            bar.update()
            if len(buffer) >= chunk:
                _write_part(parts, buffer)
                buffer.clear()
        if buffer:
            _write_part(parts, buffer)
            buffer.clear()

    if workers <= 1 or len(todo) < 2:
        consume(map(_work, todo))
    else:
        # Not fork: a parent that has run dlib's CNN detector hands its thread-pool state to forked
        # children, which then deadlock in the detector. forkserver children start from a clean process.
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(min(workers, len(todo))) as pool:
            consume(pool.imap(_work, todo, chunksize=2))
    bar.close()


def _consolidate(out: Path, photos: list[Photo], rejected: list[tuple[str, str]], done: dict, cfg: DictConfig,
                 found: int) -> dict:
    accepted: list[tuple[Photo, dict]] = []
    first_path: dict[str, Path] = {}
    for p in photos:
        rec = done[p.sha1]
        if p.sha1 in first_path:
            rejected.append((str(p.path), f"duplicate: same content as {first_path[p.sha1]}"))
            continue
        first_path[p.sha1] = p.path
        if rec["status"] == "ok":
            accepted.append((p, rec))
        else:
            rejected.append((str(p.path), rec["reason"]))
    accepted.sort(key=lambda pr: str(pr[0].path))
    identities = _identities([p for p, _ in accepted], cfg)
    splits = assign_splits(identities, cfg.prepare.test_fraction, cfg.prepare.val_fraction, cfg.prepare.seed)

    size = cfg.prepare.image_size
    inputs = hashlib.sha256(json.dumps(
        [[str(p.path), p.sha1, i] for (p, _), i in zip(accepted, identities)]
        + [_options_digest(_photo_options(cfg)), cfg.prepare.test_fraction, cfg.prepare.val_fraction, cfg.prepare.seed]
    ).encode()).hexdigest()[:16]
    header_path = out / "header.json"
    unchanged = header_path.exists() and read_json(header_path).get("inputs") == inputs

    records = []
    for row, ((p, rec), ident) in enumerate(zip(accepted, identities)):
        records.append({"row": row, "kind": "photo", "source": str(p.path), "sha1": p.sha1, "identity": ident,
                        "split": splits[ident], "detector": rec["detector"], "faces_found": rec["faces_found"],
                        "yaw": round(rec["yaw"], 3), "residual": round(rec["residual"], 4)})
    if not unchanged:
        _warn_if_resplit(out, records)
        _write_photo_group(out, accepted, records, size, inputs)

    rejected.sort()
    with atomic_path(out / "rejected.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "reason"])
            writer.writerows(rejected)
    counts = Counter(r["split"] for r in records)
    previous = read_json(out / "summary.json") if (out / "summary.json").exists() else {}
    summary = {
        **{k: v for k, v in previous.items() if k.startswith("morph")},
        "found": found,
        "aligned": len(records),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(_reason_key(r) for _, r in rejected).items())),
        "splits": {s: counts.get(s, 0) for s in SPLITS},
        "identities": {s: len({r["identity"] for r in records if r["split"] == s}) for s in SPLITS},
        "detectors": dict(sorted(Counter(r["detector"] for r in records).items())),
        "several_faces_largest_kept": sum(1 for r in records if r["faces_found"] > 1),
        "image_size": size,
    }
    atomic_write_json(out / "summary.json", summary)

    save_config(cfg, out, "prepare_config.yaml")
    return summary


def _warn_if_resplit(out: Path, records: list[dict]) -> None:
    """Rebuilding a store that moves photos it already held to another split leaves every run trained on it
    with test faces it may have trained on: say so, by name (the rebuild itself is what was asked for)."""
    meta = out / "meta.csv"  # the photo group's: morphs keep theirs in morphs/meta.csv
    if not (out / "header.json").exists() or not meta.exists():
        return
    old = read_table(meta)
    before = dict(zip(old["sha1"], old["split"]))
    moved = sum(1 for r in records if r["sha1"] in before and before[r["sha1"]] != r["split"])
    if moved:
        warnings.warn(f"{out}: rebuilt with another split ({moved} photos moved; prepare.seed, the split fractions or "
                      "the photos changed): runs trained on this store before now evaluate on faces they may have "
                      "trained on; give each split its own data.store")


def _write_photo_group(out: Path, accepted: list, records: list[dict], size: int, inputs: str) -> None:
    n = len(accepted)
    build = out / ".images.build.npy"
    images = np.lib.format.open_memmap(build, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    landmarks = np.zeros((n, 68, 2), np.float32)
    by_part: dict[Path, list[tuple[int, int]]] = {}
    for row, (_, rec) in enumerate(accepted):
        by_part.setdefault(rec["part"], []).append((row, rec["index"]))
    for part, rows in by_part.items():
        with np.load(part) as data:
            part_images, part_landmarks = data["images"], data["landmarks"]
        for row, index in rows:
            images[row] = part_images[index]
            landmarks[row] = part_landmarks[index]
    images.flush()
    del images
    write_group(out, build, landmarks, Table.from_records(records), {"inputs": inputs, "image_size": size})


def sample_sources(folder: Optional[str | Path] = None) -> list[Path]:
    """The embedded sample's photo folder, written on first use (see ``antimask.data.sample``)."""
    return [write_sample(folder)]
