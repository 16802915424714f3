"""Fit the mask segmenter on a prepared store (synthetic masks drawn per face) and find mask regions with it.

Not a paper stage: train-all skips it; its entry in the run manifest is ``segmenter``.
"""

from __future__ import annotations

import os
import time

import pytorch_lightning as pl
from omegaconf import DictConfig

from antimask.config import save_config
from antimask.data.masked import MaskedFaceDataModule
from antimask.models.segmenter import (
    STAGE,
    MaskSegmenterModule,
    load_segmenter,
    predict_regions,
)
from antimask.runs import results_hash, run_dir, update_manifest
from antimask.training import compile_networks, fitted_metrics, stage_trainer

__all__ = ["predict_regions", "train_segmenter"]  # predict_regions lives with the module: inference may not import this


def train_segmenter(cfg: DictConfig, datamodule: MaskedFaceDataModule | None = None) -> tuple[dict, dict]:
    """Fit the segmenter into RUN/segmenter/, score its best checkpoint on the test split (held-out mask
    families) and record both in the manifest; returns (metrics, objects) like ``training.train_stage``."""
    pl.seed_everything(cfg.run.seed, workers=True)
    folder = run_dir(cfg)
    dm = datamodule or MaskedFaceDataModule(cfg)
    trainer, resume = stage_trainer(cfg, STAGE)
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, folder)
    dm.setup("fit")
    module = compile_networks(MaskSegmenterModule.from_config(cfg), cfg.trainer)
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)  # never unpickle code on resume
    fit_seconds = round(time.perf_counter() - started, 1)
    metrics = fitted_metrics(trainer, resume)
    objects = {"trainer": trainer, "module": module, "datamodule": dm}
    if cfg.trainer.fast_dev_run:
        return metrics, objects
    ckpt = trainer.checkpoint_callback
    best_path = ckpt.best_model_path or ckpt.last_model_path
    best = load_segmenter(best_path, int(cfg.data.image_size))
    tested = trainer.test(best, datamodule=dm, verbose=False)[0]
    metrics.update({k: float(v) for k, v in tested.items()})
    objects["best"] = best
    if trainer.is_global_zero:
        entry = {
            "status": "done",
            "best_checkpoint": os.path.relpath(best_path, folder),
            "last_checkpoint": os.path.relpath(ckpt.last_model_path, folder),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "fit_seconds": fit_seconds,
            "metrics": metrics,
            "held_out_styles": list(cfg.masks.held_out_styles),
            "config_hash": results_hash(cfg),
        }
        update_manifest(cfg, STAGE, entry, dm.store.digest, dm.store.split_digest)
    return metrics, objects
