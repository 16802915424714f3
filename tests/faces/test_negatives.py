"""Crops that are not faces (faces.negatives) and the finder's last check of an aligned crop (its verifier)."""

from __future__ import annotations

import numpy as np
import pytest

from antimask.config import load_config, split_row_for
from antimask.data.sample import portraits
from antimask.faces import finder
from antimask.faces.negatives import KINDS, not_a_face
from antimask.faces.photos import Rejected


@pytest.fixture(scope="module")
def face():
    cfg = load_config()
    return finder.find_faces(portraits()["astronaut"], cfg.predict, 64, split_row_for(64)).faces[0].aligned


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_a_crop_of_the_face_size_unlike_the_face(face, kind):
    rng = np.random.default_rng(0)
    crops = [not_a_face(face, rng, kind) for _ in range(8)]
    for crop in crops:
        assert crop.shape == face.shape and crop.dtype == np.uint8
        assert np.abs(crop.astype(int) - face.astype(int)).mean() > 8  # not the face itself
    assert len({c.tobytes() for c in crops}) > 1  # drawn at random


def test_the_same_seed_gives_the_same_crops_and_bad_input_is_refused(face):
    a = [not_a_face(face, np.random.default_rng(3)) for _ in range(3)]
    b = [not_a_face(face, np.random.default_rng(3)) for _ in range(3)]
    assert all((x == y).all() for x, y in zip(a, b))
    with pytest.raises(ValueError, match="aligned uint8"):
        not_a_face(face.astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown kind"):
        not_a_face(face, np.random.default_rng(0), "sideways")


def test_the_finder_rejects_what_the_verifier_says_is_no_face():
    cfg = load_config()
    photo = portraits()["astronaut"]
    seen = []

    def verifier(aligned):
        seen.append(aligned.shape)
        return "a stand-in says no"

    with pytest.raises(Rejected, match="no face found"):
        finder.find_faces(photo, cfg.predict, 64, split_row_for(64), verifier=verifier)
    assert seen and all(s == (64, 64, 3) for s in seen)
    with pytest.raises(Rejected, match="is not a face \\(a stand-in says no\\)"):
        finder.find_faces(photo, cfg.predict, 64, split_row_for(64), keep="largest", verifier=verifier)
    found = finder.find_faces(photo, cfg.predict, 64, split_row_for(64), verifier=lambda aligned: None)
    assert len(found.faces) == 1
