"""`antimask predict` speed and face finding on CPU, on real masked photos (masked_real).

``run(quick)`` returns rows {"name", "value", "unit", "note"}; ``python benchmarks/bench_predict.py
[--quick]`` prints them as JSON. The model is an untrained run at the config defaults (64 px, the
default decoder and encoder sizes, dlib's 128-d features): its speed, not its quality, is measured.
Rows: latency p50/p95 per aligned face (model only, batch 1) and per photo end to end (detection,
alignment, model, paste-back, PNG writing), and the share of a fixed 50-photo sample (every 20th
photo in name order) in which each detection approach alone, and the full cascade, finds a face.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from antimask import inference
from antimask.config import load_config, save_config
from antimask.faces import finder
from antimask.faces.photos import Rejected, load_rgb

REPO = Path(__file__).resolve().parents[1]
FEATURE_DIM = 128


def data_dir() -> Path:
    root = Path(os.environ.get("ANTIMASK_DATA", REPO.parent / "shared" / "data"))
    path = root / "masked_real"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: masked photos not found (set ANTIMASK_DATA)")
    return path


def sample(folder: Path, n: int = 50) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")[::20][:n]


def untrained_run(folder: Path, overrides: list[str] | None = None) -> Path:
    """A run folder (config.yaml, manifest.json, two stage checkpoints) holding untrained nets."""
    import pytorch_lightning as pl

    from antimask.models.modules import EncoderDistillModule, MaskDecoderModule

    torch.manual_seed(0)
    cfg = load_config(None, [f"run.dir={folder}"] + list(overrides or []))
    manifest = {"stages": {}}
    for module in (EncoderDistillModule.from_config(cfg, FEATURE_DIM), MaskDecoderModule.from_config(cfg, FEATURE_DIM)):
        rel = f"{module.STAGE}/checkpoints/best.ckpt"
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(folder))
        trainer.strategy.connect(module)
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(folder / rel))
        manifest["stages"][module.STAGE] = {"status": "done", "best_checkpoint": rel, "last_checkpoint": rel}
    save_config(cfg, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _pcts(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def run(quick: bool = False) -> list[dict]:
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    photos = sample(data_dir(), 12 if quick else 50)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = untrained_run(tmp / "run")
        cfg = inference.run_config(run_dir)
        model = inference.load_model(run_dir, cfg)
        size = model.image_size

        face = torch.rand(1, 3, size, size)
        times = []
        with torch.inference_mode():
            for _ in range(3):
                model(face)
            for _ in range(20 if quick else 100):
                t = time.perf_counter()
                model(face)
                times.append((time.perf_counter() - t) * 1000)
        p50, p95 = _pcts(times)
        note = f"{size} px aligned face, batch 1, untrained default-size nets, {torch.get_num_threads()} threads"
        rows += [{"name": "predict/model_per_face_p50", "value": round(p50, 2), "unit": "ms", "note": note},
                 {"name": "predict/model_per_face_p95", "value": round(p95, 2), "unit": "ms", "note": note}]

        times, found = [], 0
        for photo in photos:
            t = time.perf_counter()
            result = inference.predict(run_dir, [photo], tmp / "out", log=lambda msg: None)
            times.append((time.perf_counter() - t) * 1000)
            found += result[str(photo)]["status"] == "ok"
        p50, p95 = _pcts(times)
        note = (f"{len(photos)} masked_real photos (long side <= 640 px), one predict call each: model load, "
                "detection cascade, alignment, model, paste-back, two PNGs")
        rows += [{"name": "predict/photo_end_to_end_p50", "value": round(p50, 1), "unit": "ms", "note": note},
                 {"name": "predict/photo_end_to_end_p95", "value": round(p95, 1), "unit": "ms", "note": note},
                 {"name": "predict/photos_completed", "value": round(100 * found / len(photos), 1), "unit": "%",
                  "note": note}]

        opts = cfg.predict
        images = [load_rgb(p, int(cfg.prepare.max_pixels)) for p in photos]
        approaches = [["hog"], ["hog", "cnn"], ["hog_low"], ["crop"], list(opts.detectors)]
        if not quick:
            approaches.insert(2, ["cnn"])
        for dets in approaches:
            t = time.perf_counter()
            hits = sum(_has_face(im, opts, size, model.split_row, dets) for im in images)
            seconds = time.perf_counter() - t
            rows.append({"name": f"predict/detect_rate/{'+'.join(dets)}", "value": round(100 * hits / len(images), 1),
                         "unit": "%", "note": f"{hits}/{len(images)} photos with a verified face (upper-landmark "
                         f"residual <= {opts.max_residual}); {1000 * seconds / len(images):.0f} ms/photo"})
    return rows


def _has_face(image, opts, size: int, split_row: int, detectors: list[str]) -> bool:
    try:
        return bool(finder.find_faces(image, opts, size, split_row, detectors=detectors).faces)
    except Rejected:
        return False


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=1))
