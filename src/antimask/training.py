"""`antimask train STAGE`: config -> datamodule -> LightningModule -> Trainer, for one stage.

A run folder holds every stage of one experiment::

    RUN/config.yaml  RUN/manifest.json
    RUN/<stage>/checkpoints/{best,last}.ckpt  RUN/<stage>/metrics.csv  RUN/<stage>/images/

Stages hand over through ``manifest.json`` (checkpoint paths, store digest, config hash, metrics),
never through an implicit "latest" lookup. Only rank 0 writes the manifest.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from antimask.config import config_hash, save_config
from antimask.files import atomic_write_json, read_json

STAGES = ("face_decoder", "mask_decoder", "encoder")


class ManifestError(RuntimeError):
    """A run folder whose manifest lacks a stage another stage needs, or points outside the run."""


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.dir)


def stage_dir(cfg: DictConfig, stage: str) -> Path:
    return run_dir(cfg) / stage


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    return read_json(path) if path.exists() else {"stages": {}}


def safe_path(folder: str | Path, relative: str) -> Path:
    """A path from a manifest, resolved inside the run folder; anything pointing outside is refused."""
    root = Path(folder).resolve()
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise ManifestError(f"{Path(folder) / 'manifest.json'}: path '{relative}' points outside the run folder {root}")
    return path


def run_config(folder: str | Path, overrides: Optional[list[str]] = None) -> DictConfig:
    """The resolved config a run was trained with (RUN/config.yaml), with ``key=value`` overrides."""
    from antimask.config import load_config

    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {folder} is not a trained run folder "
                                "(train it with `antimask train-all run.dir=...`)")
    return load_config(path, list(overrides or []))


def stage_checkpoint(folder: str | Path, stage: str, which: str = "best") -> Path:
    """The checkpoint a finished stage recorded in the manifest."""
    manifest = read_manifest(folder)
    entry = manifest.get("stages", {}).get(stage)
    if not entry or entry.get("status") != "done":
        raise ManifestError(
            f"{Path(folder) / 'manifest.json'}: stage '{stage}' has not finished in this run; "
            f"train it first with `antimask train {stage} run.dir={folder}`")
    path = safe_path(folder, entry[f"{which}_checkpoint"])
    if not path.exists():
        raise ManifestError(f"{path}: checkpoint of stage '{stage}' listed in the manifest is missing")
    return path


def update_manifest(cfg: DictConfig, stage: str, entry: dict, store_digest: str,
                    split_digest: Optional[str] = None) -> dict:
    folder = run_dir(cfg)
    manifest = read_manifest(folder)
    manifest.update({"config_hash": config_hash(cfg), "store": str(Path(cfg.data.store)), "store_digest": store_digest})
    if split_digest:
        manifest["split_digest"] = split_digest
    manifest.setdefault("stages", {})[stage] = entry
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


def _wandb_mode(cfg: DictConfig) -> str:
    """online only with credentials (WANDB_API_KEY or a wandb.ai netrc entry): a run never waits on a network."""
    if cfg.wandb.mode:
        return cfg.wandb.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    return "online" if has_key else "offline"


def loggers(cfg: DictConfig, stage: str) -> list:
    from pytorch_lightning.loggers import CSVLogger

    folder = stage_dir(cfg, stage)
    out: list = [CSVLogger(save_dir=str(folder), name="", version="")]
    if cfg.wandb.enabled:
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        if wandb.run is not None:
            # The previous stage of this train-all: WandbLogger would reuse its run, so close it; each stage
            # is its own run (job_type = stage) in the train-all's group.
            wandb.finish()
        name = cfg.run.name or run_dir(cfg).name
        out.append(WandbLogger(project=cfg.wandb.project, entity=cfg.wandb.entity, name=f"{name}/{stage}",
                               group=cfg.wandb.group or name, job_type=stage, tags=list(cfg.wandb.tags),
                               save_dir=str(run_dir(cfg)), mode=_wandb_mode(cfg),
                               # Under `wandb agent` every stage logs to the agent's run (WANDB_RUN_ID).
                               **({"resume": "allow"} if os.environ.get("WANDB_SWEEP_ID") else {})))
    return out


def _plugins(cfg: DictConfig) -> list:
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        # Lightning saves hpc_ckpt_N.ckpt in the stage folder and calls `scontrol requeue` on the signal
        # sbatch sends before the time limit (#SBATCH --signal=SIGUSR1@90); _resume_path picks it up.
        return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)]
    return []


def _strategy(t: DictConfig) -> str:
    """DDP (one process per device, launched by Lightning, torchrun or srun) whenever there is more than one."""
    if t.strategy != "auto":
        return t.strategy
    devices = t.devices
    many = (isinstance(devices, int) and devices > 1) or (not isinstance(devices, (int, str)) and len(devices) > 1) \
        or (isinstance(devices, str) and devices.isdigit() and int(devices) > 1)
    return "ddp" if many or t.num_nodes > 1 else "auto"


def build_trainer(cfg: DictConfig, stage: str, callbacks: Optional[list] = None, **overrides: Any):
    """The Lightning Trainer for one stage, built from ``cfg.trainer`` and ``cfg.stages.<stage>``."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from antimask.models.callbacks import ImageGridLogger
    from antimask.guards import FiniteLossGuard

    t, s = cfg.trainer, cfg.stages[stage]
    folder = stage_dir(cfg, stage)
    best = ModelCheckpoint(dirpath=str(folder / "checkpoints"), filename="best", monitor="val/loss", mode="min",
                           save_last=True, save_top_k=1)
    extra = [best, FiniteLossGuard(),
             ImageGridLogger(every_n_epochs=t.image_log_every_n_epochs, split_row=None)]
    kwargs = dict(
        default_root_dir=str(folder), max_epochs=s.max_epochs, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=_strategy(t), precision=t.precision, gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm=t.gradient_clip_algorithm, accumulate_grad_batches=t.accumulate_grad_batches,
        sync_batchnorm=t.sync_batchnorm,
        log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic, fast_dev_run=t.fast_dev_run,
        check_val_every_n_epoch=t.check_val_every_n_epoch, logger=loggers(cfg, stage),
        callbacks=extra + list(callbacks or []), plugins=_plugins(cfg), enable_model_summary=False,
    )
    if s.limit_train_batches is not None:
        kwargs["limit_train_batches"] = s.limit_train_batches
    if s.limit_val_batches is not None:
        kwargs["limit_val_batches"] = s.limit_val_batches
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def build_module(cfg: DictConfig, stage: str, feature_dim: int, folder: Path):
    from antimask.models.modules import EncoderDistillModule, FaceDecoderModule, MaskDecoderModule

    if stage == "face_decoder":
        return FaceDecoderModule.from_config(cfg, feature_dim)
    if stage == "mask_decoder":
        module = MaskDecoderModule.from_config(cfg, feature_dim)
        if cfg.model.init_from_face_decoder:
            module.init_from_face_decoder(stage_checkpoint(folder, "face_decoder"))
        return module
    if stage == "encoder":
        return EncoderDistillModule.from_config(cfg, feature_dim)
    raise ValueError(f"unknown stage '{stage}'; one of {', '.join(STAGES)}")


