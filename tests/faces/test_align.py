"""Alignment on the packaged portraits: aligned landmarks land on the template."""

import numpy as np
import pytest

from antimask.config import load_config
from antimask.faces import align, finder
from antimask.data.sample import portraits


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_packaged_portraits_align_onto_the_template(name):
    image = portraits()[name]
    opts = load_config().prepare
    faces = finder.run_detector(image, "hog", opts) or finder.run_detector(image, "cnn", opts)
    assert faces, f"no face found in {name}"
    points = finder.landmarks_68(image, faces[0].box)
    aligned, pts, _, residual = align.align_face(image, points, 224)
    assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
    err = np.linalg.norm(pts - align.template(224), axis=1)
    assert err.mean() < 5.0, f"mean landmark distance to the template {err.mean():.1f} px"
    assert residual == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-4)


def test_template_geometry_matches_the_paper_split():
    t = align.template(224)
    eyes = t[align.EYES, 1].mean()
    assert eyes < 96 - 15, "eye centres must sit well inside the visible upper band"
    assert abs(t[29, 1] - 96) < 6, "the nose bridge lies near the split row"
    assert t[[8, 57, 33], 1].min() > 96 and t[8, 1] < 224, "nose, mouth, chin lie in the lower band, in frame"
    assert len(align.LOWER_POINTS) == 40 and all(t[i, 1] >= 96 for i in align.LOWER_POINTS)


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (68, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = align.similarity_transform(src, dst)
    np.testing.assert_allclose(align.apply_transform(src, m), dst, atol=1e-3)
    np.testing.assert_allclose(align.apply_transform(align.apply_transform(src, m), align.invert_transform(m)), src,
                               atol=1e-3)


def test_flip_permutation_maps_the_template_onto_its_mirror():
    t = align.template(224)
    mirrored = t.copy()
    mirrored[:, 0] = 224 - mirrored[:, 0]
    assert np.abs(mirrored[align.FLIP_PERMUTATION] - t).max() < 3.0
    assert (align.FLIP_PERMUTATION[align.FLIP_PERMUTATION] == np.arange(68)).all()


def test_yaw_is_zero_for_the_template_and_grows_when_the_nose_moves():
    t = align.template(224)
    assert abs(align.estimate_yaw(t)) < 3
    turned = t.copy()
    turned[27:36, 0] += 25
    assert align.estimate_yaw(turned) < -15 or align.estimate_yaw(turned) > 15
