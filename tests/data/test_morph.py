"""Morphing real faces: a face morphed with itself is itself; the morph's landmarks are where dlib sees them."""

from __future__ import annotations

import numpy as np

from real_faces import detect_landmarks
from antimask.data.morph import morph


def test_morph_with_itself_is_identity(utk_faces):
    images, landmarks, _ = utk_faces
    for i in (0, 7):
        out, lmk = morph(images[i], landmarks[i], images[i], landmarks[i], 0.37)
        assert out.dtype == np.uint8 and out.shape == images[i].shape
        assert np.abs(out.astype(int) - images[i]).max() <= 1
        np.testing.assert_allclose(lmk, landmarks[i], atol=1e-4)


def test_morph_endpoints_and_blend(utk_faces):
    images, landmarks, _ = utk_faces
    a, b = 3, 4
    out0, l0 = morph(images[a], landmarks[a], images[b], landmarks[b], 0.0)
    assert np.abs(out0.astype(int) - images[a]).max() <= 1
    np.testing.assert_allclose(l0, landmarks[a], atol=1e-4)
    _, half = morph(images[a], landmarks[a], images[b], landmarks[b], 0.5)
    np.testing.assert_allclose(half, (landmarks[a] + landmarks[b]) / 2, atol=1e-4)


def test_morph_landmarks_match_dlib(utk_faces):
    """dlib, run on the morphed face, finds its landmarks where morph says they are."""
    images, landmarks, _ = utk_faces
    errors, baseline = [], []
    for a, b in [(0, 1), (2, 5), (6, 9), (10, 11), (12, 20)]:
        out, lmk = morph(images[a], landmarks[a], images[b], landmarks[b], 0.5)
        found = detect_landmarks(out)
        assert found is not None, f"dlib finds no face in the morph of {a} and {b}"
        errors.append(np.linalg.norm(found - lmk, axis=1).mean())
        # A wrong warp would leave the face at A's shape: the morph must be closer to the blend.
        baseline.append(np.linalg.norm(found - landmarks[a], axis=1).mean())
    assert np.mean(errors) < 3.0, errors
    assert np.mean(errors) < np.mean(baseline), (errors, baseline)
