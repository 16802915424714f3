"""The training-free baselines on real aligned faces: the visible rows stay bit-exact, the band is drawn."""

from __future__ import annotations

import numpy as np
import pytest

from antimask.config import load_config, split_row_for
from antimask.evaluation.baselines import (BASELINES, NearestNeighbour, create_baseline, feather, list_baselines,
                                           match_seam_colour)

ROW = split_row_for(64)


@pytest.mark.data
@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_draws_only_the_lower_band(name, faces64):
    train, test = faces64[:16], faces64[16:]
    baseline = create_baseline(name, load_config().eval).fit(train)
    drawn = baseline.complete(test, ROW)
    assert drawn.shape == test.shape and drawn.dtype == np.uint8
    assert np.array_equal(drawn[:, :ROW], test[:, :ROW])
    changed = (drawn[:, ROW:] != test[:, ROW:]).any(axis=(1, 2, 3))
    assert changed.all(), f"{name} left {int((~changed).sum())} lower bands as they were"
    assert not np.shares_memory(drawn, test)


@pytest.mark.data
def test_inpainting_continues_the_rows_above(faces64):
    # Inpainted pixels just below the seam resemble the real rows just above it far more than black does.
    test = faces64[16:]
    for name in ("telea", "navier_stokes"):
        drawn = create_baseline(name).complete(test, ROW)
        gap = np.abs(drawn[:, ROW].astype(int) - test[:, ROW - 1].astype(int)).mean()
        assert gap < 25, name


@pytest.mark.data
def test_mean_face_is_the_train_mean(faces64):
    train, test = faces64[:16], faces64[16:]
    drawn = create_baseline("mean_face").fit(train).complete(test, ROW)
    expected = np.rint(train[:, ROW:].astype(np.float64).mean(0))
    assert np.array_equal(drawn[0, ROW:], expected.astype(np.uint8))
    assert np.array_equal(drawn[0, ROW:], drawn[-1, ROW:])


@pytest.mark.data
def test_nearest_neighbour_returns_a_train_lower_band_exactly(faces64):
    train, test = faces64[:16], faces64[16:]
    nn = NearestNeighbour(chunk_mb=1).fit(train)  # tiny chunks: the search runs in several blocks
    idx = nn.nearest(test, ROW)
    drawn = nn.complete(test, ROW)
    for face, i in zip(drawn, idx):
        assert np.array_equal(face[ROW:], train[i, ROW:])
    brute = ((test[:, None, :ROW].astype(np.float64) - train[None, :, :ROW]) ** 2).sum((2, 3, 4)).argmin(1)
    assert np.array_equal(idx, brute)
    # A train face finds itself.
    assert np.array_equal(nn.nearest(train[3:6], ROW), [3, 4, 5])


def test_registry_and_errors():
    assert list_baselines() == ["telea", "navier_stokes", "mean_face", "nearest_neighbour"]
    with pytest.raises(KeyError, match="unknown baseline"):
        create_baseline("poisson")
    faces = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(RuntimeError, match="fit"):
        create_baseline("mean_face").complete(faces, ROW)
    with pytest.raises(ValueError, match="uint8"):
        create_baseline("telea").complete(faces.astype(np.float32), ROW)
    assert create_baseline("telea", load_config(overrides=["eval.inpaint_radius=9"]).eval).radius == 9


def test_match_seam_colour_shifts_the_lower_band_mean():
    real = np.full((1, 16, 16, 3), 100, np.uint8)
    drawn = np.full((1, 16, 16, 3), 60, np.uint8)
    drawn[:, :8] = 7
    drawn[:, 8:, :, 1] = 90
    out = match_seam_colour(drawn, real, split_row=8, rows=2)
    assert np.array_equal(out[:, :8], drawn[:, :8])
    assert (out[:, 8:] == 100).all()  # 60 -> 100 and 90 -> 100, per channel
    assert np.array_equal(match_seam_colour(drawn, real, 8, rows=0), drawn)
    f = match_seam_colour(drawn / 255.0, real, 8, rows=2)  # float drawn, uint8 real
    assert f[0, 12, 0, 0] == pytest.approx(100 / 255)


def test_feather_keeps_the_upper_source_and_ramps_below_the_seam():
    up = np.full((1, 10, 4, 3), 200, np.uint8)
    low = np.zeros((1, 10, 4, 3), np.uint8)
    out = feather(up, low, split_row=4, width=3)
    assert np.array_equal(out[:, :4], up[:, :4])
    assert list(out[0, 4:8, 0, 0]) == [150, 100, 50, 0]
    assert (out[:, 7:] == 0).all()
    assert np.array_equal(feather(up, low, 4, 0)[:, 4:], low[:, 4:])
