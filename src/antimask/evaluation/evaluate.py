"""`antimask evaluate RUN_DIR`: the trained run's methods and the training-free baselines drawn on the
same test faces, scored per face with bootstrap intervals, and written as a report beside the run.

Methods, in the report's order: ``anti_mask`` (encoder + mask decoder, composited as ``AntiMask``
does), the Anti-Mask of every extra run (ablations), ``full_face_redraw`` (the face decoder on the
teacher's features of the whole real face: the paper's full-face redraw), ``encoder_face_decoder``
(encoder features -> face decoder, real upper band kept), then every baseline of ``BASELINES``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from antimask.backbones import (
    POOL_MIN_ROWS,
    DescriptorPool,
    FrozenBackbone,
    WeightsError,
    backbone_from_config,
    cached_features,
    create_backbone,
    features_in_memory,
    to_training_device,
)
from antimask.config import STAGES, split_row_for
from antimask.data.resized import faces_at
from antimask.data.store import open_store
from antimask.errors import AntimaskError
from antimask.evaluation.baselines import BASELINES, create_baseline
from antimask.evaluation.metrics import (
    cosine_similarity,
    dlib_descriptors,
    face_metrics,
    identity_distance,
    image_metrics,
    landmark_error,
    predict_landmarks,
    verified,
)
from antimask.evaluation.report import METRICS, RANDOM_PAIR, report_dir, write_report
from antimask.faces.compositing import composite, keep_real_rows, match_seam_colour_np
from antimask.faces.images import to_float, to_uint8
from antimask.files import atomic_write_text
from antimask.models.antimask import AntiMask
from antimask.models.modules import load_stage
from antimask.runs import read_manifest, run_config, stage_checkpoint, trained_store

MODEL_STAGES = STAGES
ANTIMASK_STAGES = ("encoder", "mask_decoder")
RESIZE_CHUNK = 1024  # faces upsampled at a time for a feature pass


class EvaluationError(AntimaskError, ValueError):
    """A run or split that cannot be evaluated; the message says what to change."""


# ------------------------------------------------------------------------------------------------ inputs
def backbone_features(backbone, faces: np.ndarray, size: int, batch_size: int,
                      pool: Optional[DescriptorPool] = None) -> np.ndarray:
    """The teacher features of faces drawn at the training size, as the cached features of the real
    faces were made: upsampled to the stored size first (bicubic), then the backbone's own input, on its
    device (a GPU where training ran) or, for dlib, spread over ``pool``'s processes."""
    import cv2

    if not len(faces) or faces.shape[1] == size:
        return features_in_memory(backbone, faces, batch_size, pool)
    out = []
    for start in range(0, len(faces), RESIZE_CHUNK):  # the upsampled copies of a whole split may not fit in memory
        chunk = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC)
                          for f in faces[start:start + RESIZE_CHUNK]])
        out.append(features_in_memory(backbone, chunk, batch_size, pool))
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------------ models
def _checkpoints(run_dir: Path, stages: tuple[str, ...]) -> dict[str, Path]:
    """Every needed stage's best checkpoint; the ManifestError names the first missing stage."""
    return {stage: stage_checkpoint(run_dir, stage) for stage in stages}


def _load(ckpts: dict[str, Path], feature_dim: int, size: int, split_row: int, where: Path) -> dict[str, Any]:
    modules = {stage: load_stage(path, stage, feature_dim) for stage, path in ckpts.items()}
    for stage, module in modules.items():
        got = (int(module.hparams.image_size), int(module.hparams.split_row))
        if got != (size, split_row):
            raise EvaluationError(f"{ckpts[stage]}: the {stage} of {where} draws {got[0]} px faces split at row "
                                  f"{got[1]}, this evaluation is at {size} px split at row {split_row}")
    return modules


def _batched(fn, faces: np.ndarray, batch_size: int, *extra: np.ndarray) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(faces), batch_size):
            args = [a[start:start + batch_size] for a in extra]
            out.append(fn(to_float(faces[start:start + batch_size]), *args))
    return np.concatenate(out)


