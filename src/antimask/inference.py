"""`antimask predict`: photos in, photos out with every face's lower half drawn by a trained run's model.

Each face is found and aligned by the face finder ``prepare`` runs too (``antimask.faces.finder``, with the
``predict`` section's keys: masked faces, aligned on the landmarks a mask leaves visible), completed in
batches by ``AntiMask`` and warped back into the photo under a feathered alpha mask that is zero above the
split row, so the visible upper face keeps its original pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig

from antimask.faces import finder
from antimask.faces.compositing import paste_alpha, paste_back
from antimask.faces.finder import Face
from antimask.faces.images import to_float, to_uint8
from antimask.faces.photos import Rejected, find_images, load_rgb
from antimask.files import atomic_path
from antimask.models.antimask import AntiMask
from antimask.runs import run_config, stage_checkpoint

PNG_KEY = "antimask"
PNG_NOTICE = ("The lower face in this image was synthesized by antimask (a trained model's guess from the "
              "upper face); it is not a photograph of the person.")


# ----------------------------------------------------------------------------------------------- run

def load_model(run_dir: str | Path, cfg: DictConfig):
    """AntiMask from the run's finished encoder and mask decoder stages (ManifestError names a missing one)."""
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


# ------------------------------------------------------------------------------------------ completion

def complete_faces(model, faces: list[np.ndarray], device: str, batch_size: int) -> list[np.ndarray]:
    """Aligned uint8 faces (S,S,3) -> completed uint8 faces, in batches of batch_size."""
    import torch

    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(faces), batch_size):
            out.extend(to_uint8(model(to_float(np.stack(faces[i:i + batch_size]), device))))
    return out


# ------------------------------------------------------------------------------------------------ io

def save_png(path: Path, image: np.ndarray) -> Path:
    """An RGB PNG carrying the notice that its lower face is synthesized (written atomically)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo


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
        found.extend(find_images([p]) if p.is_dir() else [p])
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
    pending: list[tuple[Path, str, np.ndarray, list[Face]]] = []

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
            photo = load_rgb(path, int(cfg.prepare.max_pixels))
        except Rejected as err:
            results[key] = {"status": "failed", "reason": str(err), "faces": [], "outputs": []}
            log(f"antimask predict: {path}: skipped, {err}")
            continue
        try:
            faces = finder.find_faces(photo, opts, size, split_row).faces
        except Rejected:  # predict tries every detector: why each box failed matters less than that none was a face
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


def _write(out: Path, stem: str, photo: np.ndarray, faces: list[Face], completed: list[np.ndarray],
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
