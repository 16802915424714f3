"""GPU speed and memory of the mask decoder stage at the paper's 224 px, per precision (32-true, 16-mixed, bf16-mixed),
for the paper's decoder and the improved model's (experiments/improved.yaml: U-Net that sees the upper crop, SSIM term).

``run(quick)`` returns rows {"name", "value", "unit", "note"}: training samples/s and peak GPU memory
(torch.cuda.max_memory_allocated) per precision, each noting the card. Batches are synthetic (random faces
and dlib-sized features, as in bench_models) and go through the same Lightning Trainer users train with.
Without a GPU it prints so and returns []; ``python benchmarks/bench_gpu.py`` then exits 0.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

SIZE = 224  # the paper's face size
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
# The mask decoder of each model (overrides of the schema defaults); names as in the rows.
MODELS = {"mask_decoder": [],
          "improved_mask_decoder": ["model.decoder=appearance", "model.decoder_channels=128", "model.ssim_weight=10"]}


class _Timer(pl.Callback):
    """Samples/s from the batch after ``warmup`` (cuDNN autotuning, allocator growth, Adam state)."""

    def __init__(self, warmup: int, batch_size: int) -> None:
        self.warmup, self.batch_size, self.start, self.samples = warmup, batch_size, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.samples += self.batch_size

    def rate(self) -> float:
        torch.cuda.synchronize()
        return self.samples / (time.perf_counter() - self.start)


def _one(precision: str, batch_size: int, steps: int, warmup: int, overrides: list[str]) -> tuple[float, int]:
    from bench_models import _batch, _module

    pl.seed_everything(0)
    module = _module("mask_decoder", SIZE, *overrides)
    batches = [_batch(batch_size, SIZE, seed=i) for i in range(4)]
    loader = DataLoader(batches * ((steps + warmup) // 4 + 1), batch_size=None)
    timer = _Timer(warmup, batch_size)
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=steps + warmup,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
                         limit_val_batches=0)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=loader)
    rate = timer.rate()
    return rate, torch.cuda.max_memory_allocated()


def run(quick: bool = False) -> list[dict]:
    if not torch.cuda.is_available():
        print("bench_gpu: no GPU (torch.cuda.is_available() is False); nothing measured")
        return []
    card = torch.cuda.get_device_name(0)
    batch_size, steps, warmup = (16, 10, 3) if quick else (32, 50, 5)
    rows = []
    for model, overrides in MODELS.items():
        for precision in PRECISIONS:
            name = f"gpu/{model}_{SIZE}px/{precision}"
            if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
                rows.append({"name": f"{name}/samples_per_s", "value": None, "unit": "samples/s",
                             "note": f"{card}: no bf16 support"})
                continue
            rate, peak = _one(precision, batch_size, steps, warmup, overrides)
            note = f"{card}, batch {batch_size}, {steps} timed steps after {warmup} warm-up"
            rows.append({"name": f"{name}/samples_per_s", "value": round(rate, 1), "unit": "samples/s", "note": note})
            rows.append({"name": f"{name}/peak_memory", "value": round(peak / 2**20, 1), "unit": "MiB",
                         "note": f"{card}, torch.cuda.max_memory_allocated"})
    return rows


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
    sys.exit(0)
