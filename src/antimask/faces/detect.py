"""Reading photos safely and finding faces in them with dlib (HOG first, CNN as the fallback).

Pure functions: a path or an array in, arrays out. Every refusal is a ``Rejected`` with the reason
that ``prepare`` writes to ``rejected.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from antimask.faces import dlib_models

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class Rejected(Exception):
    """A photo that cannot be used; ``str(err)`` is the reason recorded in rejected.csv."""


@dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom in the photo's pixels
    landmarks: np.ndarray  # (68, 2) float32 in the photo's pixels
    detector: str  # hog | cnn | crop
    score: float


def load_rgb(path: str | Path, max_pixels: int) -> np.ndarray:
    """Decode any common photo to 8-bit RGB, honouring EXIF orientation.

    The pixel count claimed by the header is checked before decoding, so a decompression bomb is
    refused without allocating it. Grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise Rejected(f"unreadable file: {err.strerror or err}") from None
    if size == 0:
        raise Rejected("empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise Rejected(f"image too large: header claims {width}x{height} pixels (limit {max_pixels})")
            im = ImageOps.exif_transpose(im)
            return _to_rgb8(im)
    except Rejected:
        raise
    except PermissionError as err:
        raise Rejected(f"unreadable file: {err.strerror}") from None
    except UnidentifiedImageError:
        raise Rejected("not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        width, height = _claimed_size(path)
        raise Rejected(f"image too large: header claims {width}x{height} pixels (limit {max_pixels})") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise Rejected(f"corrupt or truncated image: {err}") from None


def _claimed_size(path: Path) -> tuple[int, int]:
    """The size a header claims, read past Pillow's own bomb guard (nothing is decoded)."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im)
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def _rect_area(r) -> int:
    return max(0, r.right() - r.left()) * max(0, r.bottom() - r.top())


def detect_faces(image: np.ndarray, *, pad: float, upsample: int, cnn_fallback: bool,
                 max_side: int) -> list[tuple[tuple[int, int, int, int], str, float]]:
    """Face boxes (left, top, right, bottom) in ``image`` pixels, largest first, with the detector.

    The photo is scaled down to ``max_side`` for detection and padded with a replicated border of
    ``pad`` times its short side, so faces cropped tight at the frame edge are still found.
    """
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    # max(1, .): a 1x5000 strip scaled to 1024 would otherwise ask OpenCV for a 0-pixel side
    small = (cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
             if scale < 1 else image)
    p = int(pad * min(small.shape[:2]))
    padded = cv2.copyMakeBorder(small, p, p, p, p, cv2.BORDER_REPLICATE) if p else small

    def to_photo(r) -> tuple[int, int, int, int]:
        return tuple(int(round((v - p) / scale)) for v in (r.left(), r.top(), r.right(), r.bottom()))

    rects, scores, _ = dlib_models.hog_detector().run(padded, upsample, 0.0)
    found = [(to_photo(r), "hog", float(s), _rect_area(r)) for r, s in zip(rects, scores)]
    if not found and cnn_fallback:
        found = [(to_photo(d.rect), "cnn", float(d.confidence), _rect_area(d.rect))
                 for d in dlib_models.cnn_detector()(padded, upsample)]
    found.sort(key=lambda f: -f[3])
    return [f[:3] for f in found]


def tight_crop_box(image: np.ndarray, max_aspect: float) -> list[tuple[tuple[int, int, int, int], str, float]]:
    """The whole photo as the face box, for tight face crops that dlib's detectors miss.

    Only for roughly square photos; the landmark fit's residual decides afterwards whether it was a face.
    """
    h, w = image.shape[:2]
    if max(h, w) / max(1, min(h, w)) > max_aspect:
        return []
    return [((0, 0, w, h), "crop", 0.0)]


def landmarks_68(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    import dlib

    rect = dlib.rectangle(*[int(v) for v in box])
    shape = dlib_models.shape_predictor()(image, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def find_images(sources: list[str | Path]) -> list[Path]:
    """Every image below the sources (recursively, any case of the known suffixes), sorted.

    A source that does not exist, or holds no images, is an error.
    """
    found: list[Path] = []
    for src in sources:
        src = Path(src)
        if not src.exists():
            raise FileNotFoundError(f"{src}: no such file or folder")
        if src.is_file():
            found.append(src)
            continue
        hits = [p for p in _walk(src) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not hits:
            raise FileNotFoundError(f"{src}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
        found.extend(hits)
    return sorted(set(found))


def _walk(folder: Path):
    """Files below folder; symlink loops and unreadable folders are skipped, not fatal."""
    import os

    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=lambda e: None):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name