def _resume_path(cfg: DictConfig, stage: str) -> Optional[str]:
    """trainer.ckpt_path: None, "last" (the newer of last.ckpt and a SLURM hpc_ckpt_N.ckpt), "hpc" or a file."""
    wanted = cfg.trainer.ckpt_path
    folder = stage_dir(cfg, stage)
    hpc = sorted(folder.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if wanted is None:
        # Lightning restores hpc_ckpt_N.ckpt itself when ckpt_path is None under SLURM; say so explicitly.
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        return str(hpc[-1]) if hpc and SLURMEnvironment.detect() else None
    if wanted == "last":
        last = folder / "checkpoints" / "last.ckpt"
        found = [p for p in (hpc[-1:] + [last]) if p.exists()]
        # A requeued job's hpc checkpoint is written mid-epoch, after the last epoch-end last.ckpt.
        return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None
    if wanted == "hpc":
        return str(hpc[-1]) if hpc else None
    return str(wanted)


def _read_rows(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def torch_load_epoch(path: str) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def _prepend_history(path: Path, history: list[dict], resumed_epoch: int) -> None:
    """Lightning's CSVLogger starts metrics.csv afresh on resume; keep the epochs before the resume."""
    from antimask.files import atomic_write_csv

    kept = [r for r in history if r.get("epoch", "") != "" and int(r["epoch"]) <= resumed_epoch]
    atomic_write_csv(path, kept + _read_rows(path))


def _wait_until(ready, what: str, timeout: float = 6 * 3600, poll: float = 2.0) -> None:
    import time

    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(poll)


# Keys that do not change what a stage learns; a finished stage is reused when only these differ.
_NOT_RESULTS = ("trainer.ckpt_path", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.accelerator",
                "trainer.log_every_n_steps", "trainer.image_log_every_n_epochs", "data.num_workers",
                "data.pin_memory", "data.persistent_workers", "prepare.workers", "augment.workers", "wandb", "run.name",
                "run.reuse", "run.dir", "eval")


def results_hash(cfg: DictConfig) -> str:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_RESULTS:
        *parents, leaf = key.split(".")
        holder = plain
        for part in parents:
            holder = holder.get(part, {})
        holder.pop(leaf, None)
    return config_hash(OmegaConf.create(plain))


def _trained_before_new_keys(cfg: DictConfig, folder: Path, trained_hash: str) -> bool:
    """A stage finished before keys were added to the schema has a hash over fewer keys. It still counts
    as trained with ``cfg`` when the run's saved config is the one it was trained with (same hash), ``cfg``
    agrees with it on every key it has, and leaves each key it lacks at the schema's default."""
    from omegaconf import OmegaConf

    from antimask.config import Config

    path = folder / "config.yaml"
    saved = OmegaConf.load(path) if path.is_file() else None
    if saved is None or results_hash(saved) != trained_hash:
        return False

    def restrict(mine: dict, theirs: dict, default: dict) -> Optional[dict]:
        """``mine`` on the keys of ``theirs``; None if a key ``theirs`` lacks is away from its default."""
        kept = {}
        for key, value in mine.items():
            if key not in theirs:
                if default.get(key, object()) != value:
                    return None
            elif isinstance(value, dict) and isinstance(theirs[key], dict):
                kept[key] = restrict(value, theirs[key], default.get(key) or {})
                if kept[key] is None:
                    return None
            else:
                kept[key] = value
        return kept

    kept = restrict(OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_container(saved, resolve=True),
                    OmegaConf.to_container(OmegaConf.structured(Config), resolve=True))
    return kept is not None and results_hash(OmegaConf.create(kept)) == trained_hash


def train_stage(cfg: DictConfig, stage: str, datamodule=None) -> tuple[dict, dict]:
    """Train one stage; returns (metrics, objects) so tests can assert on both."""
    import pytorch_lightning as pl

    from antimask.data.datamodule import FaceDataModule

    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; one of {', '.join(STAGES)}")
    pl.seed_everything(cfg.run.seed, workers=True)
    folder = run_dir(cfg)
    dm = datamodule or FaceDataModule(cfg, stage=stage)
    trainer = build_trainer(cfg, stage)
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, folder)
        dm.prepare_data()  # Lightning calls it again inside fit; by then it finds everything done
    else:  # processes started by torchrun/SLURM all run this line; only rank 0 may write the store
        _wait_until(dm.is_prepared, f"rank 0 to prepare {cfg.data.store}")
    dm.setup("fit")
    module = build_module(cfg, stage, dm.feature_dim, folder)
    resume = _resume_path(cfg, stage)
    history = _read_rows(stage_dir(cfg, stage) / "metrics.csv") if resume else []
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)  # never unpickle code on resume
    if history and trainer.is_global_zero:
        _prepend_history(stage_dir(cfg, stage) / "metrics.csv", history, torch_load_epoch(resume))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
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


