"""The test split's held-out masks through each run's segmenter, as drawn and through a worse camera (the
module's DEGRADED: Gaussian blur sigma 1, half resolution): what a segmenter trained without masks.augment loses.

python docs/results/masked_faces/segmenter_robustness.py RUN [RUN ...] [key=value ...]  (data.* of the runs' store)
"""

from __future__ import annotations

import json
import sys

import pytorch_lightning as pl

from antimask.data.masked import MaskedFaceDataModule
from antimask.models.segmenter import load_segmenter
from antimask.runs import run_config, stage_checkpoint

runs = [a for a in sys.argv[1:] if "=" not in a]
overrides = [a for a in sys.argv[1:] if "=" in a]
for run in runs:
    cfg = run_config(run, overrides)
    module = load_segmenter(stage_checkpoint(run, "segmenter"), int(cfg.data.image_size))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    tested = trainer.test(module, datamodule=MaskedFaceDataModule(cfg), verbose=False)[0]
    print(json.dumps({"run": run, **{k: round(float(v), 4) for k, v in tested.items() if "iou" in k}}))
