"""`antimask train-all`: photos -> store -> morphs -> teacher features -> resized faces -> the three
stages -> evaluation, each step skipped when its output is already there."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from antimask.backbones import (
    backbone_from_config,
    cache_file,
    cached_features,
    create_backbone,
    feature_key,
    to_training_device,
)
from antimask.config import SEGMENTER, STAGES
from antimask.data.augment import augment_store
from antimask.data.prepare import prepare_store, sample_sources
from antimask.data.resized import build_resized_cache, cache_valid
from antimask.data.store import StoreError, open_store
from antimask.evaluation.evaluate import evaluate_run
from antimask.runs import (
    ManifestError,
    finished_stage,
    read_manifest,
    resume_path,
    reuse_stage,
    run_dir,
    stage_dir,
    trained_with,
)
from antimask.segmentation import train_segmenter as fit_segmenter
from antimask.training import checkpoint_results_hash, wait_until
from antimask.training import train_stage as fit_stage


def _uses_morphs(cfg: DictConfig) -> bool:
    return bool(cfg.data.use_morphs and cfg.augment.enabled)


def prepare_data(cfg: DictConfig) -> None:
    """Everything a stage reads, made once (rank 0 only): the store (the embedded sample when no sources
    are given and no store exists), its morphs, the backbone's features and the faces at data.image_size."""
    root = Path(cfg.data.store)
    sources = list(cfg.data.sources)
    if sources or not (root / "header.json").exists():
        prepare_store(sources or sample_sources(root.parent / "sample_photos"), root, cfg)
    if _uses_morphs(cfg):
        augment_store(root, cfg)
    store = open_store(root)
    # on the GPU training will use (the CPU when there is none); dlib on every CPU core
    cached_features(store, to_training_device(backbone_from_config(cfg), cfg.trainer.accelerator),
                    batch_size=int(cfg.backbone.batch_size), workers=int(cfg.backbone.workers))
    build_resized_cache(store, int(cfg.data.image_size))


def prepared_check(cfg: DictConfig) -> Callable[[], bool]:
    """Whether prepare_data has finished, as a check the ranks that wait for rank 0 poll: the store, its morphs,
    this backbone's features (a store prepared for another backbone is not ready) and the resized faces. The
    backbone is built once, at the first poll that finds the store."""
    backbone = []

    def ready() -> bool:
        try:
            store = open_store(cfg.data.store)
        except StoreError:
            return False
        if _uses_morphs(cfg) and not store.num_morphs:
            return False
        if not backbone:
            backbone.append(backbone_from_config(cfg))
        if not cache_file(store, feature_key(store, backbone[0])).is_file():
            return False
        size = int(cfg.data.image_size)
        return size == store.image_size or cache_valid(store, size)

    return ready


def is_prepared(cfg: DictConfig) -> bool:
    """Whether prepare_data has finished (one poll of ``prepared_check``)."""
    return prepared_check(cfg)()


def train_stage(cfg: DictConfig, stage: str, datamodule=None) -> tuple[dict, dict]:
    """`antimask train STAGE`: prepare what is missing (rank 0; the other ranks wait), then fit the stage."""
    return fit_stage(cfg, stage, datamodule, prepare=lambda: prepare_data(cfg), is_prepared=prepared_check(cfg))


def train_segmenter(cfg: DictConfig) -> tuple[dict, dict]:
    """`antimask train segmenter`: prepare what is missing (rank 0; the other ranks wait), then fit the mask
    segmenter on synthetic masks drawn on the store's faces."""
    if rank_zero_only.rank == 0:
        prepare_data(cfg)
    else:
        wait_until(prepared_check(cfg), f"rank 0 to prepare {cfg.data.store}")
    return fit_segmenter(cfg)


