"""Joining a drawn lower face to the real upper band: the seam's weights and colour match, feathering,
keeping the real rows bit-exact, and pasting a completed face back into its photo.

The tensor functions run inside the exportable ``AntiMask``; the array ones serve the baselines,
evaluation and ``predict``.
"""

from __future__ import annotations

import numpy as np
import torch

from antimask.config import EvalConfig
from antimask.faces.align import invert_transform


# ------------------------------------------------------------------------------------------------ seam
def seam_weights(size: int, split_row: int, seam_width: int, device=None, dtype=None) -> torch.Tensor:
    """Per-row weight (S,) of the drawn face: 0 above the seam, 1 below, a linear ramp of seam_width
    rows centred at split_row (a hard cut at split_row when seam_width is 0)."""
    rows = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    if seam_width <= 0:
        w = (rows > split_row).float()
    else:
        w = ((rows - (split_row - seam_width / 2)) / seam_width).clamp(0, 1)
    return w.to(dtype or torch.float32)


def match_seam_colour(face: torch.Tensor, band: torch.Tensor, split_row: int, rows: int) -> torch.Tensor:
    """Shift a drawn lower band (B,3,S-R,S) per face and channel so that the mean colour of its first
    ``rows`` rows equals that of the real rows just above the seam (the tensor twin of
    ``match_seam_colour_np``); rows=0 returns the band unchanged."""
    rows = min(rows, split_row, band.shape[-2])
    if rows <= 0:
        return band
    target = face[:, :, split_row - rows:split_row].float().mean((2, 3), keepdim=True)
    current = band[:, :, :rows].float().mean((2, 3), keepdim=True)
    return (band.float() + target - current).clamp(0, 1).to(band.dtype)


def match_seam_colour_np(drawn: np.ndarray, visible: np.ndarray, split_row: int,
                         rows: int = EvalConfig.seam_colour_rows) -> np.ndarray:
    """Shift the drawn lower band's per-channel mean so that its first ``rows`` rows match the mean
    colour of the real rows just above the seam (``visible[split_row - rows:split_row]``).

    A drawn band that is right in shape but off in skin tone shows a hard seam; a constant shift per
    face and channel removes most of it. Whole faces (N,S,S,3) or (S,S,3), uint8 or float; rows <
    split_row of ``drawn`` are returned untouched. Kept apart from the tensor twin because uint8 faces
    are shifted in float64 and rounded once, which evaluation's exact outputs depend on.
    """
    drawn_arr = np.asarray(drawn)
    single = drawn_arr.ndim == 3
    d = drawn_arr[None] if single else drawn_arr
    v = np.asarray(visible)
    v = v[None] if v.ndim == 3 else v
    if rows <= 0:
        return drawn_arr.copy()
    rows = min(rows, split_row, d.shape[1] - split_row)
    scale = 255.0 if d.dtype == np.uint8 else 1.0
    v_scale = 255.0 if v.dtype == np.uint8 else 1.0
    target = v[:, split_row - rows:split_row].astype(np.float64).mean((1, 2)) / v_scale
    current = d[:, split_row:split_row + rows].astype(np.float64).mean((1, 2)) / scale
    shift = (target - current)[:, None, None, :] * scale
    out = d.copy()
    lower = d[:, split_row:].astype(np.float64) + shift
    if d.dtype == np.uint8:
        out[:, split_row:] = np.clip(np.rint(lower), 0, 255).astype(np.uint8)
    else:
        out[:, split_row:] = np.clip(lower, 0.0, 1.0).astype(d.dtype)
    return out[0] if single else out


def composite(face: torch.Tensor, drawn: torch.Tensor, split_row: int, seam_width: int = 0,
              colour_rows: int = 0) -> torch.Tensor:
    """Join the real face's upper band with a drawn face (B,3,S,S) or drawn lower band (B,3,S-R,S).

    ``colour_rows`` > 0 first shifts the drawn band's colour to the real rows above the seam. A lower
    band is extended upwards by repeating its first row so the seam has something to blend.
    Rows whose weight is 0 are exactly the input.
    """
    size = face.shape[-2]
    if colour_rows > 0:
        band = drawn[:, :, split_row:] if drawn.shape[-2] == size else drawn
        band = match_seam_colour(face, band, split_row, colour_rows)
        drawn = torch.cat([drawn[:, :, :split_row], band], 2) if drawn.shape[-2] == size else band
    if drawn.shape[-2] != size:
        top = drawn[:, :, :1, :].expand(-1, -1, size - drawn.shape[-2], -1)
        drawn = torch.cat([top, drawn], dim=2)
    w = seam_weights(size, split_row, seam_width, face.device, face.dtype).view(1, 1, size, 1)
    return face + w * (drawn.to(face.dtype) - face)


