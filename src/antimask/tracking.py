"""Experiment tracking of a stage: its CSV log in the stage folder, and a W&B run when wandb.enabled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from antimask.files import atomic_write_csv
from antimask.runs import read_metrics, run_dir, stage_dir


class _ResumedWriter(ExperimentWriter):
    """Lightning's CSV writer, except that a resumed fit's metrics.csv is cut in place to the rows its checkpoint
    holds and the new rows are appended after them. ``resumed``: the checkpoint's epoch and logged step (the
    loop's count of batches that stepped); the rows kept are those of its epoch or earlier logged before that
    step: a batch's row is written before the count goes up, and the resumed fit logs its first batch at the
    checkpoint's count, so a row at that step came after the checkpoint (a SLURM hpc checkpoint taken between the
    two). Lightning's writer deletes the file when the fit starts, so a resumed fit stopped again before its end
    (a second SLURM preemption, a crash) lost every epoch before the resume."""

    def __init__(self, log_dir: str, resumed: Optional[tuple[int, int]]) -> None:
        self.resumed = resumed
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self.resumed is None or not path.is_file():
            return super()._check_log_dir_exists()
        epoch, step = self.resumed
        kept = [r for r in read_metrics(path) if r.get("epoch") not in ("", None) and int(r["epoch"]) <= epoch
                and r.get("step") not in ("", None) and int(r["step"]) < step]
        if not kept:
            return super()._check_log_dir_exists()
        header = sorted({k for r in kept for k in r if k is not None})  # Lightning keeps its columns sorted
        atomic_write_csv(path, [{k: r.get(k) or "" for k in header} for r in kept])
        self.metrics_keys = header  # save() appends under this header, and rewrites it when a new key comes


class StageCSVLogger(CSVLogger):
    """The stage folder's metrics.csv; ``resumed``: (epoch, logged step) of the checkpoint a resumed fit starts
    from, whose rows the file keeps (``_ResumedWriter``)."""

    def __init__(self, save_dir: str, resumed: Optional[tuple[int, int]] = None) -> None:
        super().__init__(save_dir=save_dir, name="", version="")
        self.resumed = resumed

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumedWriter(self.log_dir, self.resumed)
        return self._experiment


def _wandb_mode(cfg: DictConfig) -> str:
    """online only with credentials (WANDB_API_KEY or a wandb.ai netrc entry): a run never waits on a network."""
    if cfg.wandb.mode:
        return cfg.wandb.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    return "online" if has_key else "offline"


def loggers(cfg: DictConfig, stage: str, resumed: Optional[tuple[int, int]] = None) -> list:
    """The stage's CSV log (kept up to ``resumed``, the (epoch, logged step) a fit resumes from) and its W&B run
    when enabled."""
    out: list = [StageCSVLogger(str(stage_dir(cfg, stage)), resumed)]
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
