"""The thin-plate-spline warp: identity, translation, exact interpolation, gradients."""

from __future__ import annotations

import pytest
import torch

from antimask.models.components.warp import tps_map, tps_warp


def _points(batch: int = 2, k: int = 6, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.15 + 0.7 * torch.rand(batch, k, 2, generator=g)).to(dtype)


def test_identity_when_points_agree():
    image = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    points = _points()
    assert (tps_warp(image, points, points) - image).abs().max() < 1e-4


def test_translation_moves_a_square():
    h, w, dx, dy = 24, 32, 3, 2
    image = torch.zeros(1, 1, h, w)
    image[..., 8:12, 10:16] = 1.0
    src = _points(batch=1)
    dst = src + torch.tensor([dx / w, dy / h])
    out = tps_warp(image, src, dst)
    expected = torch.zeros_like(image)
    expected[..., 8 + dy:12 + dy, 10 + dx:16 + dx] = 1.0
    assert (out - expected).abs().max() < 1e-4


def test_exact_interpolation_per_batch():
    src, dst = _points(seed=2, k=10), _points(seed=3, k=10)
    assert (tps_map(dst, src, dst) - src).abs().max() < 1e-4


def test_regularization_smooths_towards_affine():
    src, dst = _points(seed=2), _points(seed=3)
    loose = tps_map(dst, src, dst, regularization=1e3)
    assert torch.isfinite(loose).all()
    assert (loose - src).abs().max() > 1e-3  # no longer interpolates


def test_gradients_reach_image_and_points():
    image = torch.rand(2, 3, 16, 20, requires_grad=True)
    src = _points(seed=4).requires_grad_()
    dst = (src.detach() + 0.05 * torch.randn(2, 6, 2)).requires_grad_()
    (tps_warp(image, src, dst) * torch.randn(2, 3, 16, 20)).sum().backward()
    for grad in (image.grad, src.grad, dst.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradients_finite_when_points_coincide():
    points = _points().requires_grad_()
    tps_map(points, points, points).sum().backward()  # every query sits on a control point
    assert torch.isfinite(points.grad).all()


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    src = _points(batch=1, k=4, seed=6, dtype=torch.float64)
    dst = (src + 0.05 * torch.randn(1, 4, 2, generator=g, dtype=torch.float64)).requires_grad_()
    src.requires_grad_()
    assert torch.autograd.gradcheck(tps_warp, (image, src, dst), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("image, src, dst, match", [
    (torch.rand(3, 8, 8), _points(), _points(), "image must be"),
    (torch.rand(2, 3, 8, 8), _points()[..., :1], _points()[..., :1], "src_points must be"),
    (torch.rand(2, 3, 8, 8), _points(k=6), _points(k=5), "must match"),
    (torch.rand(2, 3, 8, 8), _points(k=2), _points(k=2), "at least 3"),
    (torch.rand(3, 3, 8, 8), _points(), _points(), "batch"),
])
def test_bad_shapes_raise(image, src, dst, match):
    with pytest.raises(ValueError, match=match):
        tps_warp(image, src, dst)
