"""Per-face metrics of drawn lower faces against the real ones, and bootstrap intervals of their means.

Arrays in, arrays out: images are aligned faces, uint8 (N, S, S, 3) or float in [0, 1]; every metric
returns one value per face (N,), so that the report can bootstrap it and pick the worst cases.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch

from antimask.backbones import DescriptorPool, create_backbone, features_in_memory
from antimask.faces.align import EYES, LOWER_POINTS, TEMPLATE_SIZE, template
from antimask.faces.dlib_models import shape_predictor
from antimask.faces.images import to_float, to_uint8

LEFT_EYE = EYES[:6]  # dlib 36-41
RIGHT_EYE = EYES[6:]  # dlib 42-47


# ----------------------------------------------------------------------------------------------- pixels
def _bands(drawn: np.ndarray, real: np.ndarray, split_row: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = (to_float(np.reshape(x, (-1, *np.shape(x)[-3:]))) for x in (drawn, real))
    if a.shape != b.shape:
        raise ValueError(f"drawn faces {tuple(a.shape)} and real faces {tuple(b.shape)} differ in shape")
    if split_row is not None:  # the lower band only: the rows a mask hides
        a, b = a[:, :, split_row:], b[:, :, split_row:]
    return a, b


def l1(drawn: np.ndarray, real: np.ndarray, split_row: Optional[int] = None) -> np.ndarray:
    """Mean absolute error in [0, 1] units per face; on rows >= split_row, or the whole face if None."""
    a, b = _bands(drawn, real, split_row)
    return (a - b).abs().flatten(1).mean(1).numpy().astype(np.float64)


def psnr(drawn: np.ndarray, real: np.ndarray, split_row: Optional[int] = None) -> np.ndarray:
    """PSNR in dB (data range 1) per face; identical faces give inf."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    a, b = _bands(drawn, real, split_row)
    out = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return out.numpy().astype(np.float64)


def ssim(drawn: np.ndarray, real: np.ndarray, split_row: Optional[int] = None, batch_size: int = 32) -> np.ndarray:
    """SSIM per face (Gaussian window 11, sigma 1.5, data range 1, averaged over the RGB channels).

    torchmetrics in float32, in batches: its float64 Gaussian filtering took 14 GB for 392 faces at 112 px
    at once and ~20-40x the time of float32 on the CPU (the lower band and the whole face of 96 faces at
    112 px, beside a training run: 30 s vs 1 s), for a per-face difference of at most 4e-5 on real faces.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _bands(drawn, real, split_row)
    out = [structural_similarity_index_measure(a[i:i + batch_size].float(), b[i:i + batch_size].float(),
                                               data_range=1.0, reduction="none").reshape(-1)
           for i in range(0, len(a), batch_size)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def image_metrics(drawn: np.ndarray, real: np.ndarray, split_row: int) -> dict[str, np.ndarray]:
    """L1, PSNR and SSIM on the lower band and on the whole face, each (N,)."""
    out = {}
    for name, fn in (("l1", l1), ("psnr", psnr), ("ssim", ssim)):
        out[f"{name}_lower"] = fn(drawn, real, split_row)
        out[f"{name}_face"] = fn(drawn, real, None)
    return out


# --------------------------------------------------------------------------------------------- features
def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between matching rows of two (N, D) feature arrays, (N,)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"feature arrays {a.shape} and {b.shape} differ in shape")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def random_pairs(identities: np.ndarray, n_pairs: int, seed: int = 0) -> np.ndarray:
    """(n_pairs, 2) row indices (i, j) with identities[i] != identities[j], drawn with ``seed``.

    Empty when fewer than two identities exist.
    """
    ids = np.asarray(identities)
    if len(np.unique(ids)) < 2 or n_pairs <= 0:
        return np.zeros((0, 2), np.int64)
    rng = np.random.default_rng(seed)
    pairs: list[np.ndarray] = []
    got = 0
    while got < n_pairs:  # rejection sampling; terminates fast unless one identity dominates
        i = rng.integers(0, len(ids), size=2 * (n_pairs - got) + 8)
        j = rng.integers(0, len(ids), size=len(i))
        keep = ids[i] != ids[j]
        chunk = np.stack([i[keep], j[keep]], 1)[: n_pairs - got]
        pairs.append(chunk)
        got += len(chunk)
    return np.concatenate(pairs).astype(np.int64)


def random_pair_cosine(features: np.ndarray, identities: np.ndarray, n_pairs: int, seed: int = 0,
                       other: Optional[np.ndarray] = None) -> np.ndarray:
    """Cosine between features of two different identities, (n_pairs,): the chance level of ``cosine``.

    With ``other`` (e.g. drawn-face features) the pair is features[i] vs other[j], else features[i] vs
    features[j].
    """
    features = np.asarray(features)
    pairs = random_pairs(identities, n_pairs, seed)
    if len(pairs) == 0:
        return np.zeros(0)
    second = features if other is None else np.asarray(other)
    return cosine_similarity(features[pairs[:, 0]], second[pairs[:, 1]])


# --------------------------------------------------------------------------------------------- identity
def identity_distance(drawn_descriptors: np.ndarray, real_descriptors: np.ndarray) -> np.ndarray:
    """Euclidean distance between dlib 128-d descriptors of drawn and real faces, (N,)."""
    a = np.asarray(drawn_descriptors, np.float64)
    b = np.asarray(real_descriptors, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"descriptor arrays {a.shape} and {b.shape} differ in shape")
    return np.linalg.norm(a - b, axis=1)


def verified(distances: np.ndarray, threshold: float) -> np.ndarray:
    """1.0 where the drawn face passes as the same person (distance < threshold), else 0.0, (N,)."""
    return (np.asarray(distances, np.float64) < threshold).astype(np.float64)


def verified_share(distances: np.ndarray, threshold: float) -> float:
    """Share of faces verified as the same person at ``threshold`` (dlib: 0.6)."""
    v = verified(distances, threshold)
    return float(v.mean()) if len(v) else float("nan")


def _as_uint8_at(faces: np.ndarray, size: int) -> list[np.ndarray]:
    import cv2

    arr = np.asarray(faces)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8:
        arr = to_uint8(torch.from_numpy(np.moveaxis(arr, -1, -3)).double())  # rounded in float64, as before
    out = []
    for face in arr:
        if face.shape[0] != size:
            interp = cv2.INTER_CUBIC if face.shape[0] < size else cv2.INTER_AREA
            face = cv2.resize(face, (size, size), interpolation=interp)
        out.append(np.ascontiguousarray(face))
    return out


def _template_rect(size: int = TEMPLATE_SIZE):
    import dlib

    pts = template(size)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    return dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))


def dlib_descriptors(faces: np.ndarray, batch_size: int = 32, pool: Optional[DescriptorPool] = None) -> np.ndarray:
    """dlib 128-d descriptors of aligned faces, (N, 128) float32.

    Faces are upscaled to 224 uint8 and described by the ``dlib`` backbone, whose landmarks are the
    template's (the faces are aligned), so no detector runs and a drawn face is described exactly
    where the real one is. With a ``pool`` the batches are spread over its processes.
    """
    model = create_backbone("dlib", size=TEMPLATE_SIZE)
    images = _as_uint8_at(faces, TEMPLATE_SIZE)
    stacked = np.stack(images) if images else np.zeros((0, TEMPLATE_SIZE, TEMPLATE_SIZE, 3), np.uint8)
    return features_in_memory(model, stacked, batch_size, pool)


# -------------------------------------------------------------------------------------------- landmarks
def predict_landmarks(faces: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks of aligned faces, (N, 68, 2) in the faces' own pixels.

    The face box is the template's landmark extent (no detector: the faces are aligned); faces are
    upscaled to 224 first, where the predictor was trained on faces of that scale.
    """
    arr = np.asarray(faces)
    size = arr.shape[-2]
    predictor = shape_predictor()
    rect = _template_rect()
    out = []
    for img in _as_uint8_at(arr, TEMPLATE_SIZE):
        shape = predictor(img, rect)
        out.append([(p.x, p.y) for p in shape.parts()])
    pts = np.asarray(out, np.float64).reshape(-1, 68, 2)
    return (pts * (size / TEMPLATE_SIZE)).astype(np.float32)


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the eye centres (means of points 36-41 and 42-47), (N,)."""
    pts = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    return np.linalg.norm(pts[:, LEFT_EYE].mean(1) - pts[:, RIGHT_EYE].mean(1), axis=1)


def landmark_error(drawn_landmarks: np.ndarray, real_landmarks: np.ndarray,
                   points: Optional[list[int]] = None) -> np.ndarray:
    """Mean distance over the lower-face points between drawn and real landmarks, per face, divided
    by the real face's inter-ocular distance, (N,)."""
    idx = LOWER_POINTS if points is None else list(points)
    a = np.asarray(drawn_landmarks, np.float64).reshape(-1, 68, 2)
    b = np.asarray(real_landmarks, np.float64).reshape(-1, 68, 2)
    err = np.linalg.norm(a[:, idx] - b[:, idx], axis=2).mean(1)
    return err / np.maximum(inter_ocular(b), 1e-12)


