"""`antimask predict`: photos in, photos out with every face's lower half drawn by a trained run's model.

Each face is found (dlib HOG, a second HOG pass on a rescaled photo with a lower threshold, dlib's CNN on
a downscaled photo, then the whole photo as a tight crop), aligned on the landmarks a mask leaves
visible, completed in batches by ``AntiMask`` and warped back into the photo under a feathered alpha
mask that is zero above the split row, so the visible upper face keeps its original pixels.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig

from antimask.faces import detect
from antimask.faces.align import UPPER_POINTS, align_face, invert_transform
from antimask.training import run_config

PNG_KEY = "antimask"
PNG_NOTICE = ("The lower face in this image was synthesized by antimask (a trained model's guess from the "
              "upper face); it is not a photograph of the person.")
DETECTORS = ("hog", "hog_low", "cnn", "crop")


@dataclass
class FoundFace:
    box: tuple[int, int, int, int]  # left, top, right, bottom in the photo's pixels
    detector: str  # one of DETECTORS
    score: float
    landmarks: np.ndarray  # (68, 2) in the photo's pixels
    matrix: np.ndarray = field(default=None)  # 2x3 photo -> aligned face
    aligned: np.ndarray = field(default=None)  # (S, S, 3) uint8
    residual: float = 0.0  # RMS px at 224 of the points used for the fit


# ----------------------------------------------------------------------------------------------- run

def load_model(run_dir: str | Path, cfg: DictConfig):
    """AntiMask from the run's finished encoder and mask decoder stages (ManifestError names a missing one)."""
    from antimask.models.antimask import AntiMask
    from antimask.training import stage_checkpoint

    encoder = stage_checkpoint(run_dir, "encoder")
    decoder = stage_checkpoint(run_dir, "mask_decoder")
    return AntiMask.from_checkpoints(encoder, decoder, seam_width=int(cfg.model.seam_width),
                                    seam_colour_rows=int(cfg.model.seam_colour_rows))


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"predict.device={name} but no CUDA device is available")
    return name


# ------------------------------------------------------------------------------------------ detection

def _rescaled(image: np.ndarray, min_side: int, max_side: int, pad: float) -> tuple[np.ndarray, float, int]:
    """The photo scaled so its long side is at most max_side and its short side at least min_side
    (max_side wins), padded by a replicated border; returns (image, scale, pad px)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(max(1.0, min_side / min(h, w)), max_side / max(h, w))
    out = image
    if abs(scale - 1.0) > 1e-6:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    p = int(pad * min(out.shape[:2]))
    if p:
        out = cv2.copyMakeBorder(out, p, p, p, p, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(out), scale, p


def _to_photo(rect, scale: float, p: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    l, t, r, b = ((v - p) / scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
    return (int(round(max(l, -w))), int(round(max(t, -h))), int(round(min(r, 2 * w))), int(round(min(b, 2 * h))))


def run_detector(image: np.ndarray, name: str, opts: DictConfig) -> list[tuple[tuple[int, int, int, int], float]]:
    """Raw boxes (photo pixels) and scores of one detection approach; no verification."""
    from antimask.faces import dlib_models

    if name == "hog":
        img, s, p = _rescaled(image, 0, opts.detect_max_side, opts.pad)
        rects, scores, _ = dlib_models.hog_detector().run(img, int(opts.upsample), 0.0)
        return [(_to_photo(r, s, p, image.shape), float(c)) for r, c in zip(rects, scores)]
    if name == "hog_low":
        # Masks hide the mouth and jaw HOG looks for: a small face scaled up and a lower threshold
        # recover many; the landmark fit below rejects what is not a face.
        img, s, p = _rescaled(image, opts.hog_low_min_side, opts.detect_max_side, opts.pad)
        rects, scores, _ = dlib_models.hog_detector().run(img, int(opts.upsample), float(opts.hog_low_threshold))
        return [(_to_photo(r, s, p, image.shape), float(c)) for r, c in zip(rects, scores)]
    if name == "cnn":
        img, s, p = _rescaled(image, 0, opts.cnn_max_side, opts.pad)
        dets = dlib_models.cnn_detector()(img, 0)
        return [(_to_photo(d.rect, s, p, image.shape), float(d.confidence)) for d in dets]
    if name == "crop":
        return [(box, score) for box, _, score in detect.tight_crop_box(image, opts.crop_max_aspect)]
    raise ValueError(f"unknown detector '{name}'; one of {', '.join(DETECTORS)}")


def skin_fraction(aligned: np.ndarray, split_row: int) -> float:
    """Share of skin-coloured pixels (YCrCb box) in the aligned visible band below the brows: what a face
    crop has and noise, walls and flat colour lack."""
    import cv2

    size = aligned.shape[0]
    band = aligned[int(0.3 * size):split_row, int(0.15 * size):int(0.85 * size)]
    ycc = cv2.cvtColor(np.ascontiguousarray(band), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1].astype(int), ycc[..., 2].astype(int)
    skin = (cr >= 133) & (cr <= 180) & (cb >= 70) & (cb <= 135)
    return float(skin.mean()) if skin.size else 0.0


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _box_from_landmarks(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The square box dlib's detectors would give for these landmarks (their extent, brows to chin),
    kept inside the photo."""
    (l, t), (r, b) = landmarks.min(0), landmarks.max(0)
    side = max(r - l, b - t)
    cx, cy = (l + r) / 2, (t + b) / 2
    h, w = shape[:2]
    return (int(max(0, cx - side / 2)), int(max(0, cy - side / 2)), int(min(w, cx + side / 2)), int(min(h, cy + side / 2)))