def _reuse(cfg: DictConfig, stage: str, entry: dict) -> bool:
    """run.reuse.<stage>: copy the other run's stage in (global rank 0; the other ranks wait for its manifest
    entry); False when it was copied before (train-all goes on to skip it). A stage trained here, or copied from
    another run than the one named now, is not replaced: that would change what the later stages were built on."""
    source = Path(cfg.run.reuse[stage])
    manifest = run_dir(cfg) / "manifest.json"
    if entry.get("reused_from"):
        if Path(entry["reused_from"]).resolve() != source.resolve():
            raise ManifestError(f"{manifest}: stage '{stage}' was reused from {entry['reused_from']}, and "
                                f"run.reuse.{stage} now names {source}; use a new run.dir, or delete "
                                f"{stage_dir(cfg, stage)} to reuse the other")
        return False
    if entry.get("status") == "done":
        raise ManifestError(f"{manifest}: stage '{stage}' was trained in this run; run.reuse.{stage}={source} would "
                            f"replace it; use a new run.dir, or delete {stage_dir(cfg, stage)} to reuse {source}")
    if rank_zero_only.rank == 0:
        reuse_stage(cfg, stage, source)
    else:
        wait_until(lambda: read_manifest(run_dir(cfg)).get("stages", {}).get(stage, {}).get("reused_from"),
                   f"rank 0 to copy stage '{stage}' from {source}")
    return True


def _check_interrupted(cfg: DictConfig, stage: str) -> None:
    """An interrupted stage resumes only under the config it was started with: its checkpoint holds that
    config's optimiser state (its lr, its schedule), and the manifest would record the new config for it."""
    checkpoint = resume_path(cfg, stage)
    stamp = checkpoint_results_hash(checkpoint) if checkpoint else None
    if stamp is not None and not trained_with(cfg, run_dir(cfg), stamp):
        raise ManifestError(f"{checkpoint}: stage '{stage}' was interrupted while training with another config; "
                            f"use a new run.dir, delete {stage_dir(cfg, stage)} to retrain it, or go on with the "
                            f"config it started with")


def train_all(cfg: DictConfig, evaluate: bool = True) -> dict:
    """prepare -> augment -> features -> face decoder -> mask decoder -> encoder [-> segmenter, for a
    model.mask_aware run] -> evaluation.

    Finished stages (same results-relevant config) are skipped; an interrupted stage resumes from its
    last checkpoint. Returns the manifest.
    """
    folder = run_dir(cfg)
    mask_decoder = read_manifest(folder).get("stages", {}).get("mask_decoder", {})
    if (cfg.model.identity_weight > 0 and cfg.model.identity_net and "mask_decoder" not in cfg.run.reuse
            and mask_decoder.get("status") != "done"):
        create_backbone(str(cfg.model.identity_net))  # its weights must be here now, not after the face decoder
    # without its segmenter a mask-aware run can only redraw the paper's rows: it is trained (or reused) last
    for stage in (*STAGES, SEGMENTER) if cfg.model.mask_aware else STAGES:
        entry = read_manifest(folder).get("stages", {}).get(stage, {})
        if stage in cfg.run.reuse and _reuse(cfg, stage, entry):
            continue
        if finished_stage(cfg, stage) is not None:
            print(f"[train-all] {stage}: done before, skipped ({entry['best_checkpoint']})")
            continue
        resuming = OmegaConf.merge(cfg, {"trainer": {"ckpt_path": "last"}})
        _check_interrupted(resuming, stage)
        if stage == SEGMENTER:
            print(f"[train-all] {stage}: training (model.mask_aware: predict finds each mask with it; resumes from "
                  "its last checkpoint if one exists)")
            train_segmenter(resuming)
        else:
            print(f"[train-all] {stage}: training (resumes from its last checkpoint if one exists)")
            train_stage(resuming, stage)
    manifest = read_manifest(folder)
    rank_zero = rank_zero_only.rank == 0
    if evaluate and not cfg.trainer.fast_dev_run and rank_zero:
        started = time.perf_counter()
        result = evaluate_run(folder, split=cfg.eval.split)
        manifest = read_manifest(folder)
        print(f"[train-all] report: {result['paths']['report']} ({time.perf_counter() - started:.0f} s)")
    if rank_zero:
        print(f"[train-all] model: {folder / 'manifest.json'} (encoder + mask decoder checkpoints); "
              f"use it with `antimask predict {folder} PHOTO --out OUT`")
    return manifest
