"""Model speed on CPU: training samples/s per stage and size, Lightning overhead, Anti-Mask latency.

``run(quick)`` returns rows {"name", "value", "unit", "note"}; ``python benchmarks/bench_models.py``
prints them as JSON. Batches are synthetic (random faces and features), the nets the paper's sizes
from the config defaults.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from antimask.config import load_config, split_row_for
from antimask.faces.align import LOWER_POINTS
from antimask.models import STAGE_MODULES, AntiMask

FEATURE_DIM = 128  # dlib's descriptor, the default backbone


def _batch(n: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    face = torch.rand(n, 3, size, size, generator=g)
    row = split_row_for(size)
    points = torch.rand(n, 68, 2, generator=g)
    return {"face": face, "upper": face[:, :, :row], "lower": face[:, :, row:], "landmarks": points,
            "lower_landmarks": points[:, LOWER_POINTS], "features": torch.randn(n, FEATURE_DIM, generator=g),
            "identity": torch.arange(n), "row": torch.arange(n)}


def _module(stage: str, size: int, *overrides: str):
    cfg = load_config(None, [f"data.image_size={size}", f"prepare.image_size={max(size, 64)}", *overrides])
    return STAGE_MODULES[stage].from_config(cfg, FEATURE_DIM)


def _plain_epoch(module, batches, skip: int = 0) -> float:
    """Seconds for the batches after the first ``skip`` (warm-up: allocations, Adam state)."""
    opt = module.configure_optimizers()
    module.train()
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == skip:
            start = time.perf_counter()
        loss, _ = module.compute_losses(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


class _EpochTimer(pl.Callback):
    """Times the epoch from its second batch, as _plain_epoch(skip=1) does."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start


def _lightning_epoch(module, batches) -> float:
    timer = _EpochTimer()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[timer])
    # batch_size=None hands the prepared batches over unchanged
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return timer.seconds


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    threads = f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"
    sizes = (64,) if quick else (64, 112, 224)
    steps = 2 if quick else 4
    for size in sizes:
        batch_size = 16 if size < 224 else 8
        batches = [_batch(batch_size, size, i) for i in range(steps + 1)]
        for stage in STAGE_MODULES:
            torch.manual_seed(0)
            module = _module(stage, size)
            seconds = _plain_epoch(module, batches, skip=1)
            rows.append({"name": f"train_{stage}_{size}px", "value": round(steps * batch_size / seconds, 2),
                         "unit": "samples/s", "note": f"CPU, {threads}, batch {batch_size}, paper-size nets"})

    # Lightning epoch vs a plain loop over the same model and batches (mask decoder at 64 px)
    batches = [_batch(16, 64, i) for i in range(5 if quick else 17)]
    plain, light = [], []
    for _ in range(1 if quick else 3):
        torch.manual_seed(0)
        light.append(_lightning_epoch(_module("mask_decoder", 64), batches))
        torch.manual_seed(0)
        plain.append(_plain_epoch(_module("mask_decoder", 64), batches, skip=1))
    rows.append({"name": "lightning_vs_plain_epoch", "value": round(min(light) / min(plain), 3), "unit": "ratio",
                 "note": f"mask decoder 64 px, {len(batches) - 1} timed batches of 16; lightning {min(light):.3f}s, "
                         f"plain {min(plain):.3f}s (best of runs); target <= 1.05"})

    # Anti-Mask per-face latency at 112 px, model only
    size = 112
    enc, dec = _module("encoder", size), _module("mask_decoder", size)
    model = AntiMask(enc.encoder, dec.decoder, size, split_row_for(size), 4)
    face = torch.rand(1, 3, size, size)
    times = []
    with torch.inference_mode():
        for i in range(3 + (10 if quick else 100)):
            start = time.perf_counter()
            model(face)
            if i >= 3:
                times.append((time.perf_counter() - start) * 1000)
    for q in (50, 95):
        rows.append({"name": f"antimask_latency_112px_p{q}", "value": round(float(np.percentile(times, q)), 2),
                     "unit": "ms/face", "note": f"batch 1, CPU, {threads}, {len(times)} runs"})
    return rows


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
