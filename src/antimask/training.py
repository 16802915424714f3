"""`antimask train STAGE` below the pipeline: config + prepared datamodule -> LightningModule -> Trainer.

Builds the Trainer of a stage (checkpoints, DDP/SLURM plugins, the loggers of ``antimask.tracking``) and
fits one stage into the run folder; the run folder itself (manifest, saved config, reuse, resuming) is
``antimask.runs``, and preparing the data is ``antimask.pipeline``'s job, handed in as ``prepare`` /
``is_prepared``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment

from antimask.backbones import teacher_features
from antimask.config import STAGES, save_config
from antimask.data.datamodule import FaceDataModule
from antimask.guards import FiniteLossGuard
from antimask.models.callbacks import ChannelsLast, ImageGridCallback
from antimask.models.modules import EncoderDistillModule, FaceDecoderModule, MaskDecoderModule
from antimask.runs import (
    results_hash,
    resume_path,
    run_dir,
    stage_checkpoint,
    stage_dir,
    update_manifest,
)
from antimask.tracking import loggers


def _plugins() -> list:
    if SLURMEnvironment.detect():
        # Lightning saves hpc_ckpt_N.ckpt in the stage folder and calls `scontrol requeue` on the signal
        # sbatch sends before the time limit (#SBATCH --signal=SIGUSR1@90); runs.resume_path picks it up.
        return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)]
    return []


class RequeueAfterValidation(pl.Callback):
    """SLURM's requeue signal that lands during an epoch's validation is handled at that epoch's end.

    Lightning's handler saves the hpc checkpoint wherever the signal lands. From a checkpoint taken mid-validation
    the resumed fit goes on past that validation, so the epoch's validation metrics never reach metrics.csv or
    the best-checkpoint choice (the validation row of that epoch was missing, measured). So while the fit
    validates, the signal is held, and Lightning's own handler (hpc checkpoint, ``scontrol requeue``) runs at the
    epoch's end, or at the first validation batch after ``max_wait_s`` (the job is killed a fixed time after the
    signal: a late checkpoint beats none). Elsewhere it runs at once, as Lightning has it. Lightning's teardown
    puts back the handlers that were there before the fit."""

    def __init__(self, max_wait_s: float, signum: int = signal.SIGUSR1) -> None:
        self.max_wait_s, self.signum = max_wait_s, signum
        self.trainer: Optional[pl.Trainer] = None
        self.handler: Optional[Callable] = None
        self.held_at: Optional[float] = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        handler = signal.getsignal(self.signum)  # Lightning registers its handler just before the fit runs
        if callable(handler) and self.max_wait_s > 0:
            self.trainer, self.handler, self.held_at = trainer, handler, None
            signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.trainer.validating:  # registered only once on_train_start has the trainer
            self.held_at = self.held_at or time.monotonic()
        else:
            self.handler(signum, frame)

    def _release(self) -> None:
        self.held_at = None
        self.handler(self.signum, None)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.held_at is not None and time.monotonic() - self.held_at >= self.max_wait_s:
            self._release()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.held_at is not None:
            self._release()


STAMP_KEY = "antimask"  # the checkpoint entry ConfigStamp writes


def scalar_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The trainer's logged scalars (what the manifest records for a stage)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


class ConfigStamp(pl.Callback):
    """Writes into each of a stage's checkpoints (last, best, SLURM's hpc) the results hash of the config it runs
    under, so train-all can tell whether an interrupted stage may be resumed under the config it has now, and the
    metrics logged so far, for the manifest of a stage whose job was killed after its last checkpoint."""

    def __init__(self, results_hash: str):
        self.results_hash = results_hash

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[STAMP_KEY] = {"results_hash": self.results_hash, "metrics": scalar_metrics(trainer)}


def _checkpoint_head(path: str | Path) -> dict:
    """A Lightning checkpoint memory-mapped: its epoch, loops and stamp are read, its weights are not."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _stamp(path: str | Path) -> dict:
    """What ConfigStamp wrote into a checkpoint; empty for a checkpoint from before the stamp, or one torch cannot
    read (the resumed fit then says what is wrong with it)."""
    try:
        return _checkpoint_head(path).get(STAMP_KEY) or {}
    except Exception:  # noqa: BLE001 - unreadable for any reason: Lightning's own load reports it
        return {}