def draw_anti_mask(encoder, mask_decoder, real: np.ndarray, split_row: int, seam_width: int,
                   batch_size: int, seam_colour_rows: int = 0) -> np.ndarray:
    """Encoder + mask decoder composited exactly as ``AntiMask`` does (rows of seam weight 0 are real)."""
    model = AntiMask(encoder.encoder, mask_decoder.decoder, real.shape[1], split_row, seam_width, seam_colour_rows)
    return keep_real_rows(_batched(lambda x: to_uint8(model(x)), real, batch_size), real, split_row, seam_width)


def draw_full_face(face_decoder, features: np.ndarray, batch_size: int) -> np.ndarray:
    """The face decoder's whole face from the teacher's features of the whole real face."""
    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            f = torch.from_numpy(np.asarray(features[start:start + batch_size], np.float32))
            out.append(to_uint8(face_decoder.decoder.draw(f)))
    return np.concatenate(out)


def draw_encoder_face_decoder(encoder, face_decoder, real: np.ndarray, split_row: int, seam_width: int,
                              seam_colour_rows: int, batch_size: int) -> np.ndarray:
    """Encoder features -> the face decoder's whole face; its lower band, shifted to the colour of the
    visible rows above the seam (it was never trained to meet a real upper band), composited."""
    def draw(x: torch.Tensor) -> np.ndarray:
        drawn = to_uint8(face_decoder.decoder.draw(encoder.encoder(x[:, :, :split_row])))
        real_u8 = to_uint8(x)
        drawn = match_seam_colour_np(drawn, real_u8, split_row, seam_colour_rows)
        return to_uint8(composite(x, to_float(drawn), split_row, seam_width))

    return keep_real_rows(_batched(draw, real, batch_size), real, split_row, seam_width)


# ------------------------------------------------------------------------------------------------ scores
# Independent identity judges, in order of preference: dlib is the default teacher, so its identity figures
# favour the methods trained on its features; FaceRes (AUC 0.84 on AFDB pairs vs dlib's 0.81) is not.
JUDGES = ("faceres", "dlib")


def identity_judge(cfg) -> tuple[Optional[FrozenBackbone], Optional[str]]:
    """The network of ``eval.judge`` (auto: the first of ``JUDGES`` that is not the teacher and whose weights
    are here) on the device training ran on, and a note for the report when auto found none."""
    wanted = str(cfg.eval.judge)
    if wanted == "none":
        return None, None
    if wanted != "auto":
        return to_training_device(create_backbone(wanted), cfg.trainer.accelerator), None
    unavailable = []
    for name in JUDGES:
        if name == cfg.backbone.name:
            continue
        try:
            return to_training_device(create_backbone(name), cfg.trainer.accelerator), None
        except WeightsError as err:
            unavailable.append(f"{name} ({str(err).splitlines()[0]})")
    return None, ("No identity judge independent of the teacher " + str(cfg.backbone.name) + " was available: "
                  + "; ".join(unavailable))


def descriptor_pool(cfg, faces: int) -> DescriptorPool:
    """The processes an evaluation's dlib passes share (``backbone.workers``): every pass is spread when the
    ``faces`` they describe in all are worth starting them for, none when they are few."""
    return DescriptorPool(int(cfg.backbone.workers), min_rows=1 if faces >= POOL_MIN_ROWS else POOL_MIN_ROWS)


def judge_distances(judge: FrozenBackbone, drawn: np.ndarray, real_judged: np.ndarray, stored_size: int,
                    batch_size: int, pool: Optional[DescriptorPool] = None) -> np.ndarray:
    """1 - cosine between the judge's features of each drawn face and of its real face, per face."""
    return 1.0 - cosine_similarity(backbone_features(judge, drawn, stored_size, batch_size, pool), real_judged)
def _features_are_descriptors(backbone, stored_size: int) -> bool:
    """Whether the teacher's features of a drawn face are exactly its dlib identity descriptor (the dlib
    backbone at 224 without jitter, on faces upsampled to 224): then dlib runs once per face, not twice."""
    return (backbone.name == "dlib" and stored_size == 224 == int(backbone.input_size)
            and dict(backbone.options) == {"size": 224, "num_jitters": 0})


