"""`antimask prepare` on real photos, on every kind of bad input, and after being killed part-way."""

from __future__ import annotations

import csv
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from antimask.cli import main as cli_main
from antimask.config import load_config
from antimask.data.prepare import Photo, _write_photo_group, prepare_store
from antimask.data.resized import build_resized_cache, cache_valid, faces_at
from antimask.data.sample import portraits
from antimask.data.store import open_store
from antimask.faces import align

from helpers import adult_utkface


def _rejected(store: Path) -> dict[str, str]:
    with open(store / "rejected.csv", newline="") as fh:
        return {Path(r["file"]).name: r["reason"] for r in csv.DictReader(fh)}


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming width x height, with no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    face = portraits()["astronaut"]
    Image.fromarray(face).save(folder / "good.jpg", quality=95)
    (folder / "zero.jpg").write_bytes(b"")
    full = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (folder / "text.jpg").write_text("this is not an image\n")
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noface.png")
    small = np.asarray(Image.fromarray(face).resize((150, 150)))
    two = np.full((300, 560, 3), 200, np.uint8)
    two[:, :300] = face
    two[75:225, 380:530] = small
    Image.fromarray(two).save(folder / "two_faces.png")
    gray16 = (face.mean(2) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "sixteen_bit.png")
    assert Image.open(folder / "sixteen_bit.png").mode.startswith("I;16")
    Image.fromarray(face).convert("CMYK").save(folder / "cmyk.jpg")
    rotated = Image.fromarray(np.rot90(face, k=1).copy())  # stored on its side (turned left)...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the EXIF tag that says "rotate 90 degrees clockwise to view"
    rotated.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    _png_header_only(folder / "huge.png", 40000, 40000)
    Image.fromarray(face).resize((40, 30)).save(folder / "tiny.png")  # shorter than prepare.min_face=48
    (folder / "UPPER.JPEG").write_bytes((folder / "good.jpg").read_bytes() + b"")  # same content: duplicate
    return folder


