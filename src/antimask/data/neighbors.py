"""The k most similar train faces of every train face, for morph augmentation (paper, Sec. 3).

Similarity is the paper's d(A, B) = lambda * ||L_A - L_B|| + ||T_A - T_B||: L are the 68 aligned
landmarks in pixel coordinates at the stored size (224), T the aligned pixels in [0, 1].

Units: T is compared at ``augment.feature_size`` pixels (64 by default), not at 224, because the
224 px pixel vectors of all 23,708 UTKFace faces would need 14 GB as float32. Downsampling with
INTER_AREA averages 3.5x3.5 blocks, so ||T_A - T_B|| at 64 is roughly 64/224 of its value at 224 and
lambda weighs the landmarks about 3.5x more than in the paper; ``feature_size=224`` gives the paper's
exact units (and needs the memory).

The search is exact: pixels are kept as uint8 and every block of the pixel distances is computed as
||a||^2 + ||b||^2 - 2ab in float64, where the integer dot products are exact; the 136-dimensional
landmark distances are cheap enough to take by direct differences (``cdist``), which avoids the
expansion's cancellation for near-identical shapes. So the result equals ``brute_force_neighbors``. Memory is bounded by ``augment.chunk_mb`` per block; an N x N x D tensor
is never formed. Ties are broken by the lower row index.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.spatial.distance import cdist


def face_features(images: np.ndarray, landmarks: np.ndarray, feature_size: int,
                  rows: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(L, T): landmarks as float64 (N, 136) and uint8 pixels (N, 3 * feature_size**2) at feature_size.

    ``images`` may be a memory map; faces are resized one at a time so only T is ever in memory.
    ``rows`` picks a subset of the rows (all by default) without copying the images.
    """
    import cv2

    rows = np.arange(len(images)) if rows is None else np.asarray(rows, np.int64)
    n = len(rows)
    lmk = np.asarray(landmarks[rows], np.float64).reshape(n, 136)
    pixels = np.empty((n, 3 * feature_size * feature_size), np.uint8)
    for i, row in enumerate(rows):
        face = np.asarray(images[int(row)])
        if face.shape[0] != feature_size:
            face = cv2.resize(face, (feature_size, feature_size), interpolation=cv2.INTER_AREA)
        pixels[i] = face.reshape(-1)
    return lmk, pixels


def _check_k(k: int, n: int) -> None:
    if k < 1:
        raise ValueError(f"augment.neighbors must be at least 1, got {k}")
    if k > n - 1:
        raise ValueError(
            f"augment.neighbors={k} needs at least {k + 1} train faces, but there are only {n} "
            f"(lower augment.neighbors to at most {max(n - 1, 0)} or add photos)")


def _rows_per_block(n: int, dim: int, chunk_mb: int) -> int:
    """Rows of one block so that its float64 buffers (queries, references, distances) fit chunk_mb."""
    budget = chunk_mb * 2 ** 20
    per_row = 8 * (2 * dim + n + 2)  # query row + reference row + one row of the distance matrix
    return int(max(1, min(n, budget // per_row)))


def _squared_distances(a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    d = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def _top_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the k smallest distances, ties broken by column index (deterministic)."""
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1]
    idx = np.empty((len(dist), k), np.int64)
    for r in range(len(dist)):
        cand = np.flatnonzero(dist[r] <= kth[r])
        order = np.lexsort((cand, dist[r, cand]))[:k]  # by distance, then by index
        idx[r] = cand[order]
    return idx, np.take_along_axis(dist, idx, axis=1)


def neighbors_from_features(lmk: np.ndarray, pixels: np.ndarray, k: int, landmark_weight: float,
                            chunk_mb: int = 256, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours from ``face_features`` output: (indices (N, k) int64, distances (N, k)).

    ``pixels`` are uint8 (values / 255 are the [0, 1] pixels); distances are in the module's units.
    """
    n, dim = pixels.shape
    _check_k(k, n)
    lmk = np.asarray(lmk, np.float64)
    pix_sq = np.einsum("ij,ij->i", pixels, pixels, dtype=np.int64).astype(np.float64)
    block = _rows_per_block(n, dim, chunk_mb)
    starts = range(0, n, block)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="neighbours", unit="block")
    out_idx = np.empty((n, k), np.int64)
    out_dist = np.empty((n, k), np.float64)
    for r0 in starts:
        r1 = min(n, r0 + block)
        query = pixels[r0:r1].astype(np.float64)
        pix_d = np.empty((r1 - r0, n), np.float64)
        for c0 in range(0, n, block):
            c1 = min(n, c0 + block)
            ref = query if c0 == r0 else pixels[c0:c1].astype(np.float64)
            pix_d[:, c0:c1] = _squared_distances(query, ref, pix_sq[r0:r1], pix_sq[c0:c1])
        del query
        dist = np.sqrt(pix_d, out=pix_d) / 255.0
        dist += landmark_weight * cdist(lmk[r0:r1], lmk)  # direct differences: 136 dims are cheap
        dist[np.arange(r1 - r0), np.arange(r0, r1)] = np.inf  # a face is not its own neighbour
        out_idx[r0:r1], out_dist[r0:r1] = _top_k(dist, k)
    return out_idx, out_dist


def nearest_neighbors(images: np.ndarray, landmarks: np.ndarray, k: int, landmark_weight: float,
                      feature_size: int = 64, chunk_mb: int = 256, rows: Optional[np.ndarray] = None,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest faces of every face under d(A, B): (indices (N, k) int64, distances (N, k) float64).

    ``images`` uint8 (N, S, S, 3) aligned faces (a memory map is fine), ``landmarks`` (N, 68, 2) at S.
    With ``rows``, only those faces take part and indices point into ``rows`` (0..len(rows)-1).
    """
    _check_k(k, len(images) if rows is None else len(rows))
    lmk, pixels = face_features(images, landmarks, feature_size, rows)
    return neighbors_from_features(lmk, pixels, k, landmark_weight, chunk_mb, progress)


def brute_force_neighbors(images: np.ndarray, landmarks: np.ndarray, k: int, landmark_weight: float,
                          feature_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The same as ``nearest_neighbors`` by direct differences, one face at a time (for tests)."""
    n = len(images)
    _check_k(k, n)
    lmk, pix = face_features(images, landmarks, feature_size)
    tex = pix.astype(np.float64) / 255.0
    idx = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float64)
    for i in range(n):
        d = landmark_weight * np.sqrt(((lmk - lmk[i]) ** 2).sum(1)) + np.sqrt(((tex - tex[i]) ** 2).sum(1))
        d[i] = np.inf
        order = np.lexsort((np.arange(n), d))[:k]
        idx[i], dist[i] = order, d[order]
    return idx, dist
