"""GPU speed of the paper's path on real faces: the feature cache of the paper's backbone (VGG-Face fc7), then
each stage's training steps through `antimask train`'s own path (the store, its loader, the Trainer) beside a
plain loop over the same loader, at batch 32 and 256, bf16-mixed on a GPU (32-true on the CPU), 224 px.

``python benchmarks/bench_gpu.py [--quick] [--store DIR] [--weights FILE] [--set KEY=VALUE ...]`` prints the rows
as JSON, on the CPU too (a dry run; ``--quick``: a 16-photo 64 px store, small batches, two timed steps).
``python -m benchmarks.run --only gpu`` writes them to docs/benchmarks.md on a GPU; without one ``run()``
measures nothing, so the GPU figures recorded there stay. Without ``--store`` a store is prepared from
$ANTIMASK_DATA/utkface (dlib); ``--make-store DIR`` only prepares one (benchmarks/device/ carries it to the GPU
machine, which has no dlib). VGG-Face's weights cannot be downloaded: without ``--weights`` the same architecture
runs on random weights (as fast), and the rows say so. Every switch of the schema stays at its default unless
``--set`` changes it (e.g. ``--set trainer.compile=true``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "experiments" / "paper.yaml"
# (row name, stage, overrides of experiments/paper.yaml): the paper's three stages, the improved model's U-Net
# mask decoder (experiments/improved_rows.yaml) and its timm encoder
STAGE_RUNS = [
    ("face_decoder", "face_decoder", []),
    ("mask_decoder", "mask_decoder", []),
    ("improved_mask_decoder", "mask_decoder", ["model.decoder=appearance", "model.decoder_channels=128",
                                               "model.ssim_weight=10"]),
    ("encoder_vgg", "encoder", []),
    ("encoder_timm_resnet18", "encoder", ["model.encoder=timm:resnet18"]),
]
# (row name, overrides): issue 22's switches, each turned from its default alone, for the paper mask decoder at the
# largest batch through train_stage; beside the same stage's antimask_train row, which has every default.
# torch.compile last: its compile takes the longest, and a run stopped by the time limit keeps the rows before it
SWITCHES = [
    ("channels_last_off", ["trainer.channels_last=false"]),
    ("cudnn_benchmark_off", ["trainer.cudnn_benchmark=false"]),
    ("fused_adam_off", ["stages.mask_decoder.fused_adam=false"]),
    ("upsample_pixel_shuffle", ["model.upsample=pixel_shuffle"]),
    ("upsample_resize_conv", ["model.upsample=resize_conv"]),
    ("device_resident", ["data.device_resident=true"]),
    ("compile", ["trainer.compile=true"]),
]
# issue 22's targets on one H100 / H200 (224 px, bf16-mixed, through antimask train): (row, at least, unit)
TARGETS = [
    ("gpu/features_vggface_fc7/cache", 5000, "faces/s"),
    ("gpu/mask_decoder_224px/batch256/antimask_train", 20000, "samples/s"),
    ("gpu/improved_mask_decoder_224px/batch256/antimask_train", 6000, "samples/s"),
    ("gpu/face_decoder_224px/batch256/antimask_train", 10000, "samples/s"),
    ("gpu/encoder_vgg_224px/batch256/antimask_train", 10000, "samples/s"),
]
LIGHTNING_OVER_PLAIN = 1.15  # the plain loop may be at most this much faster than the Lightning path
# full: ~190 photos + 24 morphs per train photo ~ 3,400 faces, so that one epoch holds 11 batches of 256
FULL = dict(photos=200, size=224, batches=(32, 256), warmup=3, steps=8, neighbors=24, feature_batches=(64, 256))
QUICK = dict(photos=16, size=64, batches=(4, 8), warmup=1, steps=2, neighbors=2, feature_batches=(8,))


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(pl.Callback):
    """Samples/s of the training batches after ``warmup`` (cuDNN autotuning, allocator growth, Adam state, compiling),
    to the end of the epoch's last batch (before its checkpoint); the GPU is waited for at both ends only."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.samples = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            _sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.samples += len(batch["features"])

    def on_train_epoch_end(self, trainer, pl_module):  # before ModelCheckpoint's (Lightning runs those last)
        _sync()
        self.end = time.perf_counter()

    def rate(self) -> float:
        return self.samples / (self.end - self.start) if self.samples else float("nan")