def verify_face(image: np.ndarray, box, detector: str, score: float, size: int, split_row: int,
                opts: DictConfig) -> Optional[FoundFace]:
    """Landmarks in the box, aligned on the points a mask leaves visible; None when it is no usable face."""
    if min(box[2] - box[0], box[3] - box[1]) < opts.min_face:
        return None
    landmarks = detect.landmarks_68(image, box)
    if detector == "crop":
        # The whole photo is only a first guess: re-fit in the box the landmarks imply, which pulls
        # the fit onto the face when it fills less of the frame than a tight crop would.
        for _ in range(int(opts.crop_refine)):
            landmarks = detect.landmarks_68(image, _box_from_landmarks(landmarks, image.shape))
    points = UPPER_POINTS if opts.align_points == "upper" else None
    aligned, _, matrix, residual = align_face(image, landmarks, size, points)
    if residual > opts.max_residual:
        return None
    if detector == "crop" and skin_fraction(aligned, split_row) < opts.crop_min_skin:
        return None
    return FoundFace(tuple(int(v) for v in box), detector, score, landmarks, matrix, aligned, residual)


def find_faces(image: np.ndarray, size: int, split_row: int, opts: DictConfig,
               detectors: Optional[list[str]] = None) -> list[FoundFace]:
    """Every verified face, largest first. Both HOG passes run and are merged; the CNN runs only when
    they found nothing, the tight-crop box only when everything else did."""
    order = list(detectors if detectors is not None else opts.detectors)
    cheap = [d for d in order if d in ("hog", "hog_low")]
    rest = [d for d in order if d not in cheap]
    faces: list[FoundFace] = []
    for group in [cheap] + [[d] for d in rest]:
        if faces:
            break
        for name in group:
            for box, score in run_detector(image, name, opts):
                if any(_iou(box, f.box) > opts.merge_iou for f in faces):
                    continue
                face = verify_face(image, box, name, score, size, split_row, opts)
                if face is not None:
                    faces.append(face)
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return faces[: opts.max_faces] if opts.max_faces else faces


# ------------------------------------------------------------------------------------------ paste-back

def paste_alpha(size: int, split_row: int, seam_width: int, feather: int) -> np.ndarray:
    """(S, S) float32 weight of the drawn face in the aligned frame: 0 above the seam (rows the model
    keeps real), ramping to 1 below it, and ramping to 0 over ``feather`` px at the left, right and
    bottom edges so the warped square melts into the photo."""
    from antimask.models.antimask import seam_weights

    rows = seam_weights(size, split_row, seam_width).numpy()
    idx = np.arange(size, dtype=np.float32) + 0.5
    edge = np.clip(np.minimum(idx, size - idx) / max(feather, 1), 0, 1) if feather > 0 else np.ones(size, np.float32)
    bottom = np.clip((size - idx) / max(feather, 1), 0, 1) if feather > 0 else np.ones(size, np.float32)
    return (rows * bottom)[:, None] * edge[None, :]


