"""Face alignment: a similarity transform maps dlib's 68 landmarks onto one canonical template.

Pure functions (arrays in, arrays out). The template is the Procrustes mean of 117 adult, frontal
UTKFace shapes, scaled so that at 224 px the eye centres sit on row 72 (well inside the visible
upper band, rows 0-95), the nose bridge (point 29) near row 98 and the chin on row 206.
"""

from __future__ import annotations

import numpy as np

TEMPLATE_SIZE = 224
# (x, y) of dlib's 68 points at 224x224.
TEMPLATE_224 = np.array([[28.65, 72.68], [29.52, 94.74], [32.13, 116.44], [35.76, 137.89], [43.1, 158.17], [55.56, 175.98], [71.47, 190.81], [90.03, 202.56], [111.4, 206.0], [132.85, 202.46], [151.5, 190.85], [167.69, 176.23], [180.33, 158.65], [187.79, 138.38], [191.58, 116.87], [194.16, 95.13], [195.35, 73.04], [41.77, 57.62], [52.37, 47.63], [67.62, 44.68], [83.15, 46.9], [97.71, 52.73], [125.28, 52.5], [140.05, 46.6], [155.65, 44.49], [170.99, 47.56], [181.57, 57.59], [111.68, 69.48], [111.63, 84.0], [111.59, 98.47], [111.54, 113.36], [94.15, 122.58], [102.57, 125.39], [111.48, 128.05], [120.5, 125.35], [128.88, 122.66], [58.9, 72.05], [68.34, 66.76], [79.6, 67.02], [89.47, 74.34], [78.85, 75.98], [67.72, 75.84], [133.83, 74.35], [143.85, 66.98], [155.0, 66.75], [164.29, 72.1], [155.76, 75.79], [144.66, 76.03], [76.65, 147.8], [89.4, 142.85], [102.27, 140.53], [111.5, 142.65], [121.03, 140.59], [133.83, 142.95], [146.42, 147.82], [134.24, 160.45], [121.6, 166.15], [111.34, 167.16], [101.27, 166.11], [88.79, 160.47], [81.78, 148.57], [102.04, 147.95], [111.44, 148.98], [121.11, 147.91], [141.32, 148.57], [121.22, 154.63], [111.38, 155.8], [101.75, 154.64]], dtype=np.float32)

JAW = list(range(0, 17))
BROWS = list(range(17, 27))
NOSE_BRIDGE = list(range(27, 31))
EYES = list(range(36, 48))
# Points that stay visible above a mask; predict aligns masked faces on these alone.
UPPER_POINTS = BROWS + NOSE_BRIDGE + EYES
# The lower-face subset the mask decoder predicts: every point whose template row lies at or below
# the paper's split row 96 (jaw 2-14, nose 29-35, mouth 48-67): 40 points, the ones a mask hides.
LOWER_POINTS = [int(i) for i in np.flatnonzero(TEMPLATE_224[:, 1] >= 96)]
# dlib's left/right pairs, for horizontal flips.
FLIP_PERMUTATION = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)


def template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The canonical 68-point template at size pixels (float32, (68, 2))."""
    return TEMPLATE_224 * (size / TEMPLATE_SIZE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst (Umeyama).

    Returns a 2x3 matrix M with dst ~= src @ M[:, :2].T + M[:, 2].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c ** 2).sum() / len(src)
    scale = (sig * d).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    a = np.vstack([matrix, [0, 0, 1]])
    return np.linalg.inv(a)[:2]


def alignment_matrix(landmarks: np.ndarray, size: int = TEMPLATE_SIZE, points: list[int] | None = None) -> np.ndarray:
    """The 2x3 matrix that aligns a face's 68 landmarks to the template at size."""
    idx = list(range(68)) if points is None else list(points)
    return similarity_transform(np.asarray(landmarks)[idx], template(size)[idx])


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp an RGB uint8 image with a 2x3 matrix to a size x size aligned face."""
    import cv2

    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA if matrix[0, 0] < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = TEMPLATE_SIZE,
               points: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Align one face: returns (aligned image, aligned landmarks, 2x3 matrix, residual in px at 224).

    The residual is the RMS distance between the aligned landmarks (those used for the fit) and the
    template, measured at 224 px so that it is comparable across sizes.
    """
    matrix = alignment_matrix(landmarks, size, points)
    aligned = warp_face(image, matrix, size)
    pts = apply_transform(landmarks, matrix)
    idx = list(range(68)) if points is None else list(points)
    residual = float(np.sqrt(((pts[idx] - template(size)[idx]) ** 2).sum(1).mean()) * TEMPLATE_SIZE / size)
    return aligned, pts, matrix, residual


