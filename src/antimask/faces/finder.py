"""Finding faces in a photo: dlib's detectors in a cascade, 68 landmarks per box, and the checks that say
it was a face. The one finder ``antimask prepare`` and ``antimask predict`` both run; their config sections
(``FaceFinderConfig``) differ only in the values of its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from antimask.faces import dlib_models
from antimask.faces.align import UPPER_POINTS, align_face, estimate_yaw
from antimask.faces.photos import Rejected

Box = tuple[int, int, int, int]  # left, top, right, bottom in the photo's pixels
# A last check on an aligned (S, S, 3) uint8 crop: None when it is a face, else why not (e.g. a network's answer)
Verifier = Callable[[np.ndarray], Optional[str]]

DETECTORS = ("hog", "hog_low", "cnn", "crop")
# How a rejection names what was tried (rejected.csv keeps these words).
_DETECTOR_WORDS = {"hog": "dlib HOG", "hog_low": "HOG at a lower threshold", "cnn": "CNN", "crop": "tight-crop box"}
# dlib's face CNN raises on an image under ~10 px a side, for some sizes after writing outside its buffers (which can
# abort the process later); its smallest face is several times this, so a smaller image holds none it could find.
CNN_MIN_SIDE = 20
# Mean spread (0-255) between a pixel's largest and smallest RGB channel below which the skin band counts as gray:
# there every pixel has Cr = Cb = 128, so the skin colour test cannot judge. Gray photos have 0 (a level or two
# where an encoder adds chroma noise), a toned black-and-white one in the shared data about 4, the palest of ~100
# colour faces there 8.
GRAY_SPREAD = 5.0


@dataclass
class Face:
    box: Box
    detector: str  # one of DETECTORS
    score: float
    landmarks: np.ndarray  # (68, 2) float32 in the photo's pixels
    matrix: Optional[np.ndarray] = None  # 2x3 photo -> aligned face
    aligned: Optional[np.ndarray] = None  # (S, S, 3) uint8
    aligned_landmarks: Optional[np.ndarray] = None  # (68, 2) float32 in the aligned face's pixels
    residual: float = 0.0  # RMS px at 224 of the points used for the fit
    yaw: float = 0.0  # degrees, from the landmarks


class Detection(NamedTuple):
    box: Box
    score: float
    area: float  # of the box in photo pixels, before rounding and clamping: ranks the boxes of one detector


class Found(NamedTuple):
    faces: list[Face]  # verified, largest first
    boxes: int  # boxes the detectors that answered found, verified or not


def _rescaled(image: np.ndarray, min_side: int, max_side: int, pad: float) -> tuple[np.ndarray, float, int]:
    """The photo scaled so its long side is at most max_side and its short side at least min_side
    (max_side wins), padded by a replicated border; returns (image, scale, pad px)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(max(1.0, min_side / min(h, w)), max_side / max(h, w))
    out = image
    if abs(scale - 1.0) > 1e-6:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        # max(1, .): a 1x5000 strip scaled to 1024 would otherwise ask OpenCV for a 0-pixel side
        out = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    p = int(pad * min(out.shape[:2]))
    if p:
        out = cv2.copyMakeBorder(out, p, p, p, p, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(out), scale, p


def _detection(rect, score: float, scale: float, p: int, shape: tuple[int, ...]) -> Detection:
    h, w = shape[:2]
    l, t, r, b = ((v - p) / scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
    box = (int(round(max(l, -w))), int(round(max(t, -h))), int(round(min(r, 2 * w))), int(round(min(b, 2 * h))))
    # from dlib's integer sides, so boxes of equal size tie exactly and keep dlib's order
    area = max(0, rect.right() - rect.left()) * max(0, rect.bottom() - rect.top()) / scale ** 2
    return Detection(box, float(score), area)


def tight_crop_box(image: np.ndarray, max_aspect: float, squares_max_aspect: float = 0.0) -> list[Detection]:
    """The whole photo as the face box, for tight face crops that dlib's detectors miss; then, for photos up
    to ``squares_max_aspect`` (0 = never), its top and middle squares (left and middle for wide photos):
    a tall crop cut at the brow, with the mask and chin below, misleads a fit in the whole photo.

    Only for roughly square photos; the landmark fit decides afterwards which, if any, was a face.
    """
    h, w = image.shape[:2]
    aspect = max(h, w) / max(1, min(h, w))
    boxes = [(0, 0, w, h)] if aspect <= max_aspect else []
    if squares_max_aspect and 1 < aspect <= squares_max_aspect:
        side, extra = min(h, w), abs(h - w)
        for start in (0, extra // 2):
            boxes.append((0, start, w, start + side) if h > w else (start, 0, start + side, h))
    return [Detection(box, 0.0, float((box[2] - box[0]) * (box[3] - box[1]))) for box in boxes]


def run_detector(image: np.ndarray, name: str, opts: Mapping[str, Any]) -> list[Detection]:
    """Raw boxes (photo pixels) of one detector, in dlib's order; nothing verified yet."""
    if name == "hog":
        img, s, p = _rescaled(image, 0, opts["detect_max_side"], opts["pad"])
        rects, scores, _ = dlib_models.hog_detector().run(img, int(opts["upsample"]), 0.0)
        return [_detection(r, c, s, p, image.shape) for r, c in zip(rects, scores)]
    if name == "hog_low":
        # Masks hide the mouth and jaw HOG looks for: a small face scaled up and a lower threshold
        # recover many; the landmark fit rejects what is not a face.
        img, s, p = _rescaled(image, opts["hog_low_min_side"], opts["detect_max_side"], opts["pad"])
        rects, scores, _ = dlib_models.hog_detector().run(img, int(opts["upsample"]), float(opts["hog_low_threshold"]))
        return [_detection(r, c, s, p, image.shape) for r, c in zip(rects, scores)]
    if name == "cnn":
        max_side = opts["cnn_max_side"] if opts["cnn_max_side"] is not None else opts["detect_max_side"]
        upsample = opts["cnn_upsample"] if opts["cnn_upsample"] is not None else opts["upsample"]
        img, s, p = _rescaled(image, 0, max_side, opts["pad"])
        if min(img.shape[:2]) < CNN_MIN_SIDE:  # a tiny photo, or a thin strip scaled down to cnn_max_side
            return []
        return [_detection(d.rect, d.confidence, s, p, image.shape)
                for d in dlib_models.cnn_detector()(img, int(upsample))]
    if name == "crop":
        return tight_crop_box(image, opts["crop_max_aspect"], opts["crop_squares_max_aspect"])
    raise ValueError(f"unknown detector '{name}'; one of {', '.join(DETECTORS)}")


def landmarks_68(image: np.ndarray, box: Box) -> np.ndarray:
    import dlib

    rect = dlib.rectangle(*[int(v) for v in box])
    shape = dlib_models.shape_predictor()(image, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def _skin_band(aligned: np.ndarray, split_row: int, opts: Mapping[str, Any]) -> np.ndarray:
    """The aligned visible band below the brows where skin colour is counted."""
    size = aligned.shape[0]
    return aligned[int(opts["skin_band_top"] * size):split_row,
                   int(opts["skin_band_left"] * size):int(opts["skin_band_right"] * size)]


def skin_chroma(aligned: np.ndarray, split_row: int, opts: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    """(Cr, Cb, skin) of the aligned visible band below the brows: its pixels' chroma and which of them fall in
    the skin colour box (YCrCb)."""
    import cv2

    band = _skin_band(aligned, split_row, opts)
    ycc = cv2.cvtColor(np.ascontiguousarray(band), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1].astype(int), ycc[..., 2].astype(int)
    skin = ((cr >= opts["skin_cr_min"]) & (cr <= opts["skin_cr_max"])
            & (cb >= opts["skin_cb_min"]) & (cb <= opts["skin_cb_max"]))
    return cr, cb, skin


def skin_fraction(aligned: np.ndarray, split_row: int, opts: Mapping[str, Any]) -> float:
    """Share of skin-coloured pixels in the aligned visible band below the brows: what a face crop has and noise,
    walls and flat colour lack."""
    skin = skin_chroma(aligned, split_row, opts)[2]
    return float(skin.mean()) if skin.size else 0.0


def is_gray(aligned: np.ndarray, split_row: int, opts: Mapping[str, Any]) -> bool:
    """Whether the skin band is achromatic (a gray photo): its pixels' channels spread less than GRAY_SPREAD."""
    band = _skin_band(aligned, split_row, opts).astype(np.int16)
    return bool(band.size) and float((band.max(-1) - band.min(-1)).mean()) < GRAY_SPREAD


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(a: Box, b: Box) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _iou(a: Box, b: Box) -> float:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _box_from_landmarks(landmarks: np.ndarray, shape: tuple[int, ...]) -> Box:
    """The square box dlib's detectors would give for these landmarks (their extent, brows to chin),
    kept inside the photo."""
    (l, t), (r, b) = landmarks.min(0), landmarks.max(0)
    side = max(r - l, b - t)
    cx, cy = (l + r) / 2, (t + b) / 2
    h, w = shape[:2]
    return (int(max(0, cx - side / 2)), int(max(0, cy - side / 2)),
            int(min(w, cx + side / 2)), int(min(h, cy + side / 2)))


def verify_face(image: np.ndarray, found: Detection, detector: str, size: int, split_row: int,
                opts: Mapping[str, Any], section: str, tried: str, verifier: Optional[Verifier] = None) -> Face:
    """Landmarks in the box, aligned at ``size``; ``Rejected`` with the reason when it is no usable face.

    ``section`` is the config section the reasons name (``prepare.min_face=48``); ``tried`` the
    detectors that ran before the tight-crop box, for its reason; ``verifier`` a last check of the aligned crop.
    """
    box = found.box
    side = min(box[2] - box[0], box[3] - box[1])
    if side < opts["min_face"]:
        raise Rejected(f"face too small: {side} px box ({section}.min_face={opts['min_face']})")
    landmarks = landmarks_68(image, box)
    if detector == "crop":
        # The whole photo is only a first guess: re-fit in the box the landmarks imply, which pulls
        # the fit onto the face when it fills less of the frame than a tight crop would.
        for _ in range(int(opts["crop_refine"])):
            landmarks = landmarks_68(image, _box_from_landmarks(landmarks, image.shape))
    yaw = estimate_yaw(landmarks)
    if abs(yaw) > opts["max_yaw"]:
        raise Rejected(f"not frontal: yaw {yaw:.0f} deg ({section}.max_yaw={opts['max_yaw']:.0f})")
    points = UPPER_POINTS if opts["align_points"] == "upper" else None
    aligned, aligned_landmarks, matrix, residual = align_face(image, landmarks, size, points)
    if detector == "crop" and opts["crop_cnn_confirm"] and not dlib_models.cnn_detector()(aligned, 0):
        # The shape predictor draws a face shape into anything; the CNN on the aligned crop says if it was one.
        raise Rejected(f"no face found ({tried}; the tight-crop box was not confirmed by the CNN detector)")
    if residual > opts["max_residual"]:
        raise Rejected(f"no face found: landmarks from the {detector} box do not fit a face "
                       f"(residual {residual:.0f} px > {section}.max_residual={opts['max_residual']:.0f})")
    if detector == "crop" and opts["crop_min_skin"] > 0:
        if not is_gray(aligned, split_row, opts):
            skin = skin_fraction(aligned, split_row, opts)
            if skin < opts["crop_min_skin"]:
                raise Rejected(f"no face found: the tight-crop box holds too little skin colour "
                               f"({skin:.2f} < {section}.crop_min_skin={opts['crop_min_skin']})")
        elif verifier is None and not opts["crop_cnn_confirm"]:
            # A gray photo has no skin colour to count, so the CNN or the verifier must judge its crop: the residual
            # alone passes a flat gray wall, as the shape predictor fits a face into anything.
            raise Rejected(f"no face found: the tight-crop box of a gray photo has no skin colour to check, and "
                           f"neither a face verifier (predict.verify_faces) nor {section}.crop_cnn_confirm checks it")
    if verifier is not None:
        why = verifier(aligned)
        if why:
            raise Rejected(f"no face found: the {detector} box is not a face ({why})")
    return Face(tuple(int(v) for v in box), detector, found.score, landmarks, matrix, aligned, aligned_landmarks,
                residual, yaw)


def _replace_parts(image: np.ndarray, faces: list[Face], size: int, split_row: int, opts: Mapping[str, Any],
                   section: str, tried: str, verifier: Optional[Verifier]) -> list[Face]:
    """The faces, with any that is a part of the tight-crop box's face (its landmarks' box mostly inside that
    face's and under half its side) replaced by that face, once; not added when a kept face is that face."""
    whole = None
    for det in run_detector(image, "crop", opts):
        try:
            whole = verify_face(image, det, "crop", size, split_row, opts, section, tried, verifier)
            break
        except Rejected:
            continue
    if whole is None:
        return faces
    outer = _box_from_landmarks(whole.landmarks, image.shape)
    kept = []
    for face in faces:
        inner = _box_from_landmarks(face.landmarks, image.shape)
        if _intersection(inner, outer) > 0.6 * _area(inner) and (inner[2] - inner[0]) < 0.5 * (outer[2] - outer[0]):
            continue
        kept.append(face)
    if len(kept) == len(faces) or any(_iou(_box_from_landmarks(f.landmarks, image.shape), outer) > opts["merge_iou"]
                                      for f in kept):
        return kept
    return [*kept, whole]


def find_faces(image: np.ndarray, opts: Mapping[str, Any], size: int, split_row: int, *,
               detectors: Optional[Sequence[str]] = None, keep: str = "all", section: str = "predict",
               verifier: Optional[Verifier] = None) -> Found:
    """The faces in an RGB photo, each landmarked and aligned at ``size``; ``Rejected`` when there is none.

    The detectors (``opts["detectors"]`` unless given) run in order; the two HOG passes run together and
    their boxes are merged. ``keep="all"``: every box is verified, and a detector runs only when those
    before it gave no verified face. ``keep="largest"`` or ``"first"`` (the top-left one): the first
    detector that finds any box decides, and its chosen box is the face or the photo is rejected with
    the reason (what ``prepare`` stores in ``rejected.csv``). ``verifier`` checks every aligned crop last.
    """
    order = list(detectors if detectors is not None else opts["detectors"])
    cheap = [d for d in order if d in ("hog", "hog_low")]
    groups = [cheap] + [[d] for d in order if d not in cheap]
    tried = ", ".join(_DETECTOR_WORDS[d] for d in order)
    before_crop = ", ".join(_DETECTOR_WORDS[d] for d in order if d != "crop")
    if keep != "all":
        for group in groups:
            boxes = [(name, det) for name in group for det in run_detector(image, name, opts)]
            if boxes:
                break
        else:
            raise Rejected(f"no face found ({tried})")
        if keep == "largest":
            name, det = max(boxes, key=lambda nd: nd[1].area)
        else:
            name, det = min(boxes, key=lambda nd: (nd[1].box[0], nd[1].box[1]))
        return Found([verify_face(image, det, name, size, split_row, opts, section, before_crop, verifier)],
                     len(boxes))

    faces: list[Face] = []
    boxes = 0
    for group in groups:
        if faces:
            break
        for name in group:
            for det in run_detector(image, name, opts):
                boxes += 1
                if any(_iou(det.box, f.box) > opts["merge_iou"] for f in faces):
                    continue
                try:
                    faces.append(verify_face(image, det, name, size, split_row, opts, section, before_crop,
                                             verifier))
                except Rejected:
                    continue
                if name == "crop":  # its boxes are guesses at one face: the first that fits is it
                    break
    if faces and opts["crop_replaces_parts"] and "crop" in order and all(f.detector != "crop" for f in faces):
        faces = _replace_parts(image, faces, size, split_row, opts, section, before_crop, verifier)
    if not faces:
        raise Rejected(f"no face found ({tried})")
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return Found(faces[: opts["max_faces"]] if opts["max_faces"] else faces, boxes)
