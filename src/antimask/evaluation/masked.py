"""`antimask evaluate RUN --masked`: the user's question, answered on masked faces.

Every test face gets a synthetic mask of a held-out style (``masks.held_out_styles``, seeded by
``(masks.seed, row)``, so every run sees the same masks). The region a method may redraw is the one the run's
mask segmenter finds (``eval.mask_region=auto`` when the run has one) or the drawn mask itself (``true``, an
oracle). Rows of the table:

- ``masked_face``: the masked face as it is (what the user has without antimask);
- ``grey_band``: the rows below the split filled grey (no completion, the ``d_nothing`` of the identity gap);
- ``telea`` / ``navier_stokes``: OpenCV inpainting of the redraw region;
- ``anti_mask`` and each ``--with`` run: a mask-aware run redraws the region (``MaskAwareAntiMask``), a
  fixed-row run the paper's lower band (``AntiMask``), both from the masked face;
- ``real_face``: the unmasked face (the ceiling).

Scores per face: L1 over the true mask region, L1 / SSIM / PSNR over the whole face, dlib identity distance to
the same photo unmasked and, where the split holds several photos of a person, to the person's other photos,
the judge network's distance (``eval.judge``), and the share verified at ``eval.verify_threshold``. The
identity gap recovered is (d_grey - d_method) / (d_grey - d_real) of the means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from antimask.backbones import DescriptorPool
from antimask.config import split_row_for
from antimask.data.resized import faces_at
from antimask.data.row_masks import mask_styles
from antimask.data.store import open_store
from antimask.evaluation.baselines import Inpaint
from antimask.evaluation.evaluate import (
    EvaluationError,
    backbone_features,
    descriptor_pool,
    identity_judge,
    judge_distances,
)
from antimask.evaluation.metrics import bootstrap_ci, dlib_descriptors, identity_distance, l1, psnr, ssim
from antimask.evaluation.report import _fresh_dir, _json_safe, report_dir
from antimask.faces.compositing import tint_region
from antimask.faces.images import to_float, to_uint8
from antimask.faces.masks import MaskAugment, draw_mask, redraw_region
from antimask.files import atomic_path, atomic_save_png, atomic_write_text
from antimask.models.antimask import AntiMask, MaskAwareAntiMask
from antimask.models.segmenter import load_segmenter, predict_regions
from antimask.runs import read_manifest, run_config, stage_checkpoint

REFERENCE_ROWS = ("masked_face", "grey_band", "telea", "navier_stokes")
CEILING = "real_face"
BASELINE = "masked_face"  # what the user has without antimask: the paired differences are taken against it
NOTHING = "grey_band"
IDENTITY_KEYS = ("identity_distance", "other_photo_distance", "judge_distance")
METRIC_KEYS = ("region_l1", "l1", "ssim", "psnr") + IDENTITY_KEYS + ("verified",)


def masked_test_faces(cfg, store, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(real, masked, region, styles): each face of ``rows`` at ``size`` with a held-out-style mask drawn on it
    from its landmarks, seeded by (masks.seed, row); region bool (N, S, S)."""
    real = faces_at(store, rows, size)
    augment = MaskAugment(styles=mask_styles(cfg, "test"), p=1.0, seed=int(cfg.masks.seed),
                          height_range=tuple(float(x) for x in cfg.masks.height_range))
    scale = size / store.image_size
    masked, regions, styles = np.empty_like(real), np.zeros(real.shape[:3], bool), []
    for i, row in enumerate(rows):
        rng = np.random.default_rng((augment.seed, int(row)))
        style = augment.style(rng)
        landmarks = (np.asarray(store.landmarks[int(row)], np.float32) + 0.5) * scale - 0.5
        masked[i], regions[i] = draw_mask(real[i], landmarks, style)
        styles.append(style.family)
    return real, masked, regions, styles


def region_source(cfg, run_dir: Path) -> str:
    """``segmenter`` or ``drawn``: what ``eval.mask_region`` means for this run."""
    wanted = str(cfg.eval.mask_region)
    has = "segmenter" in read_manifest(run_dir).get("stages", {})
    if wanted == "segmenter" and not has:
        raise EvaluationError(f"eval.mask_region=segmenter but {run_dir} has no trained segmenter; train one with "
                              f"`antimask train segmenter run.dir={run_dir}` or use eval.mask_region=drawn")
    return "segmenter" if wanted == "segmenter" or (wanted == "auto" and has) else "drawn"