def score(drawn: np.ndarray, real: np.ndarray, split_row: int, verify_threshold: float,
          drawn_features: np.ndarray, real_features: np.ndarray, real_descriptors: np.ndarray,
          real_landmarks: np.ndarray, drawn_descriptors: Optional[np.ndarray] = None,
          batch_size: int = 32, pool: Optional[DescriptorPool] = None) -> dict[str, np.ndarray]:
    """``face_metrics``, with the drawn faces' dlib descriptors passed in when already computed."""
    if drawn_descriptors is None:
        return face_metrics(drawn, real, split_row, verify_threshold, drawn_features, real_features,
                            real_descriptors, real_landmarks, batch_size, pool)
    out = image_metrics(drawn, real, split_row)
    out["cosine"] = cosine_similarity(drawn_features, real_features)
    out["identity_distance"] = identity_distance(drawn_descriptors, real_descriptors)
    out["verified"] = verified(out["identity_distance"], verify_threshold)
    out["landmark_error"] = landmark_error(predict_landmarks(drawn), real_landmarks)
    return out


def _score_methods(cfg, store, backbone, drawn: dict[str, np.ndarray], real: np.ndarray, real_features: np.ndarray,
                   split_row: int, pool: DescriptorPool):
    """(ceiling cosine, judge, judge note, {method: {"metrics", "drawn", "features"}}) of every drawn method."""
    e, batch = cfg.eval, int(cfg.backbone.batch_size)
    n_batch = int(e.descriptor_batch)
    # The cosine a perfect drawing at this size would reach: the real face itself, down- and upsampled.
    real_resized = backbone_features(backbone, real, store.image_size, batch, pool)
    ceiling_cos = float(np.mean(cosine_similarity(real_resized, real_features)))
    reuse = _features_are_descriptors(backbone, store.image_size)
    real_descriptors = real_resized if reuse else dlib_descriptors(real, n_batch, pool)
    real_landmarks = predict_landmarks(real)
    judge, judge_note = identity_judge(cfg)
    if judge_note:
        print(f"[evaluate] {judge_note}")
    real_judged = None if judge is None else backbone_features(judge, real, store.image_size, batch, pool)
    results: dict[str, dict[str, Any]] = {}
    for method, faces in drawn.items():
        feats = backbone_features(backbone, faces, store.image_size, batch, pool)
        metrics = score(faces, real, split_row, float(e.verify_threshold), feats, real_features,
                        real_descriptors, real_landmarks, feats if reuse else None, n_batch, pool)
        if judge is not None:
            metrics["judge_distance"] = judge_distances(judge, faces, real_judged, store.image_size, batch, pool)
        results[method] = {"metrics": metrics, "drawn": faces, "features": feats}
    return ceiling_cos, judge, judge_note, results


