"""Training guards: a non-finite loss stops the run before it can reach the weights."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the batch's store rows."""


class FiniteLossGuard(pl.Callback):
    """Raise before backward when the loss is not finite, so no NaN reaches an optimizer step.

    The checkpoints written so far (best.ckpt, last.ckpt) are left as they are: the last good state.
    """

    def __init__(self) -> None:
        self._rows: list[int] = []
        self._batch_idx = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        rows = batch.get("row") if isinstance(batch, dict) else None
        self._rows = rows.tolist() if isinstance(rows, torch.Tensor) else []
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        value = float(loss.detach().float().item())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"loss is {value} at global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                f"{self._batch_idx}); store rows in the batch: {self._rows}. Training stopped; the last good "
                f"checkpoints are kept in {trainer.default_root_dir}/checkpoints")
