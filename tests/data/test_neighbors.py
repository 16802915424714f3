"""The chunked neighbour search equals brute force on real faces, and refuses impossible k."""

from __future__ import annotations

import numpy as np
import pytest

from antimask.data.neighbors import brute_force_neighbors, nearest_neighbors


def test_chunked_search_equals_brute_force(utk_faces):
    images, landmarks, _ = utk_faces
    k = 10
    fast_idx, fast_d = nearest_neighbors(images, landmarks, k, landmark_weight=10.0, feature_size=32, chunk_mb=1)
    slow_idx, slow_d = brute_force_neighbors(images, landmarks, k, landmark_weight=10.0, feature_size=32)
    assert len(images) >= 200
    np.testing.assert_array_equal(fast_idx, slow_idx)
    np.testing.assert_allclose(fast_d, slow_d, rtol=1e-9)
    assert not (fast_idx == np.arange(len(images))[:, None]).any(), "a face is its own neighbour"
    assert (np.diff(fast_d, axis=1) >= 0).all()


def test_subset_rows_and_landmark_weight_matter(utk_faces):
    images, landmarks, _ = utk_faces
    rows = np.arange(0, 120, 2)
    sub_idx, _ = nearest_neighbors(images, landmarks, 5, 10.0, feature_size=16, rows=rows)
    ref_idx, _ = brute_force_neighbors(images[rows], landmarks[rows], 5, 10.0, feature_size=16)
    np.testing.assert_array_equal(sub_idx, ref_idx)
    tex_only, _ = nearest_neighbors(images[rows], landmarks[rows], 5, 0.0, feature_size=16)
    assert (tex_only != sub_idx).any(), "the landmark term changed nothing"


def test_ties_broken_by_index():
    images = np.zeros((6, 32, 32, 3), np.uint8)  # identical faces: every distance is 0
    landmarks = np.zeros((6, 68, 2), np.float32)
    idx, dist = nearest_neighbors(images, landmarks, 3, 10.0, feature_size=16, chunk_mb=1)
    assert idx.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 1, 2], [0, 1, 2]]
    assert (dist == 0).all()


def test_too_many_neighbours_is_an_error():
    images = np.zeros((5, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"neighbors=5.*only 5"):
        nearest_neighbors(images, np.zeros((5, 68, 2), np.float32), 5, 10.0, feature_size=16)
