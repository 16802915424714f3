"""`antimask predict`: photos in, photos out with every face's lower half drawn by a trained run's model.

Each face is found and aligned by the face finder ``prepare`` runs too (``antimask.faces.finder``, with the
``predict`` section's keys: masked faces, aligned on the landmarks a mask leaves visible), completed in
batches and warped back into the photo under a feathered alpha, so what the model keeps stays the photo's pixels.

Two modes (``predict.mode``): ``rows``, the paper's, redraws the lower band below the split row (``AntiMask``);
``mask`` has the mask segmenter find each face's mask and a mask-aware run (``model.mask_aware``) redraw only that
region grown and feathered (``MaskAwareAntiMask``), so cheeks, jaw and neck beside the mask stay real. ``auto``
takes ``mask`` when the run is mask-aware and has a segmenter (or ``predict.segmenter`` names a run that has one).
Whenever a segmenter with a face head is at hand (``predict.verify_faces``), every aligned crop must also pass it,
so a detector's box on an eye close-up or a patterned shirt is not "completed".
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from omegaconf import DictConfig

from antimask.errors import AntimaskError
from antimask.faces import finder
from antimask.faces.align import invert_transform
from antimask.faces.compositing import edge_alpha, paste_alpha, paste_back, tint_region
from antimask.faces.finder import Face
from antimask.faces.images import to_float, to_uint8
from antimask.faces.masks import redraw_region
from antimask.faces.photos import Rejected, find_images, load_rgb
from antimask.files import atomic_save_png
from antimask.models.antimask import AntiMask, MaskAwareAntiMask
from antimask.models.segmenter import face_probabilities, load_segmenter, predict_regions
from antimask.parallel import in_order
from antimask.runs import ManifestError, run_config, stage_checkpoint

POOL_MIN_PHOTOS = 16  # fewer photos are found faster here than by processes that must load torch and dlib first
PNG_KEY = "antimask"
PNG_NOTICE = ("The lower face in this image was synthesized by antimask (a trained model's guess from the "
              "upper face); it is not a photograph of the person.")


class PredictError(AntimaskError, ValueError):
    """A predict mode the run cannot serve; the message says what to train or set."""


# ----------------------------------------------------------------------------------------------- run

def load_model(run_dir: str | Path, cfg: DictConfig, mode: str = "rows"):
    """The run's finished encoder and mask decoder (ManifestError names a missing one): ``AntiMask`` for the
    rows mode, ``MaskAwareAntiMask`` for the mask mode."""
    encoder = stage_checkpoint(run_dir, "encoder")
    decoder = stage_checkpoint(run_dir, "mask_decoder")
    if mode == "mask":
        return MaskAwareAntiMask.from_checkpoints(encoder, decoder)
    return AntiMask.from_checkpoints(encoder, decoder, seam_width=int(cfg.model.seam_width),
                                    seam_colour_rows=int(cfg.model.seam_colour_rows))


def find_segmenter(run_dir: str | Path, cfg: DictConfig) -> tuple[Optional[Path], Optional[ManifestError]]:
    """(the checkpoint of ``predict.segmenter``'s or else the run's own segmenter, None and why when it has none)."""
    source = Path(cfg.predict.segmenter) if cfg.predict.segmenter else Path(run_dir)
    try:
        return stage_checkpoint(source, "segmenter"), None
    except ManifestError as err:
        return None, err


def choose_mode(run_dir: str | Path, cfg: DictConfig) -> tuple[str, Optional[Path]]:
    """(``rows`` or ``mask``, the segmenter checkpoint of the mask mode) for ``predict.mode``."""
    wanted = str(cfg.predict.mode)
    if wanted == "rows":
        return "rows", None
    segmenter, missing = find_segmenter(run_dir, cfg)
    aware = bool(cfg.model.mask_aware)
    if wanted == "auto":
        return ("mask", segmenter) if aware and segmenter is not None else ("rows", None)
    if not aware:
        raise PredictError(f"predict.mode=mask needs a mask-aware run (model.mask_aware=true), and {run_dir} was "
                           "trained for the paper's fixed rows; use predict.mode=rows or a mask-aware run")
    if segmenter is None:
        raise PredictError(f"predict.mode=mask needs a trained mask segmenter: {missing}; or name a run that has one "
                           "with predict.segmenter=RUN_DIR")
    return "mask", segmenter


def face_verifier(segmenter, threshold: float):
    """The finder's last check of an aligned crop: the segmenter's face head must give it >= ``threshold``."""
    def verify(aligned: np.ndarray) -> Optional[str]:
        p = float(face_probabilities(segmenter, aligned[None])[0])
        return None if p >= threshold else f"face probability {p:.2f} < masks.face_threshold={threshold}"

    return verify


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"predict.device={name} but no CUDA device is available")
    return name


# ------------------------------------------------------------------------------------------ completion

def complete_faces(model, faces: list[np.ndarray], device: str, batch_size: int) -> list[np.ndarray]:
    """Aligned uint8 faces (S,S,3) -> completed uint8 faces, in batches of batch_size."""
    import torch

    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(faces), batch_size):
            out.extend(to_uint8(model(to_float(np.stack(faces[i:i + batch_size]), device))))
    return out


def complete_masked_faces(model: MaskAwareAntiMask, segmenter, faces: list[np.ndarray], device: str, batch_size: int,
                          dilate_px: int, feather_px: int) -> tuple[list, list, list]:
    """Aligned uint8 faces -> (completed faces, mask regions found (bool (S, S)), redraw alphas (float (S, S)))."""
    import torch

    if not faces:
        return [], [], []
    regions = predict_regions(segmenter, np.stack(faces), batch_size)
    alphas = np.stack([redraw_region(r, dilate_px, feather_px) for r in regions])
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(faces), batch_size):
            x = to_float(np.stack(faces[i:i + batch_size]), device)
            a = torch.from_numpy(alphas[i:i + batch_size, None]).to(device)
            out.extend(to_uint8(model(x, a)))
    return out, list(regions), list(alphas)


# ------------------------------------------------------------------------------------------------ io

def save_png(path: Path, image: np.ndarray) -> Path:
    """An RGB PNG carrying the notice that its lower face is synthesized (written atomically)."""
    return atomic_save_png(path, image, {PNG_KEY: PNG_NOTICE, "Comment": PNG_NOTICE})


def save_mask(path: Path, region: np.ndarray) -> Path:
    """A bool mask as a black/white PNG (written atomically)."""
    return atomic_save_png(path, np.asarray(region, bool).astype(np.uint8) * 255)


def region_in_photo(region: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An aligned-frame bool region warped back into the photo's frame, bool (H, W)."""
    import cv2

    h, w = shape[:2]
    back = cv2.warpAffine(region.astype(np.float32), invert_transform(matrix), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return back > 0.5


# ------------------------------------------------------------------------------------------ face finding

_FINDER: dict = {}  # a finding process's settings, made once by _init_finder


def _init_finder(settings: dict, segmenter_ckpt: Optional[Path], threshold: float) -> None:
    """A finding process: one torch thread, and the face head rebuilt from its checkpoint on the CPU."""
    import torch

    torch.set_num_threads(1)
    verifier = None if segmenter_ckpt is None else face_verifier(load_segmenter(segmenter_ckpt, settings["size"]),
                                                                 threshold)
    _FINDER.update(settings, verifier=verifier)


def _find_in_worker(path: Path):
    return _find(path, _FINDER)


def _find(path: Path, settings: dict) -> tuple[Optional[np.ndarray], Optional[list[Face]], Optional[str]]:
    """(photo, faces, None) of one photo, or (photo or None, None, why it was skipped)."""
    try:
        photo = load_rgb(path, settings["max_pixels"], int(settings["opts"]["min_face"]))
    except Rejected as err:
        return None, None, str(err)
    try:
        faces = finder.find_faces(photo, settings["opts"], settings["size"], settings["split_row"],
                                  verifier=settings["verifier"]).faces
    except Rejected:  # predict tries every detector: why each box failed matters less than that none was a face
        return photo, None, "no face found"
    except Exception as err:  # noqa: BLE001 - one photo dlib or OpenCV cannot take must not stop the others
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return photo, None, f"face finding failed: {type(err).__name__}: {lines[-1] if lines else ''}"
    return photo, faces, None


def found_faces(paths: list[Path], opts, max_pixels: int, size: int, split_row: int, verifier,
                segmenter_ckpt: Optional[Path], threshold: float, log=None) -> Iterator[tuple[Path, Any]]:
    """(path, ``_find``'s result) of every photo, in order: with ``predict.workers`` processes finding the faces
    of the next photos while the caller completes these (at most two photos each ahead), or in this process for
    fewer than ``POOL_MIN_PHOTOS`` photos, one worker, or processes that stopped."""
    settings = {"opts": opts, "max_pixels": max_pixels, "size": size, "split_row": split_row, "verifier": verifier}
    workers = int(opts.workers) or os.cpu_count() or 1
    done = 0
    if workers > 1 and len(paths) >= POOL_MIN_PHOTOS:
        if log is not None:
            log(f"antimask predict: {workers} processes find the faces of the {len(paths)} photos")
        worker_settings = {k: v for k, v in settings.items() if k != "verifier"}
        try:
            # spawn, not fork: this process holds torch's threads and maybe a GPU context
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_finder,
                                     initargs=(worker_settings, segmenter_ckpt if verifier is not None else None,
                                               threshold)) as pool:
                for path, result in in_order(lambda p: pool.submit(_find_in_worker, p), paths, 2 * workers):
                    yield path, result
                    done += 1
            return
        except BrokenProcessPool as err:  # a process died (killed, out of memory, a script read from stdin)
            if log is not None:
                log(f"antimask predict: the face-finding processes stopped ({err}); the other "
                    f"{len(paths) - done} photos are found in this process")
    for path in paths[done:]:
        yield path, _find(path, settings)


