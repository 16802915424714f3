"""The training-free baselines on real aligned faces: the visible rows stay bit-exact, the band is drawn."""

from __future__ import annotations

import numpy as np
import pytest

from antimask.config import load_config, split_row_for
from antimask.evaluation.baselines import BASELINES, NearestNeighbour, create_baseline, list_baselines

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


