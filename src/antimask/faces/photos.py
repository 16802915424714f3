"""Photos in: every image below some folders, each decoded safely to 8-bit RGB.

A photo that cannot be used is a ``Rejected`` whose message is the reason ``prepare`` writes to
``rejected.csv`` and ``predict`` reports.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class Rejected(Exception):
    """A photo that cannot be used; ``str(err)`` is the reason recorded in rejected.csv."""


def load_rgb(path: str | Path, max_pixels: int, min_face: int = 1) -> np.ndarray:
    """Decode any common photo to 8-bit RGB, honouring EXIF orientation.

    The pixel count claimed by the header is checked before decoding, so a decompression bomb is
    refused without allocating it; so is a short side under ``min_face``, the smallest face box: such a photo
    holds no face. Grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB.
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
            if min(width, height) < min_face:
                raise Rejected(f"image too small: {width}x{height} pixels, under the smallest face "
                               f"(min_face={min_face} px a side)")
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
