"""Morphing two aligned faces into a new one (the paper's augmentation): a pure function.

Both faces are warped onto the blended shape (1 - alpha) * L_A + alpha * L_B with a piecewise-affine
warp over a Delaunay triangulation of the 68 landmarks plus points on the image border, then their
pixels are blended (1 - alpha) * A' + alpha * B'.

Why piecewise-affine rather than a thin-plate spline: each pixel depends only on the three landmarks
of its triangle, so the warp is local (a bad point cannot bend the whole face), maps every landmark
exactly onto its target, cannot fold inside a triangle, and costs one dense backward map plus one
``cv2.remap`` per face. A TPS is global (every pixel depends on all 76 points), overshoots outside
the landmarks' hull, and needs a 76 x 76 solve plus an HW x 76 kernel evaluation per face; the
smoothness it buys is invisible after the two images are blended.
"""

from __future__ import annotations

import numpy as np

# Points on the border keep the background and hair in the triangulation (corners and mid-edges).
_BORDER_FRACTIONS = np.array(
    [[0, 0], [0.5, 0], [1, 0], [1, 0.5], [1, 1], [0.5, 1], [0, 1], [0, 0.5]], np.float64)


def _border(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """8 border points on a box enclosing the image and every given point."""
    lo = np.minimum(points.min(0), 0.0) - 1.0
    hi = np.maximum(points.max(0), [width - 1.0, height - 1.0]) + 1.0
    return lo + _BORDER_FRACTIONS * (hi - lo)


def _affines(src: np.ndarray, dst: np.ndarray, simplices: np.ndarray) -> np.ndarray:
    """Per triangle the 2x3 matrix mapping destination-triangle points onto source-triangle points."""
    d = dst[simplices]  # (T, 3, 2)
    s = src[simplices]
    d_h = np.concatenate([d, np.ones(d.shape[:2] + (1,))], axis=2)  # (T, 3, 3)
    # Solve d_h @ M.T = s for each triangle; degenerate (flat) triangles fall back to least squares.
    try:
        m_t = np.linalg.solve(d_h, s)
    except np.linalg.LinAlgError:
        m_t = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(d_h, s)])
    return np.transpose(m_t, (0, 2, 1))  # (T, 2, 3)


def triangle_map(dst_points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(simplices, id map): the Delaunay triangles of ``dst_points`` and each pixel's triangle (H, W).

    Triangles are rasterised with ``cv2.fillConvexPoly`` (sub-pixel precise); the few pixels no fill
    reached (edge rounding) are located exactly with ``Delaunay.find_simplex``.
    """
    import cv2
    from scipy.spatial import Delaunay

    tri = Delaunay(dst_points)
    ids = np.full((height, width), -1, np.int32)
    shift = 8
    corners = np.round(dst_points[tri.simplices] * (1 << shift)).astype(np.int32)  # (T, 3, 2)
    for t, poly in enumerate(corners):
        cv2.fillConvexPoly(ids, poly, int(t), lineType=cv2.LINE_8, shift=shift)
    holes = np.argwhere(ids < 0)
    if len(holes):
        ids[holes[:, 0], holes[:, 1]] = tri.find_simplex(holes[:, ::-1].astype(np.float64))
    return tri.simplices, ids


def warp_maps(src_points: list[np.ndarray], dst_points: np.ndarray, height: int,
              width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Dense backward maps (map_x, map_y) for ``cv2.remap`` from the dst shape onto each src shape.

    The destination's triangle id map is rasterised once and shared by every source.
    """
    simplices, ids = triangle_map(dst_points, height, width)
    ids = np.maximum(ids, 0)  # every pixel lies inside the border box; guard against rounding anyway
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    maps = []
    for src in src_points:
        m = _affines(src, dst_points, simplices)[ids]  # (H, W, 2, 3)
        map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
        map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
        maps.append((map_x.astype(np.float32), map_y.astype(np.float32)))
    return maps


def morph(img_a: np.ndarray, lmk_a: np.ndarray, img_b: np.ndarray, lmk_b: np.ndarray,
          alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Morph face A towards face B by ``alpha`` in [0, 1]: returns (uint8 image, float32 (68, 2) landmarks).

    Both images are uint8 HxWx3 of the same size, landmarks (68, 2) (x, y) in their pixels.
    ``morph(a, la, a, la, t)`` returns ``a`` (within rounding) for any t.
    """
    import cv2

    if img_a.shape != img_b.shape:
        raise ValueError(f"faces differ in size: {img_a.shape} and {img_b.shape}")
    h, w = img_a.shape[:2]
    la = np.asarray(lmk_a, np.float64)
    lb = np.asarray(lmk_b, np.float64)
    target = (1.0 - alpha) * la + alpha * lb
    # The same border points in all three shapes, so the background stays where it is.
    border = _border(np.vstack([la, lb]), h, w)
    dst = np.vstack([target, border])
    src_a = np.vstack([la, border])
    src_b = np.vstack([lb, border])
    (ax, ay), (bx, by) = warp_maps([src_a, src_b], dst, h, w)
    warped_a = cv2.remap(img_a, ax, ay, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    warped_b = cv2.remap(img_b, bx, by, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    blended = cv2.addWeighted(warped_a, 1.0 - alpha, warped_b, alpha, 0.0)
    return blended, target.astype(np.float32)