def _model_for(run_dir: Path, cfg):
    encoder, decoder = stage_checkpoint(run_dir, "encoder"), stage_checkpoint(run_dir, "mask_decoder")
    if bool(cfg.model.mask_aware):
        return MaskAwareAntiMask.from_checkpoints(encoder, decoder)
    return AntiMask.from_checkpoints(encoder, decoder, int(cfg.model.seam_width), int(cfg.model.seam_colour_rows))


def complete(model, masked: np.ndarray, redraw: np.ndarray, batch_size: int) -> np.ndarray:
    """uint8 faces completed by ``model``: a mask-aware one redraws ``redraw`` (float (N, S, S)), a fixed-row one
    the lower band."""
    out = []
    with torch.no_grad():
        for s in range(0, len(masked), batch_size):
            x = to_float(masked[s:s + batch_size])
            if isinstance(model, MaskAwareAntiMask):
                out.append(to_uint8(model(x, torch.from_numpy(redraw[s:s + batch_size, None]).float())))
            else:
                out.append(to_uint8(model(x)))
    return np.concatenate(out) if out else masked.copy()


def region_l1(drawn: np.ndarray, real: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Mean absolute error in [0, 1] over each face's region pixels (NaN for an empty region), (N,)."""
    diff = np.abs(drawn.astype(np.float64) - real.astype(np.float64)).mean(-1) / 255.0
    counts = regions.reshape(len(regions), -1).sum(1)
    sums = (diff * regions).reshape(len(regions), -1).sum(1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def other_photo_distances(descriptors: np.ndarray, real_descriptors: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """Per face, the mean dlib distance of its descriptor to the real descriptors of the same person's other
    photos in the set; NaN where the person has no other photo."""
    out = np.full(len(descriptors), np.nan)
    for i, who in enumerate(identities):
        others = np.flatnonzero((identities == who) & (np.arange(len(identities)) != i))
        if len(others):
            out[i] = float(np.linalg.norm(real_descriptors[others] - descriptors[i], axis=1).mean())
    return out


def gap_recovered(means: dict[str, float], method: str) -> float:
    """(d_nothing - d_method) / (d_nothing - d_real); NaN when the gap is not positive."""
    nothing, real = means.get(NOTHING, np.nan), means.get(CEILING, np.nan)
    gap = nothing - real
    return float((nothing - means[method]) / gap) if np.isfinite(gap) and gap > 0 else float("nan")


def _score_methods(cfg, store, drawn: dict[str, np.ndarray], real: np.ndarray, regions: np.ndarray,
                   identities: np.ndarray, pool: DescriptorPool):
    """({method: {score: per-face values}}, judge, judge note) of every method; dlib's descriptors over
    ``pool``'s processes."""
    e, batch = cfg.eval, int(cfg.backbone.batch_size)
    n_batch = int(e.descriptor_batch)
    real_desc = dlib_descriptors(real, n_batch, pool)
    judge, judge_note = identity_judge(cfg)
    real_judged = None if judge is None else backbone_features(judge, real, store.image_size, batch, pool)
    per_face: dict[str, dict[str, np.ndarray]] = {}
    for method, faces in drawn.items():
        desc = real_desc if method == CEILING else dlib_descriptors(faces, n_batch, pool)
        d = identity_distance(desc, real_desc)
        scores = {"region_l1": region_l1(faces, real, regions), "l1": l1(faces, real), "ssim": ssim(faces, real),
                  "psnr": psnr(faces, real), "identity_distance": d,
                  "other_photo_distance": other_photo_distances(desc, real_desc, identities),
                  "verified": (d < float(e.verify_threshold)).astype(np.float64)}
        if judge is not None:
            scores["judge_distance"] = judge_distances(judge, faces, real_judged, store.image_size, batch, pool)
        per_face[method] = scores
    return per_face, judge, judge_note


def evaluate_masked(run_dir: str | Path, split: Optional[str] = None, name: Optional[str] = None,
                    extra_runs: Optional[dict[str, str | Path]] = None, cfg_overrides: Optional[list[str]] = None,
                    out_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Score the run (and ``extra_runs`` {label: run folder}) on masked test faces; writes metrics.json,
    report.md and grid.png to ``out_dir`` (default RUN/reports/masked_<split>); returns {"summary", "gap",
    "paths", "region_source", "segmenter_iou", "n_faces"}."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, cfg_overrides)
    e = cfg.eval
    split = str(split or e.split)
    size = int(cfg.data.image_size)
    split_row = split_row_for(size, cfg.data.split_row)
    batch = int(cfg.data.batch_size)
    extra = {label: Path(p) for label, p in (extra_runs or {}).items()}
    clash = set(extra) & (set(REFERENCE_ROWS) | {"anti_mask", CEILING})
    if clash:
        raise EvaluationError(f"extra run labels {sorted(clash)} clash with row names; rename them")
    models = {"anti_mask": _model_for(run_dir, cfg)}
    for label, path in extra.items():
        other = run_config(path)
        if int(other.data.image_size) != size:
            raise EvaluationError(f"extra run '{label}' ({path}) draws {other.data.image_size} px faces, "
                                  f"{run_dir} draws {size} px: they cannot share one table")
        models[label] = _model_for(path, other)
    source = region_source(cfg, run_dir)

    store = open_store(cfg.data.store)
    rows = store.rows(split, morphs=False)
    if e.max_faces:
        rows = rows[: int(e.max_faces)]
    if len(rows) == 0:
        raise EvaluationError(f"{store.root}: the '{split}' split has no photos to evaluate")
    real, masked, regions, styles = masked_test_faces(cfg, store, rows, size)
    seg_iou = None
    if source == "segmenter":
        found = predict_regions(load_segmenter(stage_checkpoint(run_dir, "segmenter"), size), masked, batch)
        inter = (found & regions).reshape(len(rows), -1).sum(1)
        union = (found | regions).reshape(len(rows), -1).sum(1)
        seg_iou = float(np.mean(inter / np.maximum(union, 1)))
    else:
        found = regions
    m = cfg.masks
    redraw = np.stack([redraw_region(r, int(m.redraw_dilate_px), int(m.redraw_feather_px)) for r in found]) \
        if len(found) else np.zeros(found.shape, np.float32)
    inpaint_region = redraw > 0

    grey = masked.copy()
    grey[:, split_row:] = 128
    drawn: dict[str, np.ndarray] = {"masked_face": masked, "grey_band": grey}
    for method in ("telea", "navier_stokes"):
        drawn[method] = Inpaint(method, int(e.inpaint_radius)).complete_regions(masked, inpaint_region)
    for label, model in models.items():
        drawn[label] = complete(model, masked, redraw, batch)
    drawn[CEILING] = real

    identities = np.asarray(store.meta["identity"][rows])
    with descriptor_pool(cfg, len(real) * len(drawn)) as pool:  # dlib's passes spread over the CPU cores
        per_face, judge, judge_note = _score_methods(cfg, store, drawn, real, regions, identities, pool)

    seed = int(cfg.run.seed)
    summary = {method: {k: dict(zip(("mean", "low", "high"), bootstrap_ci(v, int(e.bootstrap), seed,
                                                                           method=str(e.ci_method))),
                            n=int(np.isfinite(v).sum())) for k, v in scores.items()}
               for method, scores in per_face.items()}
    paired = paired_differences(per_face, BASELINE, int(e.bootstrap), seed, str(e.ci_method))
    gap = {key: {method: gap_recovered({mm: summary[mm][key]["mean"] for mm in summary if key in summary[mm]}, method)
                 for method in summary if key in summary[method]}
           for key in IDENTITY_KEYS if key in summary[CEILING]}

    target = Path(out_dir) if out_dir is not None else report_dir(run_dir, f"masked_{split}", name)
    folder = _fresh_dir(target, name)
    context = {"run": str(run_dir), "split": split, "n_faces": int(len(rows)), "image_size": size,
               "split_row": split_row, "region_source": source, "segmenter_iou": seg_iou,
               "held_out_styles": sorted(set(styles)), "store": str(cfg.data.store),
               "judge": None if judge is None else judge.name, "judge_note": judge_note,
               "with": {k: str(v) for k, v in extra.items()},
               "mask_coverage": float(regions.mean()), "config": OmegaConf.to_container(cfg, resolve=True)}
    paths = {"metrics": folder / "metrics.json", "report": folder / "report.md", "grid": folder / "grid.png",
             "per_face": folder / "per_face.npz"}
    atomic_write_text(paths["metrics"], json.dumps(_json_safe({"context": context, "methods": summary,
                                                               "gap_recovered": gap, "paired": paired}), indent=1))
    atomic_write_text(paths["report"], _markdown(summary, gap, context) + _paired_markdown(paired))
    _save_per_face(paths["per_face"], per_face, rows)
    _grid(paths["grid"], masked, found, drawn, int(e.grid_faces))
    return {"summary": summary, "gap": gap, "paths": {k: str(v) for k, v in paths.items()}, "dir": str(folder),
            "region_source": source, "segmenter_iou": seg_iou, "n_faces": int(len(rows)), "drawn": drawn,
            "regions": regions, "found": found}


def paired_differences(per_face: dict[str, dict[str, np.ndarray]], baseline: str, n_resamples: int, seed: int,
                       ci_method: str) -> dict[str, dict[str, dict]]:
    """{metric: {method: {mean, low, high, n}}}: each method's per-face score minus ``baseline``'s on the same
    face, with its bootstrap CI; far tighter than comparing two means' CIs, since the faces are shared."""
    out: dict[str, dict[str, dict]] = {}
    for key in ("region_l1", "ssim") + IDENTITY_KEYS:
        if key not in per_face[baseline]:
            continue
        base = per_face[baseline][key]
        for method, scores in per_face.items():
            if method in (baseline, CEILING) or key not in scores:
                continue
            diff = scores[key] - base
            if not np.isfinite(diff).any():
                continue
            mean, low, high = bootstrap_ci(diff, n_resamples, seed, method=ci_method)
            out.setdefault(key, {})[method] = {"mean": mean, "low": low, "high": high,
                                               "n": int(np.isfinite(diff).sum())}
    return out


def _paired_markdown(paired: dict) -> str:
    if not paired:
        return ""
    methods = list(dict.fromkeys(m for by_method in paired.values() for m in by_method))
    lines = ["", f"Paired per face, method minus {BASELINE} (mean [95 % CI]; lower is better except ssim):", "",
             "| method | " + " | ".join(paired) + " |", "|---" * (1 + len(paired)) + "|"]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(_fmt(paired[k][method]) if method in paired[k] else "n/a"
                                                    for k in paired) + " |")
    return "\n".join(lines) + "\n"


def _save_per_face(path: Path, per_face: dict[str, dict[str, np.ndarray]], rows: np.ndarray) -> None:
    """Every method's per-face scores (``METHOD/metric`` arrays, aligned with ``rows``) for later paired tests."""
    arrays = {f"{method}/{key}": np.asarray(v, np.float64) for method, scores in per_face.items()
              for key, v in scores.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, rows=np.asarray(rows), **arrays)


def _fmt(stats: dict) -> str:
    mean, low, high = stats["mean"], stats["low"], stats["high"]
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4g}" if not np.isfinite(low) else f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def _markdown(summary: dict, gap: dict, ctx: dict) -> str:
    keys = [k for k in METRIC_KEYS if any(k in s for s in summary.values())]
    lines = [f"# Masked faces: {ctx['run']} ({ctx['split']} split, {ctx['n_faces']} faces, {ctx['image_size']} px)", "",
             f"- masks: held-out styles {', '.join(ctx['held_out_styles'])}; mean coverage {ctx['mask_coverage']:.3f} "
             "of the face",
             f"- redraw region: {ctx['region_source']}" + (f" (segmenter IoU {ctx['segmenter_iou']:.3f} against the "
                                                            "drawn masks)" if ctx['segmenter_iou'] is not None else
                                                            " (the drawn mask itself: an oracle)"),
             f"- identity: dlib distance to the same photo unmasked and to the person's other photos; judge "
             f"{ctx['judge'] or 'none'}" + (f" ({ctx['judge_note']})" if ctx['judge_note'] else ""),
             f"- gap recovered: ({NOTHING} - method) / ({NOTHING} - {CEILING}) of the mean distances",
             "- grid.png columns: the masked face with the redraw region in red, then "
             + ", ".join(m for m in summary if m != "masked_face"), "",
             "| method | " + " | ".join(keys) + " | " + " | ".join(f"gap {k}" for k in gap) + " |",
             "|---" * (1 + len(keys) + len(gap)) + "|"]
    for method, stats in summary.items():
        cells = [_fmt(stats[k]) if k in stats else "n/a" for k in keys]
        cells += [f"{gap[k][method]:.3f}" if np.isfinite(gap[k].get(method, np.nan)) else "n/a" for k in gap]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _grid(path: Path, masked: np.ndarray, found: np.ndarray, drawn: dict[str, np.ndarray], n: int) -> None:
    """Rows of faces: masked | region found (red) | every method | real."""
    n = min(n, len(masked))
    if n == 0:
        return
    columns = [tint_region(masked[:n], found[:n])]
    columns += [faces[:n] for method, faces in drawn.items() if method != "masked_face"]
    grid = np.concatenate([np.concatenate([c[i] for c in columns], 1) for i in range(n)], 0)
    atomic_save_png(path, grid)
