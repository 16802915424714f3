"""Aligned faces in their two forms: uint8 (..., S, S, 3) arrays as they are stored and written, and float
(..., 3, S, S) tensors in [0, 1] as the nets take them."""

from __future__ import annotations

import numpy as np
import torch


def to_float(faces: np.ndarray, device=None) -> torch.Tensor:
    """uint8 faces (B, S, S, 3) or (S, S, 3) -> float32 (B, 3, S, S) or (3, S, S) in [0, 1]; float arrays
    are taken as already in [0, 1]. With a device other than the CPU the uint8 pixels travel and are
    divided there."""
    arr = np.asarray(faces)
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    if device is not None and torch.device(device).type != "cpu":
        return torch.from_numpy(np.ascontiguousarray(arr)).to(device).movedim(-1, -3).float().div_(scale)
    # numpy, single-threaded: torch's threaded float() of a strided tensor is far slower in a DataLoader,
    # which runs this once per face (so transpose, not the slower moveaxis)
    n = arr.ndim
    chw = np.ascontiguousarray(arr.transpose(*range(n - 3), n - 1, n - 3, n - 2))
    return torch.from_numpy(np.divide(chw, np.float32(scale), dtype=np.float32))


def to_chw(faces: np.ndarray) -> torch.Tensor:
    """uint8 faces (..., S, S, 3) -> a contiguous uint8 tensor (..., 3, S, S): the compact form batches travel in
    (a quarter of float32's bytes); the division to [0, 1] happens on the device (``data.datamodule.unpack_batch``)."""
    arr = np.asarray(faces)
    n = arr.ndim
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(*range(n - 3), n - 1, n - 3, n - 2)))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float faces (B, 3, S, S) or (3, S, S) in [0, 1] -> uint8 (B, S, S, 3) or (S, S, 3), rounded half to
    even. Half-precision inputs are rounded in float32 (their products with 255 are too coarse to round),
    float64 ones in float64."""
    x = x.detach()
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    # contiguous, as cv2, PIL and dlib want their images
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).contiguous().cpu().numpy()
