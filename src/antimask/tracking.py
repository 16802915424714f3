"""Experiment tracking of a stage: its CSV log in the stage folder, and a W&B run when wandb.enabled."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger

from antimask.runs import run_dir, stage_dir


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
    out: list = [CSVLogger(save_dir=str(stage_dir(cfg, stage)), name="", version="")]
    if cfg.wandb.enabled:
        import wandb  # W&B is optional at run time: only runs that enable it pay for its import
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