def paste_back(photo: np.ndarray, completed: np.ndarray, matrix: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Warp an aligned completed face (S,S,3 uint8) back with the inverse similarity and blend it in
    under the warped alpha (feathered alpha blending, not seamlessClone: the upper face stays exact)."""
    import cv2

    h, w = photo.shape[:2]
    inv = invert_transform(matrix)
    drawn = cv2.warpAffine(completed.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = cv2.warpAffine(alpha.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    out = photo.astype(np.float32) * (1 - a) + drawn * a
    blended = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return np.where(a > 0, blended, photo)


def complete_faces(model, faces: list[np.ndarray], device: str, batch_size: int) -> list[np.ndarray]:
    """Aligned uint8 faces (S,S,3) -> completed uint8 faces, in batches of batch_size."""
    import torch

    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(faces), batch_size):
            batch = np.stack(faces[i:i + batch_size])
            x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255)
            y = model(x).clamp_(0, 1).mul_(255).add_(0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            out.extend(list(y))
    return out


# ------------------------------------------------------------------------------------------------ io

def save_png(path: Path, image: np.ndarray) -> Path:
    """An RGB PNG carrying the notice that its lower face is synthesized (written atomically)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from antimask.files import atomic_path

    info = PngInfo()
    info.add_text(PNG_KEY, PNG_NOTICE)
    info.add_text("Comment", PNG_NOTICE)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
    return path


def _expand(images: list[str | Path]) -> list[Path]:
    found: list[Path] = []
    for item in images:
        p = Path(item)
        found.extend(detect.find_images([p]) if p.is_dir() else [p])
    return found


def _stem(path: Path, used: set[str]) -> str:
    stem, k = path.stem, 1
    while stem in used:
        stem, k = f"{path.stem}_{k}", k + 1
    used.add(stem)
    return stem


# ----------------------------------------------------------------------------------------------- main

def predict(run_dir: str | Path, images: list[str | Path], out_dir: str | Path,
            cfg_overrides: Optional[list[str]] = None, aligned: bool = False,
            log=None) -> dict[str, dict[str, Any]]:
    """Complete every face in every photo; returns {photo path: result}.

    A result has ``status`` ("ok" or "failed"), ``reason`` (why it failed), ``faces`` (box, detector,
    score, residual of each) and ``outputs`` (the files written). A photo that cannot be read or holds
    no face is reported and skipped; the others go on.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg = run_config(run_dir, cfg_overrides)
    opts = cfg.predict
    model = load_model(run_dir, cfg)
    device = resolve_device(str(opts.device))
    model.to(device)
    size, split_row = model.image_size, model.split_row
    alpha = paste_alpha(size, split_row, model.seam_width, int(round(opts.feather * size)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    pending: list[tuple[Path, str, np.ndarray, list[FoundFace]]] = []

    def flush() -> None:
        crops = [f.aligned for _, _, _, faces in pending for f in faces]
        completed = iter(complete_faces(model, crops, device, int(opts.batch_size)))
        for path, stem, photo, faces in pending:
            done = [next(completed) for _ in faces]
            try:
                results[str(path)]["outputs"] = _write(out, stem, photo, faces, done, alpha, aligned)
            except OSError as err:
                results[str(path)].update(status="failed", reason=f"cannot write outputs: {err}")
                log(f"antimask predict: {path}: cannot write outputs: {err}")
        pending.clear()

    for path in _expand(images):
        key = str(path)
        try:
            photo = detect.load_rgb(path, int(cfg.prepare.max_pixels))
        except detect.Rejected as err:
            results[key] = {"status": "failed", "reason": str(err), "faces": [], "outputs": []}
            log(f"antimask predict: {path}: skipped, {err}")
            continue
        faces = find_faces(photo, size, split_row, opts)
        if not faces:
            results[key] = {"status": "failed", "reason": "no face found", "faces": [], "outputs": []}
            log(f"antimask predict: {path}: skipped, no face found")
            continue
        results[key] = {"status": "ok", "reason": None, "outputs": [],
                        "faces": [{"box": list(f.box), "detector": f.detector, "score": round(f.score, 4),
                                   "residual": round(f.residual, 3), "matrix": f.matrix.tolist()} for f in faces]}
        pending.append((path, _stem(path, used), photo, faces))
        if sum(len(p[3]) for p in pending) >= opts.batch_size:
            flush()
    if pending:
        flush()
    return results


def _write(out: Path, stem: str, photo: np.ndarray, faces: list[FoundFace], completed: list[np.ndarray],
           alpha: np.ndarray, aligned: bool) -> list[str]:
    result = photo
    written: list[Path] = []
    for i, (face, done) in enumerate(zip(faces, completed)):
        result = paste_back(result, done, face.matrix, alpha)
        if aligned:
            written.append(save_png(out / f"{stem}_face{i}_aligned.png", face.aligned))
            written.append(save_png(out / f"{stem}_face{i}_completed.png", done))
    written.append(save_png(out / f"{stem}_unmasked.png", result))
    written.append(save_png(out / f"{stem}_compare.png", np.hstack([photo, result])))
    return [str(p) for p in written]


def failed(results: dict[str, dict[str, Any]]) -> list[str]:
    return [k for k, r in results.items() if r["status"] != "ok"]


def cmd_predict(args) -> int:
    """CLI: ``antimask predict RUN_DIR IMAGE [IMAGE ...] --out DIR [--aligned] [key=value ...]``;
    1 when any photo failed."""
    results = predict(args.run_dir, args.images, args.out, list(getattr(args, "overrides", []) or []),
                      aligned=bool(getattr(args, "aligned", False)))
    bad = failed(results)
    ok = len(results) - len(bad)
    print(f"antimask predict: {ok} of {len(results)} photos completed, written to {args.out}"
          + (f"; {len(bad)} failed" if bad else ""), file=sys.stderr)
    return 1 if bad else 0
