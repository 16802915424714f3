"""`antimask train-all`: photos -> store -> morphs -> teacher features -> resized faces -> the three
stages -> evaluation, each step skipped when its output is already there."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from antimask.backbones import backbone_from_config, cached_features, create_backbone, to_training_device
from antimask.config import SEGMENTER, STAGES
from antimask.data.augment import augment_store
from antimask.data.prepare import prepare_store, sample_sources
from antimask.data.resized import build_resized_cache, cache_valid
from antimask.data.store import StoreError, open_store
from antimask.evaluation.evaluate import evaluate_run
from antimask.runs import finished_stage, read_manifest, reuse_stage, run_dir
from antimask.segmentation import train_segmenter as fit_segmenter
from antimask.training import train_stage as fit_stage
from antimask.training import wait_until


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


def is_prepared(cfg: DictConfig) -> bool:
    """Whether prepare_data has finished (for ranks that wait for rank 0 before opening the data)."""
    try:
        store = open_store(cfg.data.store)
    except StoreError:
        return False
    if _uses_morphs(cfg) and not store.num_morphs:
        return False
    size = int(cfg.data.image_size)
    return size == store.image_size or cache_valid(store, size)


def train_stage(cfg: DictConfig, stage: str, datamodule=None) -> tuple[dict, dict]:
    """`antimask train STAGE`: prepare what is missing (rank 0; the other ranks wait), then fit the stage."""
    return fit_stage(cfg, stage, datamodule, prepare=lambda: prepare_data(cfg), is_prepared=lambda: is_prepared(cfg))


def train_segmenter(cfg: DictConfig) -> tuple[dict, dict]:
    """`antimask train segmenter`: prepare what is missing (rank 0; the other ranks wait), then fit the mask
    segmenter on synthetic masks drawn on the store's faces."""
    if rank_zero_only.rank == 0:
        prepare_data(cfg)
    else:
        wait_until(lambda: is_prepared(cfg), f"rank 0 to prepare {cfg.data.store}")
    return fit_segmenter(cfg)


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
        if stage in cfg.run.reuse and not entry.get("reused_from"):
            reuse_stage(cfg, stage, Path(cfg.run.reuse[stage]))
            continue
        if finished_stage(cfg, stage) is not None:
            print(f"[train-all] {stage}: done before, skipped ({entry['best_checkpoint']})")
            continue
        resuming = OmegaConf.merge(cfg, {"trainer": {"ckpt_path": "last"}})
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