def checkpoint_results_hash(path: str | Path) -> Optional[str]:
    """The results hash a checkpoint was written under (ConfigStamp); None when it has no stamp."""
    return _stamp(path).get("results_hash")


def fitted_metrics(trainer: pl.Trainer, resumed: Optional[str]) -> dict[str, float]:
    """The metrics of a finished fit. A fit resumed from a checkpoint written at its last epoch (the job was killed
    before the manifest was written) trains nothing and logs nothing: the checkpoint's stamped metrics stand in."""
    metrics = scalar_metrics(trainer)
    if not metrics and resumed:
        metrics = dict(_stamp(resumed).get("metrics", {}))
    return metrics


def _strategy(trainer_cfg: DictConfig) -> str:
    """DDP (one process per device, launched by Lightning, torchrun or srun) whenever there is more than one."""
    if trainer_cfg.strategy != "auto":
        return trainer_cfg.strategy
    devices = trainer_cfg.devices
    many = (isinstance(devices, int) and devices > 1) or (not isinstance(devices, (int, str)) and len(devices) > 1) \
        or (isinstance(devices, str) and devices.isdigit() and int(devices) > 1)
    return "ddp" if many or trainer_cfg.num_nodes > 1 else "auto"


def build_trainer(cfg: DictConfig, stage: str, callbacks: Optional[list] = None,
                  resumed: Optional[tuple[int, int]] = None, **overrides: Any) -> pl.Trainer:
    """The Lightning Trainer for one stage, built from ``cfg.trainer`` and ``cfg.stages.<stage>``; ``resumed``:
    (epoch, logged step) of the checkpoint the fit resumes from (its log keeps the rows up to them)."""
    trainer_cfg, stage_cfg = cfg.trainer, cfg.stages[stage]
    best = ModelCheckpoint(dirpath=str(stage_dir(cfg, stage) / "checkpoints"), filename="best", monitor="val/loss",
                           mode="min", save_last=True, save_top_k=1)
    extra = [best, FiniteLossGuard(), ConfigStamp(results_hash(cfg)),
             ImageGridCallback(every_n_epochs=trainer_cfg.image_log_every_n_epochs, split_row=None)]
    if trainer_cfg.channels_last:
        extra.append(ChannelsLast())
    if SLURMEnvironment.detect():
        extra.append(RequeueAfterValidation(trainer_cfg.requeue_max_wait_s))
    kwargs = dict(
        default_root_dir=str(stage_dir(cfg, stage)), max_epochs=stage_cfg.max_epochs,
        accelerator=trainer_cfg.accelerator, devices=trainer_cfg.devices, num_nodes=trainer_cfg.num_nodes,
        strategy=_strategy(trainer_cfg), precision=trainer_cfg.precision,
        gradient_clip_val=trainer_cfg.gradient_clip_val, gradient_clip_algorithm=trainer_cfg.gradient_clip_algorithm,
        accumulate_grad_batches=trainer_cfg.accumulate_grad_batches, sync_batchnorm=trainer_cfg.sync_batchnorm,
        log_every_n_steps=trainer_cfg.log_every_n_steps, deterministic=trainer_cfg.deterministic,
        benchmark=bool(trainer_cfg.cudnn_benchmark and not trainer_cfg.deterministic),
        fast_dev_run=trainer_cfg.fast_dev_run, check_val_every_n_epoch=trainer_cfg.check_val_every_n_epoch,
        logger=loggers(cfg, stage, resumed), callbacks=extra + list(callbacks or []), plugins=_plugins(),
        enable_model_summary=False,
    )
    for limit in ("limit_train_batches", "limit_val_batches"):
        if stage_cfg[limit] is not None:
            kwargs[limit] = stage_cfg[limit]
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def build_module(cfg: DictConfig, stage: str, feature_dim: int, folder: Path) -> pl.LightningModule:
    if stage == "face_decoder":
        module = FaceDecoderModule.from_config(cfg, feature_dim)
    elif stage == "mask_decoder":
        module = MaskDecoderModule.from_config(cfg, feature_dim)
        if cfg.model.init_from_face_decoder:
            module.init_from_face_decoder(stage_checkpoint(folder, "face_decoder"))
    elif stage == "encoder":
        module = EncoderDistillModule.from_config(cfg, feature_dim)
    else:
        raise ValueError(f"unknown stage '{stage}'; one of {', '.join(STAGES)}")
    return compile_networks(module, cfg.trainer)