# -------------------------------------------------------------------------------------------- intervals
def bootstrap_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 method: str = "BCa") -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values and its bootstrap confidence interval.

    Fewer than two finite values, or ``n_resamples`` 0, give a NaN interval; a constant array gives
    the degenerate interval (c, c); BCa falls back to percentile where it cannot be computed.
    """
    from scipy import stats

    v = np.asarray(values, np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2 or n_resamples <= 0:
        return mean, float("nan"), float("nan")
    if np.ptp(v) == 0:
        return mean, mean, mean
    methods = [method] if method == "percentile" else [method, "percentile"]
    for m in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                  method=m, vectorized=True, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return mean, low, high
    return mean, float("nan"), float("nan")


# ------------------------------------------------------------------------------------------------- all
def face_metrics(drawn: np.ndarray, real: np.ndarray, split_row: int, verify_threshold: float,
                 drawn_features: Optional[np.ndarray] = None, real_features: Optional[np.ndarray] = None,
                 real_descriptors: Optional[np.ndarray] = None, real_landmarks: Optional[np.ndarray] = None,
                 batch_size: int = 32, pool: Optional[DescriptorPool] = None) -> dict[str, np.ndarray]:
    """Every per-face metric of one method, named as the report names them, each (N,).

    ``cosine`` needs the teacher features of drawn and real faces; the real faces' descriptors and
    landmarks may be passed in so that they are computed once for all methods; ``pool`` spreads the dlib
    descriptors over its processes.
    """
    out = image_metrics(drawn, real, split_row)
    if drawn_features is not None and real_features is not None:
        out["cosine"] = cosine_similarity(drawn_features, real_features)
    if real_descriptors is None:
        real_descriptors = dlib_descriptors(real, batch_size, pool)
    out["identity_distance"] = identity_distance(dlib_descriptors(drawn, batch_size, pool), real_descriptors)
    out["verified"] = verified(out["identity_distance"], verify_threshold)
    if real_landmarks is None:
        real_landmarks = predict_landmarks(real)
    out["landmark_error"] = landmark_error(predict_landmarks(drawn), real_landmarks)
    return out
