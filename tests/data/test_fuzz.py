"""`antimask prepare` fed 300 malformed files beside 10 good face photos: nothing crashes, every bad
file is in rejected.csv with a reason, and every good photo is prepared.

Tests run as root, so a chmod 000 file is still readable here: it is decoded (random bytes, so it is
rejected as "not an image"); as a normal user it would be rejected as "unreadable file".
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
from helpers import adult_utkface
from PIL import Image

from antimask.config import load_config
from antimask.data.prepare import prepare_store
from antimask.data.store import open_store

N_BAD = 300


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _bad_files(folder: Path, good: list[bytes], rng: np.random.Generator) -> list[Path]:
    """300 malformed files of many kinds, each with unique content (so none is a duplicate of another)."""
    made: list[Path] = []

    def put(name: str, data: bytes) -> None:
        path = folder / name
        path.write_bytes(data)
        made.append(path)

    for i in range(55):  # random bytes under image names
        put(f"random_{i:03d}.{('jpg', 'png', 'jpeg', 'bmp', 'webp')[i % 5]}", rng.bytes(int(rng.integers(1, 4000))))
    jpegs = [_encoded(np.asarray(Image.open(io.BytesIO(g)).convert("RGB")), "JPEG") for g in good]
    pngs = [_encoded(np.asarray(Image.open(io.BytesIO(g)).convert("RGB")), "PNG") for g in good]
    for i in range(50):  # truncated JPEG and PNG photos of faces
        src = (jpegs if i % 2 else pngs)[i % len(good)]
        cut = int(rng.integers(20, len(src) // 2)) + i  # + i: no two cuts alike
        put(f"truncated_{i:03d}.{'jpg' if i % 2 else 'png'}", src[:cut])
    for i in range(50):  # bytes flipped inside the compressed data (decodes to garbage, or fails)
        src = bytearray((jpegs if i % 2 else pngs)[i % len(good)])
        for pos in rng.integers(200, len(src) - 10, size=40):
            src[pos] ^= 0xFF
        src[-1] = i
        put(f"corrupted_{i:03d}.{'jpg' if i % 2 else 'png'}", bytes(src))
    shapes = [(1, 5000), (5000, 1), (1, 1), (2, 3000), (3000, 2), (4, 4), (1, 200), (200, 1), (8, 4000), (4000, 8)]
    for i in range(40):  # extreme sizes and aspect ratios
        h, w = shapes[i % len(shapes)]
        put(f"extreme_{i:03d}_{h}x{w}.png", _encoded(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "PNG"))
    for i in range(10):  # a decompression bomb header: 100k x 100k pixels claimed by a tiny PNG
        data = bytearray(_encoded(np.full((1, 1, 3), i, np.uint8), "PNG"))
        data[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width and height
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid header: only its size is absurd
        put(f"bomb_{i:03d}.png", bytes(data))
    for i in range(40):  # wrong extensions and non-images with image names
        kind = i % 4
        if kind == 0:
            put(f"text_{i:03d}.jpg", f"this is not a photo {i}\n".encode() * 20)
        elif kind == 1:
            put(f"empty_{i:03d}.png", b"")
        elif kind == 2:
            put(f"pdf_{i:03d}.jpeg", b"%PDF-1.4\n" + rng.bytes(300))
        else:  # a real (face-less) PNG under a .jpg name: opens fine, holds no face
            put(f"png_named_jpg_{i:03d}.jpg", _encoded(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8), "PNG"))
    for i in range(40):  # chmod 000 (still readable by root)
        put(f"noperm_{i:03d}.jpg", rng.bytes(500))
        os.chmod(made[-1], 0)
    for i in range(10):  # symlinks that loop or dangle
        a, b = folder / f"loop_a_{i:03d}.jpg", folder / f"loop_b_{i:03d}.jpg"
        if i < 5:
            a.symlink_to(b.name)
            b.symlink_to(a.name)
            made.append(a)
            made.append(b)
        else:
            a.symlink_to(f"missing_{i}.jpg")
            made.append(a)
    (folder / "subdir").mkdir()
    (folder / "subdir" / "back_to_top").symlink_to("..", target_is_directory=True)  # a folder loop
    return made[:N_BAD]


def test_300_malformed_files_never_stop_prepare(utkface_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = adult_utkface(utkface_dir, 10, start=5)
    for p in good:
        shutil.copy(p, photos / p.name)
    bad = _bad_files(photos, [p.read_bytes() for p in good], np.random.default_rng(300))
    assert len(bad) == N_BAD
    cfg = load_config(None, ["prepare.workers=2", "prepare.image_size=64", "prepare.cnn_fallback=false",
                             "prepare.crop_fallback=false", "prepare.max_pixels=5000000"])
    out = tmp_path / "store"
    summary = prepare_store([photos], out, cfg, progress=False)

    with open(out / "rejected.csv", newline="") as fh:
        rejected = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(fh)}
    store = open_store(out)
    prepared = {Path(s).name for s in store.meta["source"]}
    assert {p.name for p in good} <= prepared, f"good photos lost: {sorted({p.name for p in good} - prepared)}"
    missing = [p.name for p in bad if p.name not in rejected and p.name not in prepared]
    assert not missing, f"bad files neither rejected nor prepared: {missing[:10]}"
    assert all(reason.strip() for reason in rejected.values())
    # A corrupted face photo may still decode to a usable face; every other kind must be rejected.
    stray = sorted(prepared - {p.name for p in good})
    assert all(name.startswith("corrupted_") for name in stray), stray
    assert summary["rejected"] == len(rejected) and summary["aligned"] == len(prepared)
    allowed = {  # the reason (before its ':') each kind of bad file may get
        "random": {"not an image (unrecognised format)", "duplicate"},
        "truncated": {"corrupt or truncated image", "no face found (dlib HOG)"},
        "corrupted": {"corrupt or truncated image", "no face found (dlib HOG)", "not frontal", "not an image (unrecognised format)",
                      "face too small", "no face found"},
        "extreme": {"image too small"},  # every short side is under prepare.min_face: refused before decoding
        "bomb": {"image too large", "corrupt or truncated image", "not an image (unrecognised format)"},
        "text": {"not an image (unrecognised format)"}, "pdf": {"not an image (unrecognised format)"},
        "empty": {"empty file (0 bytes)", "duplicate"}, "png": {"no face found (dlib HOG)"},
        "noperm": {"not an image (unrecognised format)"},  # root reads it; a normal user: "unreadable file"
        "loop": {"unreadable file"},
    }
    got: dict[str, set[str]] = {}
    for name, reason in rejected.items():
        if name.split("_")[0] in allowed:
            got.setdefault(name.split("_")[0], set()).add(reason.split(":")[0])
    assert set(got) == set(allowed), sorted(set(allowed) - set(got))
    wrong = {kind: reasons - allowed[kind] for kind, reasons in got.items() if reasons - allowed[kind]}
    assert not wrong, wrong
    assert "empty file (0 bytes)" in got["empty"] and got["bomb"] == {"image too large"}