def compile_networks(module: pl.LightningModule, trainer_cfg: DictConfig) -> pl.LightningModule:
    """trainer.compile: each network of the module (its children with parameters) compiled in place by
    torch.compile, so its state dict and checkpoints keep their names; the first steps wait for the compiler."""
    if trainer_cfg.compile:
        for child in module.children():
            if next(child.parameters(), None) is not None:
                child.compile(mode=str(trainer_cfg.compile_mode))
    return module


def checkpoint_progress(path: str) -> tuple[int, int]:
    """(epoch, logged step) of a Lightning checkpoint. The logged step is the loop's count of batches that
    stepped, which Lightning's loggers write as "step"; global_step counts optimizer steps (twice as many under
    the adversarial model's two optimisers)."""
    ckpt = _checkpoint_head(path)
    loop = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(ckpt["epoch"]), int(loop.get("_batches_that_stepped", ckpt["global_step"]))


def stage_trainer(cfg: DictConfig, stage: str, callbacks: Optional[list] = None) -> tuple[pl.Trainer, Optional[str]]:
    """The stage's Trainer and the checkpoint its fit resumes from (``trainer.ckpt_path``, or SLURM's hpc
    checkpoint; None for a fresh fit), with the stage's log kept up to that checkpoint."""
    resume = resume_path(cfg, stage, under_slurm=SLURMEnvironment.detect())
    return build_trainer(cfg, stage, callbacks, resumed=checkpoint_progress(resume) if resume else None), resume


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 6 * 3600, poll: float = 2.0) -> None:
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(poll)


def train_stage(cfg: DictConfig, stage: str, datamodule: Optional[FaceDataModule] = None,
                prepare: Optional[Callable[[], Any]] = None,
                is_prepared: Optional[Callable[[], bool]] = None,
                callbacks: Optional[list] = None) -> tuple[dict, dict]:
    """Train one stage on a prepared store; returns (metrics, objects) so tests can assert on both.

    ``prepare`` runs on global rank 0 only, before the data is opened; the other ranks wait until
    ``is_prepared()`` (the pipeline passes both; without them the store must be prepared already).
    ``callbacks`` join the stage's own (benchmarks time the steps with one).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; one of {', '.join(STAGES)}")
    pl.seed_everything(cfg.run.seed, workers=True)
    folder = run_dir(cfg)
    dm = datamodule or FaceDataModule(cfg, stage=stage)
    trainer, resume = stage_trainer(cfg, stage, callbacks)
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, folder)
        if prepare is not None:
            prepare()
    elif is_prepared is not None:  # processes started by torchrun/SLURM all run this; only rank 0 may write the store
        wait_until(is_prepared, f"rank 0 to prepare {cfg.data.store}")
    dm.setup("fit")
    if dm.features is None:
        features = teacher_features(cfg, dm.store)
        if features is not None:  # else the stage says which features are missing
            dm.attach_features(features)
    module = build_module(cfg, stage, dm.feature_dim, folder)
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)  # never unpickle code on resume
    metrics = fitted_metrics(trainer, resume)
    if trainer.is_global_zero and not cfg.trainer.fast_dev_run:
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path or ckpt.last_model_path
        entry = {
            "status": "done",
            "best_checkpoint": os.path.relpath(best, folder),
            "last_checkpoint": os.path.relpath(ckpt.last_model_path, folder),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "fit_seconds": round(time.perf_counter() - started, 1),  # this call only; a resumed stage adds up
            "metrics": metrics,
            "feature_dim": dm.feature_dim,
            "config_hash": results_hash(cfg),
            "backbone": cfg.backbone.name,
        }
        update_manifest(cfg, stage, entry, dm.store.digest, dm.store.split_digest)
    return metrics, {"trainer": trainer, "module": module, "datamodule": dm}