_REUSE_MUST_MATCH = ("data.store", "data.image_size", "data.split_row", "backbone.name", "backbone.weights",
                     "backbone.layer")


def reuse_stage(cfg: DictConfig, stage: str, source: Path) -> dict:
    """Copy another run's finished stage (checkpoint, loss history, manifest entry) into this run."""
    import shutil

    from omegaconf import OmegaConf

    folder = run_dir(cfg)
    theirs = run_config(source)
    for key in _REUSE_MUST_MATCH:
        a, b = OmegaConf.select(cfg, key), OmegaConf.select(theirs, key)
        if key == "data.store":
            a, b = Path(a).resolve(), Path(b).resolve()
        if a != b:
            raise ManifestError(f"run.reuse.{stage}={source}: that run has {key}={b}, this run {a}; "
                                "a stage can only be reused on the same store, face size and backbone")
    best = stage_checkpoint(source, stage)
    entry = dict(read_manifest(source)["stages"][stage])
    target = stage_dir(cfg, stage)
    (target / "checkpoints").mkdir(parents=True, exist_ok=True)
    copied = target / "checkpoints" / "best.ckpt"
    shutil.copy2(best, copied.with_suffix(".ckpt.part"))
    copied.with_suffix(".ckpt.part").replace(copied)
    if (source / stage / "metrics.csv").is_file():
        shutil.copy2(source / stage / "metrics.csv", target / "metrics.csv")
    entry.update(best_checkpoint=os.path.relpath(copied, folder), last_checkpoint=os.path.relpath(copied, folder),
                 reused_from=str(source), config_hash=results_hash(cfg))
    save_config(cfg, folder)
    print(f"[train-all] {stage}: reused from {source} ({entry['best_checkpoint']})")
    theirs = read_manifest(source)
    return update_manifest(cfg, stage, entry, theirs.get("store_digest", ""), theirs.get("split_digest"))