def _expand(images: list[str | Path]) -> list[Path]:
    """The photos of files and folders in order, each once: results are keyed by path, so a photo named twice
    (or inside a folder given too) would have one result replaced and its outputs reported nowhere."""
    found: dict[str, Path] = {}
    for item in images:
        p = Path(item)
        for photo in find_images([p]) if p.is_dir() else [p]:
            # one entry of one folder however it is spelt; two names of one file (links) stay two photos, as asked
            found.setdefault(os.path.join(os.path.realpath(photo.parent), photo.name), photo)
    return list(found.values())


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
    mode, segmenter_ckpt = choose_mode(run_dir, cfg)
    model = load_model(run_dir, cfg, mode)
    device = resolve_device(str(opts.device))
    model.to(device)
    size, split_row = model.image_size, model.split_row
    feather = int(round(opts.feather * size))
    segmenter_ckpt = segmenter_ckpt or (find_segmenter(run_dir, cfg)[0] if opts.verify_faces else None)
    segmenter = None if segmenter_ckpt is None else load_segmenter(segmenter_ckpt, size).to(device)
    verifier = None
    if segmenter is not None and opts.verify_faces and segmenter.net.face_head is not None:
        verifier = face_verifier(segmenter, float(cfg.masks.face_threshold))
    if mode == "mask":
        log(f"antimask predict: mode mask (the segmenter of {segmenter_ckpt} finds each mask, the run redraws it)")
    else:
        log("antimask predict: mode rows (the lower band below the split row is redrawn)")
    if verifier is not None:
        log(f"antimask predict: every face is checked by the face head of {segmenter_ckpt}")
    elif opts.verify_faces:
        log("antimask predict: faces are not checked (predict.verify_faces needs a segmenter with a face head: "
            "the run's own or predict.segmenter=RUN_DIR)")
    alpha = paste_alpha(size, split_row, getattr(model, "seam_width", 0), feather)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    pending: list[tuple[Path, str, np.ndarray, list[Face]]] = []

    def flush() -> None:
        crops = [f.aligned for _, _, _, faces in pending for f in faces]
        if mode == "mask":
            drawn, regions, redraws = complete_masked_faces(model, segmenter, crops, device, int(opts.batch_size),
                                                            int(cfg.masks.redraw_dilate_px),
                                                            int(cfg.masks.redraw_feather_px))
            edge = edge_alpha(size, feather)
            per_face = iter(zip(drawn, regions, [r * edge for r in redraws]))
        else:
            per_face = iter((done, None, alpha) for done in complete_faces(model, crops, device, int(opts.batch_size)))
        for path, stem, photo, faces in pending:
            done = [next(per_face) for _ in faces]
            for info, (_, region, _) in zip(results[str(path)]["faces"], done):
                if region is not None:
                    info["mask_coverage"] = round(float(region.mean()), 4)
            try:
                results[str(path)]["outputs"] = _write(out, stem, photo, faces, done, aligned)
            except OSError as err:
                results[str(path)].update(status="failed", reason=f"cannot write outputs: {err}")
                log(f"antimask predict: {path}: cannot write outputs: {err}")
        pending.clear()

    found = found_faces(_expand(images), opts, int(cfg.prepare.max_pixels), size, split_row, verifier,
                        segmenter_ckpt, float(cfg.masks.face_threshold), log)
    for path, (photo, faces, skipped) in found:
        key = str(path)
        if skipped is not None:
            results[key] = {"status": "failed", "reason": skipped, "faces": [], "outputs": []}
            log(f"antimask predict: {path}: skipped, {skipped}")
            continue
        results[key] = {"status": "ok", "reason": None, "outputs": [], "mode": mode,
                        "faces": [{"box": list(f.box), "detector": f.detector, "score": round(f.score, 4),
                                   "residual": round(f.residual, 3), "matrix": f.matrix.tolist()} for f in faces]}
        pending.append((path, _stem(path, used), photo, faces))
        if sum(len(p[3]) for p in pending) >= opts.batch_size:
            flush()
    if pending:
        flush()
    return results