# -------------------------------------------------------------------------------------------------- main
def evaluate_run(run_dir: str | Path, split: Optional[str] = None, name: Optional[str] = None,
                 extra_runs: Optional[dict[str, str | Path]] = None, cfg_overrides: Optional[list[str]] = None,
                 out_dir: Optional[str | Path] = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate a trained run; returns {"summary": {method: {metric: {mean, low, high, n}}}, "paths":
    {what: path} of every report file, "dir": the report folder, "methods": [...], "n_faces": N,
    "real": the real faces and "drawn": {method: faces} (uint8 (N, S, S, 3)), "split_row", and
    "cosine_real_at_image_size": the mean teacher cosine of the real faces at the training size (the
    best a drawing at that size can reach)}.

    ``split`` defaults to ``eval.split``; ``extra_runs`` {label: run folder} adds each run's Anti-Mask
    (e.g. the no-landmark and no-morph ablations, trained on the same store and face size).
    The report goes to ``out_dir`` (default RUN/reports/<split>), or beside it when that holds one.
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, cfg_overrides)
    e = cfg.eval
    split = str(split or e.split)
    size = int(cfg.data.image_size)
    split_row = split_row_for(size, cfg.data.split_row)
    batch = int(cfg.data.batch_size)

    # Fail on a missing stage before any slow work.
    ckpts = _checkpoints(run_dir, MODEL_STAGES)
    extra = {label: Path(path) for label, path in (extra_runs or {}).items()}
    clash = set(extra) & (set(BASELINES) | {"anti_mask", "full_face_redraw", "encoder_face_decoder"})
    if clash:
        raise EvaluationError(f"extra run labels {sorted(clash)} clash with method names; rename them")
    extra_cfgs = {label: run_config(path) for label, path in extra.items()}
    extra_ckpts = {label: _checkpoints(path, ANTIMASK_STAGES) for label, path in extra.items()}
    for label, other in extra_cfgs.items():
        for key, ours, theirs in (("backbone.name", cfg.backbone.name, other.backbone.name),
                                  ("data.image_size", size, int(other.data.image_size)),
                                  ("data.split_row", split_row, split_row_for(int(other.data.image_size),
                                                                             other.data.split_row))):
            if ours != theirs:
                raise EvaluationError(f"extra run '{label}' ({extra[label]}) has {key}={theirs}, "
                                      f"the evaluated run {run_dir} has {ours}: they cannot share one table")

    store = open_store(cfg.data.store)
    manifest = read_manifest(run_dir)
    manifest_digest = manifest.get("store_digest")
    trained_on = manifest.get("store")
    cross = trained_on is not None and trained_store(run_dir, cfg) != Path(cfg.data.store).resolve()
    if cross:  # data.store=OTHER given on purpose: the model meets faces of another photo set
        print(f"[evaluate] cross-dataset: {run_dir} was trained on {trained_on}, evaluated on {cfg.data.store}")
    elif manifest_digest and manifest_digest != store.digest:
        warnings.warn(f"{cfg.data.store} changed since {run_dir} was trained (store digest {store.digest}, "
                      f"the manifest says {manifest_digest}): the '{split}' split may hold other faces")
    elif manifest.get("split_digest") not in (None, store.split_digest):
        warnings.warn(f"{cfg.data.store} was split anew since {run_dir} was trained (prepare.seed or the split "
                      f"fractions changed): its '{split}' split may hold faces the run was trained on")
    rows = store.rows(split, morphs=False)
    if e.max_faces is not None:
        rows = rows[: int(e.max_faces)]
    if not len(rows):
        raise EvaluationError(f"{store.root}: the '{split}' split has no photos to evaluate "
                              f"({store.summary().get('splits', 'no summary')}); check prepare.test_fraction "
                              "or pass another split")
    train_rows = store.rows("train", morphs=False)
    if not len(train_rows):
        raise EvaluationError(f"{store.root}: the train split has no photos; mean_face and nearest_neighbour "
                              "are fit on it")

    real = faces_at(store, rows, size)
    backbone = to_training_device(backbone_from_config(cfg), cfg.trainer.accelerator)  # where training ran them
    features = cached_features(store, backbone, batch_size=int(cfg.backbone.batch_size), progress=progress,
                               workers=int(cfg.backbone.workers))
    real_features = np.asarray(features[rows], np.float32)
    feature_dim = int(features.shape[1])

    # ---- draw
    modules = _load(ckpts, feature_dim, size, split_row, run_dir)
    seam = int(cfg.model.seam_width)
    drawn: dict[str, np.ndarray] = {
        "anti_mask": draw_anti_mask(modules["encoder"], modules["mask_decoder"], real, split_row, seam, batch,
                                    int(cfg.model.seam_colour_rows))}
    for label in extra:
        m = _load(extra_ckpts[label], feature_dim, size, split_row, extra[label])
        drawn[label] = draw_anti_mask(m["encoder"], m["mask_decoder"], real, split_row,
                                      int(extra_cfgs[label].model.seam_width), batch,
                                      int(extra_cfgs[label].model.seam_colour_rows))
    drawn["full_face_redraw"] = draw_full_face(modules["face_decoder"], real_features, batch)
    drawn["encoder_face_decoder"] = draw_encoder_face_decoder(
        modules["encoder"], modules["face_decoder"], real, split_row, seam, int(e.seam_colour_rows), batch)
    train = faces_at(store, train_rows, size)
    for baseline in BASELINES:
        drawn[baseline] = create_baseline(baseline, e).fit(train).complete(real, split_row)
    del train
    unknown = [m for m in e.grid_methods if m not in drawn]
    if unknown:
        raise EvaluationError(f"eval.grid_methods names {unknown}, not methods of this evaluation "
                              f"({', '.join(drawn)})")

    # ---- score
    with descriptor_pool(cfg, len(real) * (len(drawn) + 1)) as pool:  # dlib's passes spread over the CPU cores
        ceiling_cos, judge, judge_note, results = _score_methods(cfg, store, backbone, drawn, real, real_features,
                                                                 split_row, pool)

    meta = store.meta
    context = {
        "name": name or cfg.run.name or run_dir.name, "run": str(run_dir), "split": split, "n_faces": len(rows),
        "backbone": str(cfg.backbone.name), "identity_network": "dlib", "split_row": split_row,
        "judge": None if judge is None else judge.name, "judge_note": judge_note,
        "image_size": size, "seed": int(cfg.run.seed), "real": real, "yaw": np.asarray(meta["yaw"][rows], np.float64),
        "identities": np.asarray(meta["identity"][rows]), "real_features": real_features,
        "loss_csv": {s: run_dir / s / "metrics.csv" for s in MODEL_STAGES if (run_dir / s / "metrics.csv").is_file()},
        "worst_method": "anti_mask", "cosine_real_at_image_size": ceiling_cos,
        "trained_on_store": trained_on, "evaluated_on_store": str(cfg.data.store),
        "extra_runs": json.dumps({k: str(v) for k, v in extra.items()}) if extra else None,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    target = Path(out_dir) if out_dir is not None else report_dir(run_dir, split, name)
    paths = write_report(target, results, context, e)
    report = json.loads(Path(paths["metrics"]).read_text())
    summary = {m: {k: {s: v[s] for s in ("mean", "low", "high", "n")} for k, v in per.items()}
               for m, per in report["methods"].items()}
    return {"summary": summary, "paths": paths, "dir": paths["dir"], "methods": list(drawn), "n_faces": len(rows),
            "cosine_real_at_image_size": ceiling_cos, "split_row": split_row, "real": real, "drawn": drawn}


# ------------------------------------------------------------------------------------------ across runs
def _cell(stats: Optional[dict]) -> str:
    if not stats or stats.get("mean") is None:
        return "-"

    def fmt(x):
        if x is None:
            return "n/a"
        if isinstance(x, str):
            return x
        return f"{x:.4g}" if math.isfinite(x) else str(x)

    if stats.get("low") is None:
        return fmt(stats["mean"])
    return f"{fmt(stats['mean'])} [{fmt(stats['low'])}, {fmt(stats['high'])}]"


def combine_tables(reports: dict[str, str | Path], out_md: str | Path,
                   methods: Optional[list[str]] = None) -> Path:
    """One markdown table across runs (``make ablations``): a column per run and method, a row per metric.

    ``reports`` maps a run label to its metrics.json (or the report folder holding it); ``methods``
    picks the methods shown per run (default: each report's first method, its model).
    """
    if not reports:
        raise EvaluationError("combine_tables needs at least one report")
    columns: list[tuple[str, dict]] = []
    for label, path in reports.items():
        path = Path(path)
        path = path / "metrics.json" if path.is_dir() else path
        if not path.is_file():
            raise EvaluationError(f"{path}: no metrics.json for run '{label}'; run `antimask evaluate` first")
        data = json.loads(path.read_text())
        per = data.get("methods", {})
        wanted = methods or list(per)[:1]
        for method in wanted:
            if method not in per:
                raise EvaluationError(f"{path}: run '{label}' has no method '{method}' (it has {', '.join(per)})")
            title = label if methods is None else f"{label}: {method}"
            columns.append((title, {**per[method], RANDOM_PAIR: data.get(RANDOM_PAIR)}))
    names = [k for k in METRICS if any(k in c for _, c in columns)]
    names += sorted({k for _, c in columns for k in c} - set(names) - {RANDOM_PAIR})
    if "cosine" in names:  # the chance level right under the cosine it qualifies
        names.insert(names.index("cosine") + 1, RANDOM_PAIR)
    lines = ["# Anti-Mask: runs side by side", "", "Mean [95 % CI] per face on each run's evaluation split.", "",
             "| metric | " + " | ".join(t for t, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for k in names:
        label, higher = METRICS.get(k, (k, None))
        if k == RANDOM_PAIR:
            label = "cosine, random pair of different identities (chance level)"
        arrow = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
        lines.append(f"| {label}{arrow} | " + " | ".join(_cell(c.get(k)) for _, c in columns) + " |")
    return atomic_write_text(Path(out_md), "\n".join(lines) + "\n")
