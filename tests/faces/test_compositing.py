"""Seam weights, seam colour match (tensor and array twins), feathering, real rows and paste-back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from antimask.faces.align import invert_transform
from antimask.faces.compositing import (composite, feather, keep_real_rows, match_seam_colour, match_seam_colour_np,
                                        paste_alpha, paste_back, seam_weights)
from antimask.faces.images import to_float, to_uint8

SIZE, ROW = 64, 27


def test_seam_weights_ramp():
    w = seam_weights(SIZE, ROW, 4)
    assert torch.all(w[: ROW - 2] == 0) and torch.all(w[ROW + 2:] == 1)
    assert torch.all(torch.diff(w) >= 0) and 0 < w[ROW - 1] < 0.5 < w[ROW] < 1
    hard = seam_weights(SIZE, ROW, 0)
    assert hard[:ROW].sum() == 0 and torch.all(hard[ROW:] == 1)


def test_match_seam_colour_shifts_the_lower_band_mean():
    real = np.full((1, 16, 16, 3), 100, np.uint8)
    drawn = np.full((1, 16, 16, 3), 60, np.uint8)
    drawn[:, :8] = 7
    drawn[:, 8:, :, 1] = 90
    out = match_seam_colour_np(drawn, real, split_row=8, rows=2)
    assert np.array_equal(out[:, :8], drawn[:, :8])
    assert (out[:, 8:] == 100).all()  # 60 -> 100 and 90 -> 100, per channel
    assert np.array_equal(match_seam_colour_np(drawn, real, 8, rows=0), drawn)
    f = match_seam_colour_np(drawn / 255.0, real, 8, rows=2)  # float drawn, uint8 real
    assert f[0, 12, 0, 0] == pytest.approx(100 / 255)


def test_seam_colour_match_equals_the_numpy_baseline_helper():
    g = torch.Generator().manual_seed(1)
    face, drawn = torch.rand(3, 3, 40, 40, generator=g), torch.rand(3, 3, 40, 40, generator=g) * 0.5
    row, rows = 17, 4
    ours = match_seam_colour(face, drawn[:, :, row:], row, rows)
    theirs = match_seam_colour_np(drawn.permute(0, 2, 3, 1).numpy(), face.permute(0, 2, 3, 1).numpy(), row, rows)
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), theirs[:, row:], atol=1e-6)
    # the first drawn rows now have the mean colour of the real rows above the seam
    np.testing.assert_allclose(ours[:, :, :rows].mean((2, 3)), face[:, :, row - rows:row].mean((2, 3)), atol=1e-6)
    assert torch.equal(match_seam_colour(face, drawn[:, :, row:], row, 0), drawn[:, :, row:])


def test_seam_colour_match_on_uint8_faces_agrees_with_the_tensor_twin_to_one_level():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    drawn = rng.integers(0, 128, (4, 40, 40, 3), dtype=np.uint8)
    row, rows = 17, 4
    arrays = match_seam_colour_np(drawn, real, row, rows)
    tensors = to_uint8(match_seam_colour(to_float(real), to_float(drawn)[:, :, row:], row, rows))
    assert np.array_equal(arrays[:, :row], drawn[:, :row])
    # the array twin rounds its float64 shift once; the tensor twin shifts in float32 before rounding
    assert np.abs(arrays[:, row:].astype(int) - tensors.astype(int)).max() <= 1


def test_feather_keeps_the_upper_source_and_ramps_below_the_seam():
    up = np.full((1, 10, 4, 3), 200, np.uint8)
    low = np.zeros((1, 10, 4, 3), np.uint8)
    out = feather(up, low, split_row=4, width=3)
    assert np.array_equal(out[:, :4], up[:, :4])
    assert list(out[0, 4:8, 0, 0]) == [150, 100, 50, 0]
    assert (out[:, 7:] == 0).all()
    assert np.array_equal(feather(up, low, 4, 0)[:, 4:], low[:, 4:])


def test_composite_and_keep_real_rows_leave_the_rows_of_weight_zero_real():
    g = torch.Generator().manual_seed(3)
    face, band = torch.rand(2, 3, SIZE, SIZE, generator=g), torch.rand(2, 3, SIZE - ROW, SIZE, generator=g)
    out = composite(face, band, ROW, 4, colour_rows=4)
    kept = seam_weights(SIZE, ROW, 4) == 0
    assert torch.equal(out[:, :, kept], face[:, :, kept]) and not torch.equal(out[:, :, ROW:], face[:, :, ROW:])
    real = to_uint8(face)
    drawn = keep_real_rows(np.zeros_like(real), real, ROW, 4)
    assert np.array_equal(drawn[:, kept.numpy()], real[:, kept.numpy()]) and not drawn[:, ROW + 2:].any()


def test_paste_back_keeps_rows_above_the_seam():
    size, split = 64, 27
    alpha = paste_alpha(size, split, 4, 5)
    assert np.all(alpha[: split - 2] == 0) and alpha[40, 32] == 1 and alpha[40, 0] < 0.2 and alpha[63, 32] < 0.2
    photo = np.full((100, 120, 3), 50, np.uint8)
    completed = np.full((size, size, 3), 200, np.uint8)
    matrix = np.array([[0.8, 0.0, -10.0], [0.0, 0.8, -5.0]])  # photo -> aligned
    out = paste_back(photo, completed, matrix, alpha)
    inv = invert_transform(matrix)
    top = (inv @ np.array([32, 10, 1])).round().astype(int)
    low = (inv @ np.array([32, 45, 1])).round().astype(int)
    assert tuple(out[top[1], top[0]]) == (50, 50, 50)
    assert tuple(out[low[1], low[0]]) == (200, 200, 200)
