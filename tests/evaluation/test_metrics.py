"""Each metric against a value worked out by hand on small arrays, and dlib's networks on real faces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from antimask.config import split_row_for
from antimask.faces.align import LOWER_POINTS, template
from antimask.evaluation import metrics as M


def test_l1_lower_band_and_whole_face():
    real = np.zeros((2, 8, 8, 3), np.uint8)
    drawn = real.copy()
    drawn[0, 4:] = 51  # 0.2 on the lower half only
    drawn[1, :] = 102  # 0.4 everywhere
    assert M.l1(drawn, real, 4) == pytest.approx([0.2, 0.4])
    assert M.l1(drawn, real) == pytest.approx([0.1, 0.4])


def test_psnr_of_a_known_mse():
    real = np.zeros((1, 8, 8, 3))
    drawn = np.full((1, 8, 8, 3), 0.1)  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    drawn[:, :4] = 0.0
    assert M.psnr(drawn, real, 4)[0] == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(drawn, real)[0] == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-4)
    assert math.isinf(M.psnr(real, real)[0])


def test_ssim_identical_constant_and_against_skimage():
    import cv2
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.random((64, 64, 3)), (0, 0), 2)
    b = np.clip(a + 0.05 * rng.normal(size=a.shape), 0, 1)
    assert M.ssim(a[None], a[None])[0] == pytest.approx(1.0, abs=1e-6)
    # Two flat images: the structure term is 1, SSIM = (2 x y + C1) / (x^2 + y^2 + C1).
    c1 = 0.01 ** 2
    flat = M.ssim(np.full((1, 32, 32, 3), 0.25), np.full((1, 32, 32, 3), 0.5))[0]
    assert flat == pytest.approx((2 * 0.25 * 0.5 + c1) / (0.25 ** 2 + 0.5 ** 2 + c1), abs=1e-6)
    ref = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    # The two libraries treat the image border differently; the maps agree elsewhere.
    assert M.ssim(b[None], a[None])[0] == pytest.approx(ref, abs=5e-3)
    assert M.ssim(b[None], a[None])[0] < 0.9


def test_ssim_in_batches_is_ssim_per_face():
    rng = np.random.default_rng(1)
    real = rng.random((7, 40, 40, 3))
    drawn = np.clip(real + 0.1 * rng.normal(size=real.shape), 0, 1)
    one_batch = M.ssim(drawn, real, 16, batch_size=100)
    np.testing.assert_allclose(M.ssim(drawn, real, 16, batch_size=3), one_batch, atol=1e-6)  # float32 rounding
    for i in (0, 6):  # each face alone scores what it scores among the others
        assert M.ssim(drawn[i:i + 1], real[i:i + 1], 16)[0] == pytest.approx(one_batch[i], abs=1e-6)
    assert M.ssim(drawn[:0], real[:0], 16).shape == (0,)


def test_ssim_in_float32_agrees_with_float64():
    """The metric runs in float32 for speed; on face-like images it stays within 1e-4 of float64 per face."""
    import cv2
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    rng = np.random.default_rng(2)
    real = np.stack([cv2.GaussianBlur(rng.random((56, 56, 3)), (0, 0), s) for s in (1, 2, 3, 4)])
    drawn = np.clip(real + 0.05 * rng.normal(size=real.shape), 0, 1)
    a, b = (torch.from_numpy(x).permute(0, 3, 1, 2).double() for x in (drawn, real))
    exact = structural_similarity_index_measure(a[:, :, 24:], b[:, :, 24:], data_range=1.0, reduction="none")
    np.testing.assert_allclose(M.ssim(drawn, real, 24), exact.numpy(), atol=1e-4)


def test_image_metrics_names_and_shapes():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    drawn = real.copy()
    row = split_row_for(64)
    drawn[:, row:] = 128
    out = M.image_metrics(drawn, real, row)
    assert set(out) == {f"{m}_{b}" for m in ("l1", "psnr", "ssim") for b in ("lower", "face")}
    assert all(v.shape == (3,) for v in out.values())
    assert (out["l1_lower"] > out["l1_face"]).all()  # the error lives in the lower band only


def test_cosine_and_random_pairs():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [4.0, 3.0]])
    assert M.cosine_similarity(a, b) == pytest.approx([0.0, 1.0, 24 / 25])
    ids = np.array([0, 0, 1, 1, 2])
    pairs = M.random_pairs(ids, 200, seed=3)
    assert pairs.shape == (200, 2)
    assert (ids[pairs[:, 0]] != ids[pairs[:, 1]]).all()
    assert (pairs == M.random_pairs(ids, 200, seed=3)).all()
    feats = np.eye(5)  # every face orthogonal to every other
    assert M.random_pair_cosine(feats, ids, 50, seed=0) == pytest.approx(np.zeros(50))
    assert len(M.random_pair_cosine(feats, np.zeros(5), 50)) == 0  # one identity: no pair


def test_identity_distance_and_verified_share():
    real = np.zeros((4, 128))
    drawn = np.zeros((4, 128))
    drawn[:, 0] = [0.3, 0.59, 0.61, 1.0]
    assert M.identity_distance(drawn, real) == pytest.approx([0.3, 0.59, 0.61, 1.0])
    assert M.verified_share(M.identity_distance(drawn, real), 0.6) == 0.5
    assert list(M.verified(M.identity_distance(drawn, real), 0.6)) == [1, 1, 0, 0]


def test_landmark_error_normalised_by_inter_ocular():
    real = template(224)[None].astype(np.float64)
    eyes = np.linalg.norm(real[0, 36:42].mean(0) - real[0, 42:48].mean(0))
    assert M.inter_ocular(real)[0] == pytest.approx(eyes)
    drawn = real.copy()
    drawn[0, LOWER_POINTS, 0] += 3.0  # every lower point 3 px to the right
    drawn[0, 36:48] += 50.0  # upper points do not count
    assert M.landmark_error(drawn, real)[0] == pytest.approx(3.0 / eyes)
    # The same face at another size has the same normalised error.
    assert M.landmark_error(drawn * 0.5, real * 0.5)[0] == pytest.approx(3.0 / eyes)


def test_bootstrap_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 500)
    for method in ("BCa", "percentile"):
        m, lo, hi = M.bootstrap_ci(small, 500, seed=1, method=method)
        assert lo < m < hi and m == pytest.approx(small.mean())
        m2, lo2, hi2 = M.bootstrap_ci(large, 500, seed=1, method=method)
        assert lo2 < m2 < hi2 and hi2 - lo2 < (hi - lo) / 2
    assert M.bootstrap_ci(small, 200, seed=5) == M.bootstrap_ci(small, 200, seed=5)
    assert M.bootstrap_ci(np.full(10, 0.7), 200) == (pytest.approx(0.7),) * 3
    m, lo, hi = M.bootstrap_ci(np.array([2.0]), 200)
    assert m == 2.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in M.bootstrap_ci(np.zeros(0), 200))
    m, lo, hi = M.bootstrap_ci(np.array([1.0, 2.0, np.inf, 3.0]), 200)
    assert m == 2.0 and lo <= 2.0 <= hi


@pytest.mark.data
def test_dlib_descriptors_tell_people_apart(faces64):
    desc = M.dlib_descriptors(faces64[:8], batch_size=3)
    assert desc.shape == (8, 128) and desc.dtype == np.float32
    same = M.identity_distance(desc, M.dlib_descriptors(faces64[:8]))
    assert same == pytest.approx(np.zeros(8), abs=1e-5)  # batching does not change a descriptor
    other = M.identity_distance(desc[1:], desc[:-1])  # eight different people
    assert np.median(other) > 0.6


@pytest.mark.data
def test_dlib_descriptors_spread_over_a_pool_are_bitwise_those_of_one_process_and_the_pool_is_kept(
        faces64, monkeypatch):
    import antimask.backbones.cache as cache
    from antimask.backbones import DescriptorPool

    monkeypatch.setattr(cache, "POOL_MIN_ROWS", 4)  # eight faces are worth spreading here
    one = M.dlib_descriptors(faces64[:8], batch_size=3)
    with DescriptorPool(2) as pool:
        spread = M.dlib_descriptors(faces64[:8], batch_size=3, pool=pool)
        executor = pool.executor()
        again = M.dlib_descriptors(faces64[8:16], batch_size=3, pool=pool)
        assert pool.executor() is executor  # the second pass reuses the processes of the first
        assert len(executor._processes) == 2  # both of them did work
    assert pool._executor is None  # closed with the block
    np.testing.assert_array_equal(spread, one)
    np.testing.assert_array_equal(again, M.dlib_descriptors(faces64[8:16], batch_size=3))
    assert DescriptorPool(1).spreads(M.create_backbone("dlib"), 10**6) is False  # one process: nothing to spread


@pytest.mark.data
def test_predicted_landmarks_of_aligned_faces_sit_near_the_template(faces64):
    pts = M.predict_landmarks(faces64[:8])
    assert pts.shape == (8, 68, 2)
    err = M.landmark_error(pts, np.broadcast_to(template(64), pts.shape))
    assert np.median(err) < 0.15  # aligned faces: the template is a fair guess of each face
    assert (M.landmark_error(pts, pts) == 0).all()
    # A face whose lower band is blanked no longer has its mouth and jaw where they were.
    blank = faces64[:8].copy()
    blank[:, split_row_for(64):] = 0
    assert np.median(M.landmark_error(M.predict_landmarks(blank), pts)) > 0.2


@pytest.mark.data
def test_face_metrics_of_a_real_face_and_of_a_blanked_one(faces64):
    real = faces64[:6]
    row = split_row_for(64)
    blank = real.copy()
    blank[:, row:] = 0
    feats = np.random.default_rng(0).normal(size=(6, 8))
    same = M.face_metrics(real, real, row, 0.6, feats, feats)
    other = M.face_metrics(blank, real, row, 0.6, feats[::-1], feats)
    assert set(same) == {"l1_lower", "l1_face", "psnr_lower", "psnr_face", "ssim_lower", "ssim_face", "cosine",
                         "identity_distance", "verified", "landmark_error"}
    assert all(v.shape == (6,) for v in other.values())
    assert (same["l1_lower"] == 0).all() and same["cosine"] == pytest.approx(np.ones(6))
    assert same["identity_distance"] == pytest.approx(np.zeros(6), abs=1e-5) and (same["verified"] == 1).all()
    assert (same["landmark_error"] == 0).all()
    assert (other["l1_lower"] > 0.1).all() and (other["ssim_lower"] < same["ssim_lower"]).all()
    assert (other["identity_distance"] > 0.05).all()