@pytest.fixture(scope="module")
def bad_store(bad_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_store")
    prepare_store([bad_inputs], out, load_config(None, ["prepare.workers=2"]), progress=False)
    return out


def test_every_bad_input_is_rejected_with_its_reason(bad_store):
    reasons = _rejected(bad_store)
    assert "empty file" in reasons["zero.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "not an image" in reasons["text.jpg"]
    assert "no face found" in reasons["noface.png"]
    assert "too large" in reasons["huge.png"] and "40000x40000" in reasons["huge.png"]
    assert reasons["tiny.png"] == "image too small: 40x30 pixels, under the smallest face (min_face=48 px a side)"
    assert "duplicate" in reasons["good.jpg"] or "duplicate" in reasons["UPPER.JPEG"]
    summary = open_store(bad_store).summary()
    assert summary["found"] == 12 and summary["aligned"] == 5 and summary["rejected"] == 7


def test_good_odd_formats_are_aligned(bad_store):
    store = open_store(bad_store)
    names = {Path(s).name: i for i, s in enumerate(store.meta["source"])}
    assert {"sixteen_bit.png", "cmyk.jpg", "exif_rotated.jpg", "two_faces.png"} <= set(names)
    for name, row in names.items():
        err = np.linalg.norm(store.landmarks[row] - align.template(224), axis=1).mean()
        assert err < 6, f"{name}: aligned landmarks {err:.1f} px from the template"
    good = names.get("good.jpg", names.get("UPPER.JPEG"))
    # The EXIF-rotated photo is turned upright before detection: its aligned face matches the original's.
    diff = np.abs(store.images[names["exif_rotated.jpg"]].astype(int) - store.images[good].astype(int)).mean()
    assert diff < 12, f"EXIF-rotated face differs from the upright one by {diff:.1f} grey levels"
    assert store.meta["faces_found"][names["two_faces.png"]] == 2
    # The largest face was kept: the aligned face matches the full-size portrait, not the small copy.
    assert np.abs(store.images[names["two_faces.png"]].astype(int) - store.images[good].astype(int)).mean() < 12
    assert store.summary()["several_faces_largest_kept"] == 1


def test_missing_or_empty_source_is_an_error(tmp_path, capsys):
    assert cli_main(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert cli_main(["prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "s")]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_prepare_200_utkface_photos(utkface_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in adult_utkface(utkface_dir, 200):
        (photos / p.name).symlink_to(p)
    out = tmp_path / "store"
    summary = prepare_store([photos], out, load_config(None, ["prepare.workers=2"]), progress=False)
    store = open_store(out)
    assert summary["found"] == 200 and summary["aligned"] + summary["rejected"] == 200
    assert summary["aligned"] >= 185, summary
    assert store.images.shape[1:] == (224, 224, 3) and store.images.dtype == np.uint8
    assert isinstance(store.images.parts[0], np.memmap)
    assert sum(summary["splits"].values()) == summary["aligned"]
    assert abs(summary["splits"]["test"] / summary["aligned"] - 0.2) < 0.03
    # Faces differ in shape, so not every point lands on the template, but the eyes (which the
    # similarity transform pins down) must: their centres within a few pixels on the median face.
    lmk = np.asarray(store.landmarks[:])
    t = align.template(224)
    eye_err = np.linalg.norm(lmk[:, 36:48].mean(1) - t[36:48].mean(0), axis=1)
    assert np.median(eye_err) < 4, f"median eye-centre error {np.median(eye_err):.1f} px"
    assert np.linalg.norm(lmk - t, axis=2).mean() < 8
    # A re-run over the same photos does no detection work and leaves the store as it was.
    before = (out / "images.npy").stat().st_mtime_ns
    again = prepare_store([photos], out, load_config(None, ["prepare.workers=2"]), progress=False)
    assert again["aligned"] == summary["aligned"] and (out / "images.npy").stat().st_mtime_ns == before
    # run.seed seeds training only: runs of several seeds share the store and its test split.
    split, split_digest = list(store.meta["split"]), store.split_digest
    prepare_store([photos], out, load_config(None, ["prepare.workers=2", "run.seed=5"]), progress=False)
    assert (out / "images.npy").stat().st_mtime_ns == before and open_store(out).split_digest == split_digest
    # prepare.seed re-splits it, with a warning that names the store (runs trained on it see other test faces).
    with pytest.warns(UserWarning, match=r"rebuilt with another split \(\d+ photos moved"):
        prepare_store([photos], out, load_config(None, ["prepare.workers=2", "prepare.seed=5"]), progress=False)
    resplit = open_store(out)
    assert list(resplit.meta["split"]) != split and resplit.split_digest != split_digest
    assert resplit.digest == store.digest  # same faces: caches of images and features stay valid


def test_prepare_afdb_people_never_cross_splits(afdb_dir, tmp_path):
    people = sorted(p for p in afdb_dir.iterdir() if p.is_dir())
    assert len(people) == 99
    photos, linked = tmp_path / "photos", 0
    for person in people:  # up to four photos of each of the 99 people, in a folder per person
        (photos / person.name).mkdir(parents=True)
        for p in sorted(person.iterdir())[:4]:
            (photos / person.name / p.name).symlink_to(p)
            linked += 1
    # These tight crops defeat HOG on most photos; the tight-crop box (confirmed by the CNN) finds them.
    cfg = load_config(None, ["prepare.workers=2", "prepare.cnn_fallback=false"])
    summary = prepare_store([photos], tmp_path / "store", cfg, progress=False)
    store = open_store(tmp_path / "store")
    assert summary["found"] == linked and summary["aligned"] > 0.65 * linked, summary
    assert summary["detectors"].get("crop", 0) > 100, summary
    split_of: dict[str, set] = {}
    for ident, split in zip(store.meta["identity"], store.meta["split"]):
        split_of.setdefault(ident, set()).add(split)
    assert len(split_of) >= 95 and all(len(s) == 1 for s in split_of.values())
    assert set(split_of) <= {p.name for p in people}
    n_test = sum(1 for s in split_of.values() if "test" in s)
    assert abs(n_test / len(split_of) - 0.2) < 0.05


def test_killed_prepare_resumes_to_the_same_store(utkface_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in adult_utkface(utkface_dir, 120, start=7):
        (photos / p.name).symlink_to(p)
    args = [sys.executable, "-m", "antimask", "prepare", str(photos), "--quiet", "prepare.workers=1", "prepare.chunk=8"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while len(list((killed / "parts").glob("*/part-*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    parts_before = len(list((killed / "parts").glob("*/part-*.json")))
    assert 3 <= parts_before < 15 and not (killed / "header.json").exists(), "the kill came too late to test"
    assert subprocess.run(args + ["--out", str(killed)], capture_output=True).returncode == 0
    whole = tmp_path / "whole"
    assert subprocess.run(args + ["--out", str(whole)], capture_output=True).returncode == 0
    a, b = open_store(killed), open_store(whole)
    assert len(a) == len(b) > 100
    np.testing.assert_array_equal(np.load(killed / "images.npy"), np.load(whole / "images.npy"))
    np.testing.assert_array_equal(a.landmarks[:], b.landmarks[:])
    for column in ("source", "sha1", "identity", "split", "detector"):
        assert list(a.meta[column]) == list(b.meta[column])
    assert (killed / "rejected.csv").read_text() == (whole / "rejected.csv").read_text()


def test_finder_keys_added_later_keep_the_parts_of_existing_stores():
    """Stores written before the face finder's keys were shared with predict keep their parts folder; a
    finder key changed from its default gives new parts."""
    from antimask.data.prepare import _options_digest, _photo_options

    assert _options_digest(_photo_options(load_config())) == "f8b566947c75"
    for override in ("prepare.crop_refine=1", "prepare.crop_min_skin=0.2", "prepare.align_points=upper",
                     "prepare.cnn_max_side=400", "prepare.skin_cr_min=120"):
        assert _options_digest(_photo_options(load_config(None, [override]))) != "f8b566947c75", override


def test_photos_given_by_name_are_prepared_one_identity_each(utkface_dir, tmp_path):
    """`antimask prepare a.jpg b.jpg --out STORE`: each named photo is its own identity (it failed with
    'is not in the subpath' before: a file was taken as its own source folder)."""
    files = adult_utkface(utkface_dir, 3, start=11)
    cfg = load_config(None, ["prepare.workers=1", "prepare.test_fraction=0", "prepare.val_fraction=0"])
    summary = prepare_store(files, tmp_path / "store", cfg, progress=False)
    assert summary["aligned"] == 3
    identities = set(open_store(tmp_path / "store").meta["identity"])
    assert len(identities) == 3 and all(i.startswith("photo:") for i in identities)


def test_photos_beside_person_folders_or_named_alone_are_an_identity_each(utkface_dir, tmp_path):
    """With person folders (setA/alice/*.jpg), a photo at the top of a source or named on its own has no folder
    to name its person: it is its own identity, not '.' shared by every such photo of every source."""
    files = adult_utkface(utkface_dir, 6, start=11)
    layout = ["setA/alice/1.jpg", "setA/alice/2.jpg", "setA/loose.jpg", "setB/other.jpg", "elsewhere/bob/1.jpg",
              "named.jpg"]
    for name, photo in zip(layout, files):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).symlink_to(photo)
    (tmp_path / "setB" / "bob").symlink_to(tmp_path / "elsewhere" / "bob")  # a person folder linked from elsewhere
    sources = [tmp_path / "setA", tmp_path / "setB", tmp_path / "named.jpg"]
    cfg = load_config(None, ["prepare.workers=1", "prepare.test_fraction=0", "prepare.val_fraction=0"])
    assert prepare_store(sources, tmp_path / "store", cfg, progress=False)["aligned"] == 6
    store = open_store(tmp_path / "store")
    identity = {str(Path(s).relative_to(tmp_path)): i for s, i in zip(store.meta["source"], store.meta["identity"])}
    sha1 = {str(Path(s).relative_to(tmp_path)): h for s, h in zip(store.meta["source"], store.meta["sha1"])}
    assert identity["setA/alice/1.jpg"] == identity["setA/alice/2.jpg"] == "alice"
    assert identity["setB/bob/1.jpg"] == "bob"
    for name in ("setA/loose.jpg", "setB/other.jpg", "named.jpg"):
        assert identity[name] == f"photo:{sha1[name][:12]}"
    assert len(set(identity.values())) == 5


def _write_photos(out: Path, images: np.ndarray, landmarks: np.ndarray, sha1s: list[str], name: str):
    """Write the photo group the way prepare does (from a finished part, through ``_write_photo_group``)."""
    part = out / "parts" / f"{name}.npz"
    part.parent.mkdir(parents=True, exist_ok=True)
    np.savez(part, images=images, landmarks=landmarks)
    accepted = [(Photo(out / f"{i}.png", sha, out), {"part": part, "index": i}) for i, sha in enumerate(sha1s)]
    records = [{"row": i, "kind": "photo", "source": str(p.path), "sha1": p.sha1, "identity": f"photo:{p.sha1[:12]}",
                "split": "train"} for i, (p, _) in enumerate(accepted)]
    _write_photo_group(out, accepted, records, images.shape[1], name)
    return open_store(out)


def test_a_store_refreshed_with_one_face_changed_gets_a_new_digest_and_fresh_resized_faces(tmp_path):
    """The resized faces, the teacher features and the morphs are reused while the store digest stays the same,
    so a rewrite that changes any one face must change it (it once hashed every len // 512-th row only, and
    never saw row 1 of these 1,100)."""
    n, size = 1100, 32
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    landmarks = rng.uniform(0, size, (n, 68, 2)).astype(np.float32)
    sha1s = [f"{i:040x}" for i in range(n)]
    out = tmp_path / "store"
    store = _write_photos(out, images, landmarks, sha1s, "first")
    build_resized_cache(store, 16, progress=False)
    old_face = faces_at(store, np.array([1]), 16)[0].copy()
    assert _write_photos(out, images, landmarks, sha1s, "same").digest == store.digest  # same faces: caches stay

    images[1] = 255 - images[1]  # the same photo, aligned anew
    changed = _write_photos(out, images, landmarks, sha1s, "face")
    assert changed.digest != store.digest and not cache_valid(changed, 16)
    build_resized_cache(changed, 16, progress=False)
    served = faces_at(changed, np.array([1]), 16)[0]
    assert cache_valid(changed, 16) and not np.array_equal(served, old_face)
    np.testing.assert_array_equal(served, cv2.resize(images[1], (16, 16), interpolation=cv2.INTER_AREA))

    landmarks[3, 0] += 1  # landmarks only
    moved = _write_photos(out, images, landmarks, sha1s, "landmarks")
    sha1s[5] = "f" * 40  # another photo file, the same pixels
    renamed = _write_photos(out, images, landmarks, sha1s, "sha1")
    assert len({store.digest, changed.digest, moved.digest, renamed.digest}) == 4