def _write(out: Path, stem: str, photo: np.ndarray, faces: list[Face],
           completed: list[tuple[np.ndarray, Optional[np.ndarray], np.ndarray]], aligned: bool) -> list[str]:
    """Every face (completed, region found or None, paste alpha) pasted back; the files written.

    Always ``STEM_unmasked.png`` and ``STEM_compare.png`` (photo | result, or photo | mask found | result in the
    mask mode, which also writes ``STEM_mask.png``); with ``aligned`` each face's aligned crop and completion
    (and its mask)."""
    result = photo
    written: list[Path] = []
    found = None
    for i, (face, (done, region, alpha)) in enumerate(zip(faces, completed)):
        result = paste_back(result, done, face.matrix, alpha)
        if region is not None:
            here = region_in_photo(region, face.matrix, photo.shape)
            found = here if found is None else found | here
        if aligned:
            written.append(save_png(out / f"{stem}_face{i}_aligned.png", face.aligned))
            written.append(save_png(out / f"{stem}_face{i}_completed.png", done))
            if region is not None:
                written.append(save_mask(out / f"{stem}_face{i}_mask.png", region))
    written.append(save_png(out / f"{stem}_unmasked.png", result))
    if found is None:
        written.append(save_png(out / f"{stem}_compare.png", np.hstack([photo, result])))
    else:
        written.append(save_mask(out / f"{stem}_mask.png", found))
        written.append(save_png(out / f"{stem}_compare.png", np.hstack([photo, tint_region(photo, found), result])))
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
