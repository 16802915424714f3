"""Differentiable thin-plate-spline warp: moves a drawn texture so its landmarks land on given points.

Cole et al.'s landmark-guided warp: the decoder draws a texture at template landmarks, and the TPS
that maps the target landmarks back to the drawn ones tells every output pixel where to sample.
Points are (x, y) normalised to [0, 1] of the image's width and height, pixel centres at (i + 0.5) / W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2 between (B,N,2) and (B,K,2) points -> (B,N,K), with U(0) = 0."""
    r2 = (a[:, :, None, :] - b[:, None, :, :]).pow(2).sum(-1)
    # The clamp keeps log finite at r = 0, where r2 * log(.) is then exactly 0 and so is its gradient
    # w.r.t. the points (d r2 / d point = 2 (a - b) = 0 there).
    return r2 * torch.log(r2.clamp_min(torch.finfo(r2.dtype).tiny))


def _affine_basis(points: torch.Tensor) -> torch.Tensor:
    """[1, x, y] rows for (B,N,2) points -> (B,N,3)."""
    return torch.cat([torch.ones_like(points[..., :1]), points], dim=-1)


def _check_points(src_points: torch.Tensor, dst_points: torch.Tensor, regularization: float) -> None:
    if src_points.dim() != 3 or src_points.shape[-1] != 2:
        raise ValueError(f"src_points must be (B, K, 2), got {tuple(src_points.shape)}")
    if dst_points.shape != src_points.shape:
        raise ValueError(f"dst_points {tuple(dst_points.shape)} must match src_points {tuple(src_points.shape)}")
    if src_points.shape[1] < 3:
        raise ValueError(f"a thin-plate spline needs at least 3 points, got {src_points.shape[1]}")
    if regularization < 0:
        raise ValueError(f"regularization must be >= 0, got {regularization}")


def _fit(src_points: torch.Tensor, dst_points: torch.Tensor, regularization: float) -> torch.Tensor:
    """Solve the (K+3)x(K+3) TPS system for the spline dst -> src; returns (B, K+3, 2) coefficients."""
    b, k, _ = dst_points.shape
    kernel = _kernel(dst_points, dst_points)
    if regularization > 0:
        kernel = kernel + regularization * torch.eye(k, dtype=kernel.dtype, device=kernel.device)
    basis = _affine_basis(dst_points)
    zeros = kernel.new_zeros(b, 3, 3)
    system = torch.cat([torch.cat([kernel, basis], dim=2), torch.cat([basis.transpose(1, 2), zeros], dim=2)], dim=1)
    rhs = torch.cat([src_points, src_points.new_zeros(b, 3, 2)], dim=1)
    return torch.linalg.solve(system, rhs)


def tps_map(query: torch.Tensor, src_points: torch.Tensor, dst_points: torch.Tensor,
            regularization: float = 0.0) -> torch.Tensor:
    """f(query) for the TPS f that maps dst_points -> src_points; query (B,N,2) -> (B,N,2).

    With regularization = 0 the spline interpolates exactly (f(dst_k) = src_k); a positive value
    is added to the kernel's diagonal and trades exactness for smoothness.
    """
    _check_points(src_points, dst_points, regularization)
    if query.dim() != 3 or query.shape[-1] != 2 or query.shape[0] != src_points.shape[0]:
        raise ValueError(f"query must be ({src_points.shape[0]}, N, 2), got {tuple(query.shape)}")
    # Half precision is too coarse for the solve (and linalg.solve rejects it).
    dtype = torch.promote_types(torch.promote_types(query.dtype, src_points.dtype), torch.float32)
    query, src_points, dst_points = query.to(dtype), src_points.to(dtype), dst_points.to(dtype)
    coef = _fit(src_points, dst_points, regularization)
    k = dst_points.shape[1]
    return _kernel(query, dst_points) @ coef[:, :k] + _affine_basis(query) @ coef[:, k:]


def tps_warp(image: torch.Tensor, src_points: torch.Tensor, dst_points: torch.Tensor,
             regularization: float = 0.0) -> torch.Tensor:
    """Warp image (B,C,H,W) so the content at src_points (B,K,2) moves to dst_points (B,K,2).

    Output pixel p samples the image (bilinear, border padding) at f(p), f the TPS dst -> src from
    ``tps_map``. Differentiable w.r.t. the image and both point sets.
    """
    if image.dim() != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    _check_points(src_points, dst_points, regularization)
    if src_points.shape[0] != image.shape[0]:
        raise ValueError(f"points batch {src_points.shape[0]} does not match image batch {image.shape[0]}")
    b, _, h, w = image.shape
    ys = (torch.arange(h, device=image.device, dtype=src_points.dtype) + 0.5) / h
    xs = (torch.arange(w, device=image.device, dtype=src_points.dtype) + 0.5) / w
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    pixels = torch.stack([grid_x, grid_y], dim=-1).view(1, h * w, 2).expand(b, -1, -1)
    sample = tps_map(pixels, src_points, dst_points, regularization).view(b, h, w, 2)
    # [0, 1] with pixel centres at (i + 0.5) / W is exactly grid_sample's align_corners=False convention.
    grid = (sample * 2 - 1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