# A generic 3D face (millimetre-like units) for head-pose estimation from six landmarks:
# nose tip 30, chin 8, outer eye corners 36/45, mouth corners 48/54.
_POSE_POINTS = [30, 8, 36, 45, 48, 54]
_POSE_MODEL = np.array([(0.0, 0.0, 0.0), (0.0, -330.0, -65.0), (-225.0, 170.0, -135.0), (225.0, 170.0, -135.0),
                        (-150.0, -150.0, -125.0), (150.0, -150.0, -125.0)])


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Yaw in degrees (0 = frontal; the sign says which way), by fitting a generic 3D face to six landmarks.

    ``cv2.solvePnP`` with a pinhole camera whose focal length is a few face widths: the standard
    head-pose estimate from 2D landmarks, good to a few degrees on frontal-ish faces.
    """
    import cv2

    pts = np.asarray(landmarks, np.float64)
    image_points = pts[_POSE_POINTS]
    width = max(np.ptp(pts[:, 0]), 1.0)
    focal = 3.0 * width
    center = pts.mean(0)
    camera = np.array([[focal, 0, center[0]], [0, focal, center[1]], [0, 0, 1]])
    ok, rvec, _ = cv2.solvePnP(_POSE_MODEL, image_points, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return 90.0
    rot, _ = cv2.Rodrigues(rvec)
    # Rotation about the vertical axis, in the face's frame (y up in the model, down in the image).
    yaw = np.degrees(np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0)))
    return float(yaw)


# --- Crops that pretrained face networks expect, from our landmarks or from our template ---
# ArcFace's five-point template at 112x112 (insightface): eye centres, nose tip, mouth corners, as
# (x, y) in the image (the first eye is the one on the image's left). MobileFaceNet was trained on it.
ARCFACE_SIZE = 112
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float32)
# The face box FaceRes (@vladmandic/human) sees: its detector's box enlarged 1.4x and squared. Our
# stand-in for that box is the box of the 68 landmarks, enlarged by the same factor.
FACE_BOX_SCALE = 1.4


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace's five points from dlib's 68: eye centres (36-41, 42-47), nose tip 30, mouth corners 48, 54."""
    pts = np.asarray(landmarks, np.float64)
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]]).astype(np.float32)


def arcface_matrix(landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The 2x3 similarity that maps a face (its 68 landmarks) onto ArcFace's five-point crop at size."""
    return similarity_transform(five_points(landmarks), ARCFACE_112 * (size / ARCFACE_SIZE))


def face_box_matrix(landmarks: np.ndarray, size: int, scale: float = FACE_BOX_SCALE) -> np.ndarray:
    """The 2x3 matrix that maps the landmarks' box, enlarged ``scale`` times and squared, onto size x size."""
    pts = np.asarray(landmarks, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    center, side = (lo + hi) / 2, scale * float((hi - lo).max())
    k = size / side
    # pixel centres: the box's edges land on the crop's outer edges (-0.5 and size - 0.5)
    return np.array([[k, 0.0, -(center[0] - side / 2) * k - 0.5], [0.0, k, -(center[1] - side / 2) * k - 0.5]])


def network_crop_matrix(landmarks: np.ndarray, crop: str, size: int) -> np.ndarray:
    """The 2x3 matrix from a photo (its 68 landmarks) to a network's crop: ``"arcface"`` or ``"face_box"``.

    The face box is taken after aligning onto our template, so a turned head gives the same crop as
    an upright one (as on our aligned faces).
    """
    if crop == "arcface":
        return arcface_matrix(landmarks, size)
    if crop == "face_box":
        to_template = alignment_matrix(landmarks, TEMPLATE_SIZE)
        box = face_box_matrix(template(TEMPLATE_SIZE), size)
        return np.vstack([box, [0, 0, 1]])[:2] @ np.vstack([to_template, [0, 0, 1]])
    raise ValueError(f"unknown network crop {crop!r}; known: arcface, face_box")


def template_crop_matrix(crop: str, face_size: int, size: int) -> np.ndarray:
    """The same crop for a face already aligned on our template at face_size: a constant per size."""
    return network_crop_matrix(template(face_size), crop, size) if crop == "arcface" else \
        face_box_matrix(template(face_size), size)


def network_crop(image: np.ndarray, landmarks: np.ndarray, crop: str, size: int) -> np.ndarray:
    """A photo's face cut as a network expects it (uint8 RGB in, uint8 (size, size, 3) out)."""
    return warp_face(image, network_crop_matrix(landmarks, crop, size), size)


def warp_faces(x, matrix: np.ndarray, size: int):
    """Differentiable ``warp_face`` for a batch: float (B, C, H, W) -> (B, C, size, size) under one 2x3 matrix.

    Downscaling first goes through an antialiased resize, since bilinear sampling alone would alias
    (our 224 face is about 2.3 times the ArcFace crop); borders are replicated, as in ``warp_face``.
    """
    import torch
    import torch.nn.functional as F

    m = np.vstack([np.asarray(matrix, np.float64), [0, 0, 1]])
    h, w = x.shape[-2:]
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if scale < 0.9:
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        sy, sx = nh / h, nw / w
        # resized pixel x' = (x + 0.5) * s - 0.5; the crop matrix now starts from the resized image
        resize = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        m = m @ np.linalg.inv(resize)
        h, w = nh, nw
    inv = np.linalg.inv(m)  # crop pixel -> input pixel
    # normalised coordinates (align_corners=False): u = (2 px + 1) / n - 1
    to_norm_in = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    from_norm_out = np.linalg.inv(np.array([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1], [0, 0, 1]]))
    theta = torch.as_tensor((to_norm_in @ inv @ from_norm_out)[:2], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
