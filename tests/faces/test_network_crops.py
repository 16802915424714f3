"""The crops pretrained face networks expect, from our landmarks and from our template, in numpy and in torch."""

from __future__ import annotations

import numpy as np
import torch

from antimask.faces import align


def test_the_template_lands_on_arcface_five_points():
    for size in (112, 224, 160):
        m = align.template_crop_matrix("arcface", size, 112)
        pts = align.apply_transform(align.five_points(align.template(size)), m)
        # a similarity cannot fit five points exactly: the residual says how close our template is to ArcFace's
        assert np.abs(pts - align.ARCFACE_112).max() < 4.0


def test_a_photo_and_its_aligned_face_give_the_same_arcface_crop():
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 1.7, np.array([40.0, -25.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    photo_landmarks = align.template(224) @ rot.T + shift + rng.normal(0, 0.5, (68, 2))
    direct = align.network_crop_matrix(photo_landmarks, "arcface", 112)
    via_template = np.vstack([align.template_crop_matrix("arcface", 224, 112), [0, 0, 1]]) @ \
        np.vstack([align.alignment_matrix(photo_landmarks), [0, 0, 1]])
    pts = align.five_points(photo_landmarks)
    assert np.abs(align.apply_transform(pts, direct) - align.apply_transform(pts, via_template[:2])).max() < 1.5


def test_the_face_box_crop_is_centred_on_the_landmarks():
    m = align.face_box_matrix(align.template(224), 224)
    pts = align.apply_transform(align.template(224), m)
    lo, hi = pts.min(0), pts.max(0)
    assert np.allclose((lo + hi) / 2, 111.5, atol=0.01)  # the crop's centre pixel
    assert np.isclose((hi - lo).max(), 224 / align.FACE_BOX_SCALE, atol=0.01)


def test_the_torch_warp_matches_opencv_and_passes_gradients():
    rng = np.random.default_rng(1)
    image = (rng.random((224, 224, 3)) * 255).astype(np.uint8)
    image = np.ascontiguousarray(np.repeat(np.repeat(image[::8, ::8], 8, 0), 8, 1))  # smooth enough to compare
    m = align.face_box_matrix(align.template(224), 224)  # near unit scale: no resize in between
    cv = align.warp_face(image, m, 224).astype(np.float32) / 255
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    ours = align.warp_faces(x, m, 224)
    diff = np.abs(ours[0].detach().permute(1, 2, 0).numpy() - cv)
    assert diff.mean() < 0.01 and np.median(diff) < 0.005
    ours.sum().backward()
    assert x.grad.abs().sum() > 0


def test_the_torch_arcface_crop_matches_opencv_on_a_smooth_face():
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
    image = np.stack([xx / 224, yy / 224, (xx + yy) / 448], -1)
    m = align.template_crop_matrix("arcface", 224, 112)  # about 0.44x: the antialiased resize runs first
    cv = align.warp_face((image * 255).round().astype(np.uint8), m, 112).astype(np.float32) / 255
    ours = align.warp_faces(torch.from_numpy(image).permute(2, 0, 1)[None], m, 112)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - cv).max() < 0.02