# ------------------------------------------------------------------------------------------------- store
def make_store(folder: Path, photos: int, size: int) -> Path:
    """A store of the first ``photos`` adult UTKFace photos (every 20th, as the tests pick them) aligned at
    ``size``, without morphs or features (made where the benchmark runs); needs dlib and $ANTIMASK_DATA."""
    from antimask.config import load_config
    from antimask.data.prepare import prepare_store

    data = Path(os.environ.get("ANTIMASK_DATA", REPO.parent / "shared" / "data")) / "utkface"
    files = sorted(p for p in data.iterdir() if p.name.split("_")[0].isdigit() and int(p.name.split("_")[0]) >= 18)
    chosen = files[::20][:photos]
    with tempfile.TemporaryDirectory() as tmp:
        sources = Path(tmp) / "photos"
        sources.mkdir()
        for p in chosen:
            (sources / p.name).symlink_to(p)
        cfg = load_config(None, [f"prepare.image_size={size}", "prepare.cnn_fallback=false"])
        prepare_store([sources], folder, cfg, progress=False)
    shutil.rmtree(folder / "parts", ignore_errors=True)  # per-photo results for re-runs: not needed to train
    return folder


# ------------------------------------------------------------------------------------------------ configs
def _config(store: Path, run: Path, sizes: dict, accelerator: str, precision: str, batch: int, weights: str,
            extra: list[str]):
    from antimask.config import load_config

    workers = min(8, os.cpu_count() or 1) if accelerator == "gpu" else 0  # the CPU dry run: no loader processes
    return load_config(PAPER, [
        f"data.store={store}", f"run.dir={run}", f"data.image_size={sizes['size']}",
        f"prepare.image_size={sizes['size']}", f"data.batch_size={batch}", f"backbone.weights={weights}",
        f"augment.neighbors={sizes['neighbors']}", f"trainer.accelerator={accelerator}", "trainer.devices=1",
        f"trainer.precision={precision}", f"data.num_workers={workers}", "trainer.log_every_n_steps=1000",
        "trainer.image_log_every_n_epochs=1000", *extra])


# --------------------------------------------------------------------------------------------- features
def bench_features(cfg, store, sizes: dict, note: str) -> list[dict]:
    """The cache computed afresh over the whole store (read, compute, check, write), then the backbone's own
    rate over the store's faces at each batch size."""
    from antimask.backbones import (
        backbone_from_config,
        cached_features,
        feature_key,
        features_dir,
        features_of,
        to_training_device,
    )

    backbone = to_training_device(backbone_from_config(cfg), cfg.trainer.accelerator)
    key = feature_key(store, backbone)
    for path in features_dir(store).glob(f"{key}*"):
        path.unlink()
    features_of(backbone, store.images[:2])  # cuDNN's first call, allocations
    _sync()
    start = time.perf_counter()
    cached_features(store, backbone, batch_size=int(cfg.backbone.batch_size), progress=False)
    seconds = time.perf_counter() - start
    precision = "bf16 autocast" if backbone.device.type == "cuda" and backbone.bf16 else "float32"
    rows = [{"name": "gpu/features_vggface_fc7/cache", "value": round(len(store) / seconds, 1), "unit": "faces/s",
             "note": f"{note}; {len(store)} faces, batch {cfg.backbone.batch_size}, {precision}; read, compute, write"}]
    faces = store.images[: max(sizes["feature_batches"]) * 8]
    for batch in sizes["feature_batches"]:
        chunks = [faces[i:i + batch] for i in range(0, len(faces) - batch + 1, batch)] or [faces]
        features_of(backbone, chunks[0])
        _sync()
        start = time.perf_counter()
        for chunk in chunks:
            features_of(backbone, chunk)
        _sync()
        rate = sum(len(c) for c in chunks) / (time.perf_counter() - start)
        rows.append({"name": f"gpu/features_vggface_fc7/batch{batch}", "value": round(rate, 1), "unit": "faces/s",
                     "note": f"{note}; {precision}; the backbone alone on stored faces in memory"})
    del backbone
    return rows


