"""Code-drawn face masks on real aligned UTKFace faces: seeding, where the mask sits, coverage, purity, styles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import adult_utkface
from real_faces import align_photos

from antimask.faces.masks import (
    FAMILIES,
    HELD_OUT_STYLES,
    TRAIN_STYLES,
    MaskAugment,
    draw_mask,
    redraw_region,
    sample_style,
)

SIZE = 224
SPLIT_ROW = 96  # the paper's split row at 224
N_FACES = 16
MOUTH, NOSE_TIP, EYES, BROWS = list(range(48, 68)), list(range(30, 36)), list(range(36, 48)), list(range(17, 27))


@pytest.fixture(scope="module")
def faces(utkface_dir):
    images, landmarks, _ = align_photos(adult_utkface(utkface_dir, N_FACES + 4, start=7), SIZE)
    assert len(images) >= N_FACES, f"dlib found only {len(images)} faces"
    return images[:N_FACES], landmarks[:N_FACES]


@pytest.fixture(scope="module")
def draws(faces):
    """Every family on every face: {family: [(face index, style, masked, region)]}."""
    rng = np.random.default_rng(123)
    images, landmarks = faces
    return {family: [(i, style, *draw_mask(images[i], landmarks[i], style))
                     for i in range(len(images)) for style in [sample_style(rng, (family,))]]
            for family in FAMILIES}


def _at(region: np.ndarray, point: np.ndarray, radius: int = 0) -> np.ndarray:
    x, y = np.round(point).astype(int)
    return region[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1]


def test_the_same_seed_draws_the_same_mask_and_other_seeds_differ(faces):
    images, landmarks = faces
    first = MaskAugment(seed=5)(images[0], landmarks[0])
    again = MaskAugment(seed=5)(images[0], landmarks[0])
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    others = [MaskAugment(seed=s)(images[0], landmarks[0]) for s in range(6, 10)]
    assert all(not np.array_equal(first[0], o[0]) for o in others)
    assert len({o[1].sum() for o in others}) > 1
    # by index: the same sample gets the same mask whatever was drawn before
    augment = MaskAugment(seed=3)
    a = augment(images[1], landmarks[1], index=7)
    augment(images[2], landmarks[2])
    b = augment(images[1], landmarks[1], index=7)
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0], augment(images[1], landmarks[1], index=8)[0])


def test_the_mask_covers_nose_tip_mouth_and_chin_but_never_the_eyes_or_brows(faces, draws):
    _, landmarks = faces
    for family, items in draws.items():
        for i, style, _, region in items:
            lm = landmarks[i]
            for k in MOUTH + NOSE_TIP + [8]:
                assert _at(region, lm[k]).all(), f"{family} leaves point {k} of face {i} bare"
            # the chin is covered with a margin: a few pixels below point 8 still lie under the mask
            assert _at(region, lm[8] + [0, 2]).all(), f"{family} ends on the chin of face {i}"
            for k in EYES + BROWS:
                assert not _at(region, lm[k], radius=2).any(), f"{family} covers point {k} of face {i}"


def test_coverage_of_the_lower_band_is_like_a_real_mask(draws):
    # A real-photo mask pasted on an aligned face covers about 48 % of the lower band, N95s more.
    share = {family: np.mean([region[SPLIT_ROW:].mean() for *_, region in items]) for family, items in draws.items()}
    for family, value in share.items():
        assert 0.38 < value < 0.6, f"{family} covers {value:.0%} of the lower band"
    surgical = np.mean([v for f, v in share.items() if f.startswith("surgical")])
    assert 0.44 < surgical < 0.52
    assert share["n95"] > surgical and share["n95_valve"] > surgical
    everything = np.mean(list(share.values()))
    assert 0.43 < everything < 0.53


def test_the_top_edge_varies_and_sometimes_rises_above_the_split_row(faces, draws):
    _, landmarks = faces
    tops = np.array([np.flatnonzero(region[:, int(round(landmarks[i][28, 0]))])[0]
                     for items in draws.values() for i, _, _, region in items])
    assert tops.std() > 4
    assert 0.15 < (tops < SPLIT_ROW).mean() < 0.9
    assert tops.max() >= SPLIT_ROW + 5  # sometimes it sits low on the nose too


def test_pixels_outside_the_region_are_unchanged_and_the_input_is_left_alone(faces, draws):
    images, _ = faces
    for family, items in draws.items():
        for i, _, masked, region in items:
            assert masked.dtype == np.uint8 and masked.shape == images[i].shape and region.dtype == bool
            assert np.array_equal(masked[~region], images[i][~region]), family
            # inside, the mask really is drawn
            assert np.abs(masked[region].astype(int) - images[i][region].astype(int)).mean() > 8, family
    image, before = images[0], images[0].copy()
    draw_mask(image, faces[1][0], sample_style(np.random.default_rng(0)))
    assert np.array_equal(image, before)


def test_every_family_draws_and_held_out_styles_never_train():
    assert set(TRAIN_STYLES).isdisjoint(HELD_OUT_STYLES)
    assert set(TRAIN_STYLES) | set(HELD_OUT_STYLES) == set(FAMILIES)
    assert {FAMILIES[s]["kind"] for s in HELD_OUT_STYLES} >= {"surgical", "cloth", "kn95"}
    rng = np.random.default_rng(0)
    drawn = {sample_style(rng).family for _ in range(300)}
    assert drawn == set(TRAIN_STYLES)
    assert {sample_style(rng, HELD_OUT_STYLES).family for _ in range(100)} == set(HELD_OUT_STYLES)
    with pytest.raises(ValueError, match="unknown mask styles"):
        MaskAugment(styles=("surgical_purple",))


def test_every_family_changes_the_face(draws):
    for family, items in draws.items():
        assert all(region.sum() > 0.25 * region[SPLIT_ROW:].size for *_, region in items), family
        kinds = {style.kind for _, style, _, _ in items}
        assert kinds == {FAMILIES[family]["kind"]}


def test_masks_fit_faces_at_other_sizes(faces):
    images, landmarks = faces
    small = np.stack([cv2.resize(im, (112, 112), interpolation=cv2.INTER_AREA) for im in images[:4]])
    for im, lm in zip(small, landmarks[:4] * 0.5):
        _, region = MaskAugment(seed=1)(im, lm)
        share = region[SPLIT_ROW // 2:].mean()
        assert 0.3 < share < 0.7 and _at(region, lm[62]).all() and not _at(region, lm[37]).any()


def test_probability_zero_leaves_the_face_unmasked(faces):
    images, landmarks = faces
    masked, region = MaskAugment(p=0.0)(images[0], landmarks[0])
    assert np.array_equal(masked, images[0]) and not region.any()
    half = MaskAugment(p=0.5, seed=2)
    hits = [half(images[0], landmarks[0], index=k)[1].any() for k in range(40)]
    assert 8 < sum(hits) < 32


def test_the_redraw_region_contains_the_mask_and_is_feathered(draws):
    region = draws["surgical_blue"][0][3]
    alpha = redraw_region(region, dilate_px=4, feather_px=4)
    assert alpha.dtype == np.float32 and alpha.shape == region.shape
    assert (alpha[region] == 1).all()
    assert (alpha >= 0).all() and (alpha <= 1).all()
    border = (alpha > 0) & (alpha < 1)
    assert border.sum() > 0.5 * (region.sum() ** 0.5)  # a ring of soft pixels all round
    # the soft ring lies outside the dilated region: 4 px of hard 1 around the mask first
    grown = cv2.dilate(region.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))).astype(bool)
    assert (alpha[grown] == 1).all() and not border[grown].any()
    assert np.array_equal(redraw_region(region, 0, 0), region.astype(np.float32))