# ------------------------------------------------------------------------------------------------ mask region
def hide_region(face: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """What a mask-aware model may look at: the face (B,3,S,S) with its redraw region (alpha (B,1,S,S),
    ``faces.masks.redraw_region``) blanked, so neither the mask nor anything under it gets through."""
    return face * (1 - alpha)


def blend_region(face: torch.Tensor, drawn: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The drawn face inside the redraw region, the real one outside, feathered by alpha: where alpha is 0
    the result is ``face`` bit for bit, so every pixel the mask leaves alone stays real."""
    return face * (1 - alpha) + drawn.to(face.dtype) * alpha


def keep_real_rows(drawn: np.ndarray, real: np.ndarray, split_row: int, seam_width: int) -> np.ndarray:
    """Copy into ``drawn`` (N,S,S,3), in place, the rows of ``real`` that the seam gives weight 0, so they
    are the real ones bit for bit (no float round trip in between); returns ``drawn``."""
    keep = seam_weights(real.shape[1], split_row, seam_width).numpy() == 0
    drawn[:, keep] = real[:, keep]
    return drawn


def feather(upper_source: np.ndarray, lower_source: np.ndarray, split_row: int, width: int) -> np.ndarray:
    """Rows < split_row from ``upper_source`` exactly, rows >= split_row + width from ``lower_source``,
    and a linear blend between them over the ``width`` rows below the seam (0 = a hard cut)."""
    up = np.asarray(upper_source)
    low = np.asarray(lower_source)
    if up.shape != low.shape:
        raise ValueError(f"upper {up.shape} and lower {low.shape} sources differ in shape")
    out = low.copy()
    out[..., :split_row, :, :] = up[..., :split_row, :, :]
    width = max(0, min(int(width), up.shape[-3] - split_row))
    if width:
        alpha = (np.arange(1, width + 1, dtype=np.float64) / (width + 1))[:, None, None]
        band = slice(split_row, split_row + width)
        mixed = (1 - alpha) * up[..., band, :, :].astype(np.float64) + alpha * low[..., band, :, :].astype(np.float64)
        out[..., band, :, :] = np.clip(np.rint(mixed), 0, 255).astype(up.dtype) if up.dtype == np.uint8 \
            else mixed.astype(up.dtype)
    return out


# ------------------------------------------------------------------------------------------ paste-back
def paste_alpha(size: int, split_row: int, seam_width: int, feather: int) -> np.ndarray:
    """(S, S) float32 weight of the drawn face in the aligned frame: 0 above the seam (rows the model
    keeps real), ramping to 1 below it, and ramping to 0 over ``feather`` px at the left, right and
    bottom edges so the warped square melts into the photo."""
    return seam_weights(size, split_row, seam_width).numpy()[:, None] * edge_alpha(size, feather)


def edge_alpha(size: int, feather: int) -> np.ndarray:
    """(S, S) float32: 1 inside, ramping to 0 over ``feather`` px at the left, right and bottom edges."""
    idx = np.arange(size, dtype=np.float32) + 0.5
    if feather <= 0:
        return np.ones((size, size), np.float32)
    edge = np.clip(np.minimum(idx, size - idx) / max(feather, 1), 0, 1)
    bottom = np.clip((size - idx) / max(feather, 1), 0, 1)
    return (bottom[:, None] * edge[None, :]).astype(np.float32)


def tint_region(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """uint8 images (..., H, W, 3) with the bool ``region`` (..., H, W) tinted red by half: a mask that was found."""
    out = image.copy()
    out[region] = (0.5 * out[region] + np.array([127.5, 0, 0])).astype(np.uint8)
    return out


def paste_back(photo: np.ndarray, completed: np.ndarray, matrix: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Warp an aligned completed face (S,S,3 uint8) back with the inverse similarity and blend it in
    under the warped alpha (feathered alpha blending, not seamlessClone: the upper face stays exact)."""
    import cv2

    h, w = photo.shape[:2]
    inv = invert_transform(matrix)
    drawn = cv2.warpAffine(completed.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = cv2.warpAffine(alpha.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    out = photo.astype(np.float32) * (1 - a) + drawn * a
    blended = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return np.where(a > 0, blended, photo)