def train_all(cfg: DictConfig, evaluate: bool = True) -> dict:
    """prepare -> augment -> features -> face decoder -> mask decoder -> encoder -> evaluation.

    Finished stages (same results-relevant config) are skipped; an interrupted stage resumes from its
    last checkpoint. Returns the manifest.
    """
    from omegaconf import OmegaConf

    folder = run_dir(cfg)
    done = read_manifest(folder).get("stages", {})
    want = results_hash(cfg)
    for stage in STAGES:
        entry = done.get(stage, {})
        if stage in cfg.run.reuse and not entry.get("reused_from"):
            reuse_stage(cfg, stage, Path(cfg.run.reuse[stage]))
            continue
        if entry.get("status") == "done":
            if entry.get("config_hash") != want and not _trained_before_new_keys(cfg, folder, entry.get("config_hash")):
                raise ManifestError(
                    f"{folder / 'manifest.json'}: stage '{stage}' was trained with another config; use a new "
                    f"run.dir, or delete {folder / stage} to retrain it")
            print(f"[train-all] {stage}: done before, skipped ({entry['best_checkpoint']})")
            continue
        stage_cfg = OmegaConf.merge(cfg, {"trainer": {"ckpt_path": "last"}})
        print(f"[train-all] {stage}: training (resumes from its last checkpoint if one exists)")
        train_stage(stage_cfg, stage)
    manifest = read_manifest(folder)
    if evaluate and not cfg.trainer.fast_dev_run and _is_rank_zero():
        from antimask.evaluation.evaluate import evaluate_run

        started = time.perf_counter()
        result = evaluate_run(folder, split=cfg.eval.split)
        manifest = read_manifest(folder)
        print(f"[train-all] report: {result['paths']['report']} ({time.perf_counter() - started:.0f} s)")
    if _is_rank_zero():
        print(f"[train-all] model: {folder / 'manifest.json'} (encoder + mask decoder checkpoints); "
              f"use it with `antimask predict {folder} PHOTO --out OUT`")
    return manifest


def _is_rank_zero() -> bool:
    from pytorch_lightning.utilities import rank_zero_only

    return rank_zero_only.rank == 0