# ---------------------------------------------------------------------------------------------- stages
def _plain_rate(cfg, stage: str, datamodule, feature_dim: int, warmup: int, steps: int) -> float:
    """Samples/s of a hand-written loop over the same loader: the same module, switches and precision."""
    from antimask.models.callbacks import ChannelsLast
    from antimask.training import build_module

    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    pl.seed_everything(int(cfg.run.seed))
    module = build_module(cfg, stage, feature_dim, Path(cfg.run.dir)).to(device).train()
    if cfg.trainer.channels_last:
        ChannelsLast().setup(None, module, "fit")
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed")
    torch.backends.cudnn.benchmark = bool(cfg.trainer.cudnn_benchmark)
    loader = datamodule.train_dataloader()
    start, samples, done = None, 0, 0
    while done < warmup + steps:  # the loader again if an epoch is shorter
        for batch in loader:
            if done == warmup:
                _sync()
                start = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            batch = datamodule.on_after_batch_transfer(batch, 0)
            if cfg.trainer.channels_last:
                ChannelsLast._images(batch)
            with autocast:
                loss, _ = module.compute_losses(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            samples += len(batch["features"]) if done > warmup else 0
            if done == warmup + steps:
                break
    _sync()
    return samples / (time.perf_counter() - start) if samples else float("nan")


def _train_rate(cfg, stage: str, warmup: int) -> tuple[StepTimer, float | None, object]:
    """train_stage with a StepTimer: the timer, the peak GPU memory (MiB; None on the CPU), the datamodule."""
    from antimask.training import train_stage

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer(warmup)
    _, objects = train_stage(cfg, stage, callbacks=[timer])
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return timer, peak, objects["datamodule"]


def bench_stage(name: str, stage: str, cfg, sizes: dict, note: str) -> list[dict]:
    warmup, steps, batch = sizes["warmup"], sizes["steps"], int(cfg.data.batch_size)
    timer, peak, dm = _train_rate(cfg, stage, warmup)
    plain = _plain_rate(cfg, stage, dm, dm.feature_dim, warmup, steps)
    where = f"{note}, {cfg.trainer.precision}, batch {batch}, {timer.samples // batch} timed steps after {warmup}"
    base = f"gpu/{name}_{cfg.data.image_size}px/batch{batch}"
    rows = [{"name": f"{base}/antimask_train", "value": round(timer.rate(), 1), "unit": "samples/s",
             "note": f"{where}: train_stage (store, loader, Trainer)"},
            {"name": f"{base}/plain_loop", "value": round(plain, 1), "unit": "samples/s",
             "note": f"{where}: the same module and loader in a hand-written loop"}]
    return rows + _peak_rows(base, peak, note)


def bench_switch(name: str, cfg, sizes: dict, note: str) -> list[dict]:
    """The paper mask decoder through train_stage with one switch turned from its default."""
    batch = int(cfg.data.batch_size)
    timer, peak, _ = _train_rate(cfg, "mask_decoder", sizes["warmup"])
    base = f"gpu/switches/mask_decoder_{cfg.data.image_size}px/batch{batch}/{name}"
    where = (f"{note}, {cfg.trainer.precision}, {timer.samples // batch} timed steps after {sizes['warmup']}: "
             f"train_stage, every default but this switch (compare mask_decoder_{cfg.data.image_size}px/batch{batch}"
             "/antimask_train)")
    rows = [{"name": base, "value": round(timer.rate(), 1), "unit": "samples/s", "note": where}]
    return rows + _peak_rows(base, peak, note)


def _peak_rows(base: str, peak: float | None, note: str) -> list[dict]:
    """The peak GPU memory row of a train_stage measurement (none on the CPU)."""
    return [] if peak is None else [{"name": f"{base}/peak_memory", "value": round(peak, 1), "unit": "MiB",
                                     "note": f"{note}: torch.cuda.max_memory_allocated over train_stage"}]


# ------------------------------------------------------------------------------------------------- run
def run(quick: bool = False, store: str | None = None, weights: str | None = None, overrides: list[str] = (),
        dry_run: bool = False, rows_out: str | None = None, switches: bool = True) -> list[dict]:
    """The rows; [] without a GPU unless ``dry_run`` (a CPU run's figures must not replace a GPU's).
    ``rows_out``: a JSON file rewritten with the rows so far after each measurement (a run stopped by a time
    limit still leaves what it measured). ``switches``: also the paper mask decoder with each of SWITCHES."""
    from antimask.data.augment import augment_store
    from antimask.data.resized import build_resized_cache
    from antimask.data.store import open_store

    gpu = torch.cuda.is_available()
    if not gpu and not dry_run:
        print("bench_gpu: no GPU (torch.cuda.is_available() is False); nothing measured "
              "(python benchmarks/bench_gpu.py --quick runs it on the CPU as a dry run)")
        return []
    sizes = QUICK if quick else FULL
    accelerator, precision = ("gpu", "bf16-mixed") if gpu else ("cpu", "32-true")
    device = device_name()
    print(f"bench_gpu: device {device}; VGG-Face weights: "
          + (weights or "random (same architecture, no weights file given: as fast, features meaningless)"), flush=True)
    note = device + ("" if weights else ", VGG-Face random weights")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        if store:
            shutil.copytree(store, root, ignore=shutil.ignore_patterns("features", "cache", "parts"))
        else:
            make_store(root, sizes["photos"], sizes["size"])
        base = _config(root, Path(tmp) / "run", sizes, accelerator, precision, 32, weights or "random", list(overrides))
        started = time.perf_counter()
        augment_store(root, base, progress=False)  # enlarged by morphs of the train faces, as antimask prepare does
        s = open_store(root)
        print(f"bench_gpu: store of {len(s)} faces ({s.num_morphs} morphs made in "
              f"{time.perf_counter() - started:.0f} s)", flush=True)
        rows += bench_features(base, s, sizes, note)
        _save(rows, rows_out)
        if int(base.data.image_size) != s.image_size:
            build_resized_cache(s, int(base.data.image_size), progress=False)
        for batch in sizes["batches"]:
            for name, stage, extra in STAGE_RUNS:
                cfg = _config(root, Path(tmp) / f"run-{name}-{batch}", sizes, accelerator, precision, batch,
                              weights or "random", [*extra, *_one_epoch(stage, sizes), *overrides])
                started = time.perf_counter()
                stage_rows = bench_stage(name, stage, cfg, sizes, note)
                rows += stage_rows
                _save(rows, rows_out)
                print(f"bench_gpu: {name} batch {batch}: "
                      + ", ".join(f"{r['name'].rsplit('/', 1)[1]} {r['value']} {r['unit']}" for r in stage_rows)
                      + f" ({time.perf_counter() - started:.0f} s)", flush=True)
        batch = max(sizes["batches"])
        for name, switch in SWITCHES if switches else []:
            cfg = _config(root, Path(tmp) / f"run-switch-{name}", sizes, accelerator, precision, batch,
                          weights or "random", [*_one_epoch("mask_decoder", sizes), *overrides, *switch])
            started = time.perf_counter()
            switch_rows = bench_switch(name, cfg, sizes, note)
            rows += switch_rows
            _save(rows, rows_out)
            print(f"bench_gpu: mask_decoder batch {batch}, {name}: {switch_rows[0]['value']} samples/s "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """A line per target of issue 22: the measured figure against it, met or not, or not measured; then the
    plain loop's rate over the Lightning path's for each stage and batch measured both ways."""
    values = {r["name"]: r["value"] for r in rows}
    out = []
    for name, least, unit in TARGETS:
        got = values.get(name)
        verdict = "not measured" if got is None else ("met" if got >= least else f"missed ({got / least:.0%})")
        out.append(f"{name}: {'-' if got is None else got} {unit}, target >= {least:,}: {verdict}")
    for name, lightning in values.items():
        plain = values.get(name.replace("/antimask_train", "/plain_loop"))
        if name.endswith("/antimask_train") and plain and lightning:
            ratio = plain / lightning
            verdict = "met" if ratio <= LIGHTNING_OVER_PLAIN else "missed"
            out.append(f"{name.rsplit('/', 1)[0]}: plain loop / Lightning {ratio:.2f}, target <= "
                       f"{LIGHTNING_OVER_PLAIN}: {verdict}")
    return out


def _one_epoch(stage: str, sizes: dict) -> list[str]:
    """Overrides for one epoch of warmup + steps batches (fewer when the train split is smaller: the notes count
    them), no validation."""
    return [f"stages.{stage}.max_epochs=1", f"stages.{stage}.limit_val_batches=0",
            f"stages.{stage}.limit_train_batches={sizes['warmup'] + sizes['steps']}"]


def _save(rows: list[dict], path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 16-photo 64 px store, small batches, two timed steps")
    parser.add_argument("--store", help="a prepared store (its photos; morphs and features are made afresh in a copy)")
    parser.add_argument("--weights", help="VGG-Face weights file (vgg_face_dag.pth); random weights without it")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run, e.g. trainer.compile=true")
    parser.add_argument("--make-store", metavar="DIR", help="only prepare a store of real faces in DIR and exit")
    parser.add_argument("--photos", type=int, default=FULL["photos"], help="photos of --make-store")
    parser.add_argument("--no-switches", action="store_true",
                        help="skip the paper mask decoder runs with one switch each turned from its default")
    parser.add_argument("--rows-out", help="a JSON file of the rows so far, rewritten after each measurement")
    parser.add_argument("--record", action="store_true",
                        help="also write the rows to docs/benchmarks.md and .json as `make bench` does (GPU only)")
    args = parser.parse_args(argv)
    if args.make_store:
        folder = make_store(Path(args.make_store), args.photos, FULL["size"])
        print(f"bench_gpu: store {folder}")
        return 0
    if args.record and not torch.cuda.is_available():
        parser.error("--record writes GPU figures: this machine has no GPU")
    info = _machine()  # the load average before the benchmark loads the machine
    rows = run(quick=args.quick, store=args.store, weights=args.weights, overrides=args.overrides, dry_run=True,
               rows_out=args.rows_out, switches=not args.no_switches)
    print(json.dumps(rows, indent=1))
    print(f"bench_gpu: issue 22's targets are for one H100 / H200; measured on {device_name()}:")
    for line in verdicts(rows):
        print(f"bench_gpu: {line}")
    if args.record:
        _record(rows, info, args.quick)
    return 0


def _machine() -> dict:
    sys.path.insert(0, str(REPO))
    from benchmarks.run import machine

    return machine()


def _record(rows: list[dict], info: dict, quick: bool, docs: Path | None = None) -> None:
    """The gpu suite of ``docs``/benchmarks.json and .md (docs/ by default) replaced by these rows; the figures it
    held before stay below them as a block of their own (their date, card and note), as other machines' blocks
    do. The files in ``docs`` are written once, when the new record is whole."""
    from benchmarks.run import DOCS, merge, write_docs

    docs = docs or DOCS
    path = docs / "benchmarks.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    gpu = previous.get("suites", {}).get("gpu")
    if gpu and gpu.get("rows"):
        text = f"Earlier, {gpu['date']} on {gpu['machine'].get('gpu', '?')}: {gpu.get('note', '')}".strip()
        gpu["also"] = [{"text": text, "rows": gpu["rows"]}, *gpu.get("also", [])]
        gpu["rows"] = []  # merge keeps a suite's "also" blocks and replaces its rows
    with tempfile.TemporaryDirectory() as tmp:  # merge reads a file: the moved rows go there, not over docs/
        moved = Path(tmp) / "benchmarks.json"
        moved.write_text(json.dumps(previous))
        record = merge(moved, {"gpu": rows}, info, quick)
    write_docs(record, docs)
    print(f"bench_gpu: wrote {docs / 'benchmarks.md'}")


if __name__ == "__main__":
    sys.exit(main())
