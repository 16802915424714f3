"""`antimask train` on real faces: each stage runs, learns, resumes, runs in bf16 and under DDP."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from antimask import training
from antimask.config import load_config
from antimask.data.store import open_store
from antimask.pipeline import train_stage
from antimask.runs import ManifestError, read_manifest, stage_checkpoint
from helpers import REPO, adult_utkface

STAGES = ("face_decoder", "mask_decoder", "encoder")


@pytest.fixture(scope="session")
def utk_photos(utkface_dir, tmp_path_factory) -> Path:
    photos = tmp_path_factory.mktemp("utk_photos")
    for p in adult_utkface(utkface_dir, 120, start=3):
        (photos / p.name).symlink_to(p)
    return photos


@pytest.fixture(scope="session")
def utk_store(utk_photos, tmp_path_factory) -> Path:
    """A store of ~120 real faces with morphs and dlib features, prepared once for the session."""
    from antimask.pipeline import prepare_data

    store = tmp_path_factory.mktemp("utk_store")
    prepare_data(_cfg(utk_photos, store, tmp_path_factory.mktemp("run")))
    return store


def _cfg(photos: Path, store: Path, run: Path, *extra: str):
    return load_config(REPO / "experiments" / "default.yaml", [
        f"data.sources=[{photos}]", f"data.store={store}", f"run.dir={run}", "augment.neighbors=2",
        "data.batch_size=16", "prepare.workers=2", "eval.bootstrap=50", *extra])


@pytest.mark.parametrize("stage", STAGES)
def test_fast_dev_run_of_each_stage(stage, utk_photos, utk_store, tmp_path):
    metrics, objects = train_stage(_cfg(utk_photos, utk_store, tmp_path, "trainer.fast_dev_run=true"), stage)
    assert objects["trainer"].global_step == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def _val_losses(run: Path, stage: str) -> list[float]:
    with open(run / stage / "metrics.csv") as fh:
        return [float(r["val/loss"]) for r in csv.DictReader(fh) if r.get("val/loss")]


@pytest.mark.parametrize("stage", STAGES)
def test_two_epochs_on_real_faces_lower_the_validation_loss(stage, utk_photos, utk_store, tmp_path):
    cfg = _cfg(utk_photos, utk_store, tmp_path, f"stages.{stage}.max_epochs=2", "stages.face_decoder.lr=0.001",
               "stages.mask_decoder.lr=0.001")
    train_stage(cfg, stage)
    losses = _val_losses(tmp_path, stage)
    assert len(losses) == 2 and losses[1] < losses[0], losses
    entry = read_manifest(tmp_path)["stages"][stage]
    assert entry["status"] == "done" and entry["feature_dim"] == 128
    assert stage_checkpoint(tmp_path, stage).name == "best.ckpt"
    assert (tmp_path / "config.yaml").exists()


def test_resume_from_last_checkpoint_continues_at_the_next_epoch(utk_photos, utk_store, tmp_path):
    train_stage(_cfg(utk_photos, utk_store, tmp_path, "stages.mask_decoder.max_epochs=1"), "mask_decoder")
    first = torch.load(tmp_path / "mask_decoder" / "checkpoints" / "last.ckpt", weights_only=True)
    _, objects = train_stage(_cfg(utk_photos, utk_store, tmp_path, "stages.mask_decoder.max_epochs=2",
                                  "trainer.ckpt_path=last"), "mask_decoder")
    assert first["epoch"] == 0
    assert objects["trainer"].current_epoch == 2
    assert objects["trainer"].global_step == 2 * first["global_step"]
    assert len(_val_losses(tmp_path, "mask_decoder")) == 2, "the resumed run logs only its new epoch"


def test_a_stage_killed_after_its_last_checkpoint_records_that_checkpoints_metrics(utk_photos, utk_store, tmp_path):
    # killed between the final checkpoint and the manifest write: the resumed fit trains nothing and logs nothing
    cfg = _cfg(utk_photos, utk_store, tmp_path, "stages.mask_decoder.max_epochs=1")
    train_stage(cfg, "mask_decoder")
    finished = read_manifest(tmp_path)["stages"].pop("mask_decoder")
    (tmp_path / "manifest.json").unlink()
    metrics, objects = train_stage(OmegaConf.merge(cfg, {"trainer": {"ckpt_path": "last"}}), "mask_decoder")
    assert objects["trainer"].current_epoch == 1 and len(_val_losses(tmp_path, "mask_decoder")) == 1
    entry = read_manifest(tmp_path)["stages"]["mask_decoder"]
    assert entry["status"] == "done" and entry["metrics"] == metrics
    assert metrics["val/loss"] == pytest.approx(finished["metrics"]["val/loss"], rel=1e-6)
    assert {k for k in finished["metrics"] if k.startswith("val/")} <= set(metrics)


class _FailsAtEpoch(pl.Callback):
    """Stops a fit with an error when ``epoch`` starts, as a killed or crashed job would (after the epochs
    before it were logged)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"stopped at epoch {self.epoch}")


def test_train_all_resumes_an_interrupted_stage_only_under_the_config_it_started_with(utk_photos, utk_store,
                                                                                      tmp_path):
    from antimask.pipeline import train_all
    from antimask.runs import results_hash

    fast = ["stages.face_decoder.max_epochs=2", "stages.mask_decoder.max_epochs=1", "stages.encoder.max_epochs=1"]
    started = _cfg(utk_photos, utk_store, tmp_path, *fast)
    with pytest.raises(RuntimeError, match="stopped at epoch 1"):
        training.train_stage(started, "face_decoder", callbacks=[_FailsAtEpoch(1)])
    last = tmp_path / "face_decoder" / "checkpoints" / "last.ckpt"
    assert training.checkpoint_results_hash(last) == results_hash(started)
    # the checkpoint's optimiser would keep the old lr, and the manifest would say the new one trained the stage
    with pytest.raises(ManifestError, match="interrupted while training with another config"):
        train_all(_cfg(utk_photos, utk_store, tmp_path, *fast, "stages.face_decoder.lr=0.1"), evaluate=False)
    assert "face_decoder" not in read_manifest(tmp_path).get("stages", {})
    train_all(_cfg(utk_photos, utk_store, tmp_path, *fast, "trainer.log_every_n_steps=7"), evaluate=False)
    entry = read_manifest(tmp_path)["stages"]["face_decoder"]
    assert entry["epochs"] == 2 and entry["config_hash"] == results_hash(started)
    assert len(_val_losses(tmp_path, "face_decoder")) == 2, "resumed at epoch 1, not trained again from 0"


@pytest.mark.parametrize("model", [[], ["model.adversarial_weight=1.0", "model.discriminator_width=8"]],
                         ids=["paper", "adversarial"])  # two optimisers: global_step is twice the logged step
def test_a_resumed_run_that_stops_again_keeps_every_logged_epoch(utk_photos, utk_store, tmp_path, model):
    # SLURM preemption: resumed, preempted again before the end, resumed again. Lightning's CSVLogger deleted
    # metrics.csv when the first resume began, and only an ending fit put the earlier epochs back.
    train_stage(_cfg(utk_photos, utk_store, tmp_path, "stages.mask_decoder.max_epochs=1", *model), "mask_decoder")
    assert len(_val_losses(tmp_path, "mask_decoder")) == 1
    again = _cfg(utk_photos, utk_store, tmp_path, "stages.mask_decoder.max_epochs=3", "trainer.ckpt_path=last",
                 *model)
    with pytest.raises(RuntimeError, match="stopped at epoch 2"):
        training.train_stage(again, "mask_decoder", callbacks=[_FailsAtEpoch(2)])
    assert len(_val_losses(tmp_path, "mask_decoder")) == 2, "the stopped resume kept epoch 0 and logged epoch 1"
    _, objects = train_stage(again, "mask_decoder")
    assert objects["trainer"].current_epoch == 3
    with open(tmp_path / "mask_decoder" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows if r.get("val/loss")] == [0, 1, 2]
    steps = [int(r["step"]) for r in rows if r.get("val/loss")]
    assert steps == sorted(steps) and len(set(steps)) == 3


def test_a_requeue_signal_during_validation_waits_for_the_epochs_end_but_not_past_its_limit():
    # the full path (Lightning's handler, hpc checkpoint, resume, metrics.csv) is test_scaleout's
    # test_a_requeue_signal_during_validation_keeps_that_epochs_validation; here the hold and its time limit
    from types import SimpleNamespace

    calls: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))  # stands for Lightning's
    try:
        trainer = SimpleNamespace(validating=False)
        hold = training.RequeueAfterValidation(max_wait_s=0.2)
        hold.on_train_start(trainer, None)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [signal.SIGUSR1], "in training the handler runs at once"
        trainer.validating = True
        os.kill(os.getpid(), signal.SIGUSR1)
        hold.on_validation_batch_end(trainer)
        assert len(calls) == 1, "held while the epoch validates"
        hold.on_train_epoch_end(trainer, None)
        hold.on_train_epoch_end(trainer, None)
        assert len(calls) == 2, "run once, at the epoch's end"
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.25)
        hold.on_validation_batch_end(trainer)
        assert len(calls) == 3, "a validation longer than max_wait_s: run at its next batch"
        hold.on_train_epoch_end(trainer, None)
        assert len(calls) == 3
        signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
        training.RequeueAfterValidation(max_wait_s=0).on_train_start(trainer, None)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert len(calls) == 4, "max_wait_s=0: Lightning's handler, unwrapped"
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_resumed_log_is_cut_to_the_checkpoints_rows_in_place_and_new_rows_are_appended(tmp_path):
    from antimask.tracking import StageCSVLogger

    def write(rows):
        with open(tmp_path / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", "step", "train/loss_step", "val/loss"])
            writer.writeheader()
            writer.writerows(rows)

    logged = [{"epoch": 0 if s < 4 else 1, "step": s, "train/loss_step": 1.0 / s} for s in range(1, 7)]
    logged.insert(3, {"epoch": 0, "step": 3, "val/loss": 0.5})
    write(logged)
    # a mid-epoch (SLURM hpc) checkpoint of epoch 1 with 5 batches stepped: the rows at steps 5 and 6 were logged
    # after it, and the resumed fit logs its first batch at step 5
    logger = StageCSVLogger(str(tmp_path), resumed=(1, 5))
    logger.log_metrics({"train/loss_step": 0.25, "epoch": 1, "lr": 1e-4}, step=5)  # lr: a column not seen before
    logger.save()
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(0, 1), (0, 2), (0, 3), (0, 3), (1, 4), (1, 5)]
    assert rows[3]["val/loss"] == "0.5" and rows[-1]["train/loss_step"] == "0.25" and rows[-1]["lr"] == "0.0001"
    assert rows[0]["lr"] == "" and list(rows[0]) == sorted(rows[0])
    # a fresh fit (nothing resumed) starts the log afresh, as Lightning's does
    write(logged)
    StageCSVLogger(str(tmp_path)).experiment
    assert not (tmp_path / "metrics.csv").exists()


def test_bf16_mixed_precision_on_cpu(utk_photos, utk_store, tmp_path):
    metrics, objects = train_stage(_cfg(utk_photos, utk_store, tmp_path, "trainer.precision=bf16-mixed",
                                        "trainer.fast_dev_run=true"), "mask_decoder")
    assert objects["trainer"].precision == "bf16-mixed"
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))


def test_compiled_networks_train_a_fast_dev_run_on_the_cpu(utk_photos, utk_store, tmp_path):
    metrics, objects = train_stage(_cfg(utk_photos, utk_store, tmp_path, "trainer.compile=true",
                                        "trainer.fast_dev_run=true", "trainer.accelerator=cpu"), "face_decoder")
    module = objects["module"]
    assert objects["trainer"].global_step == 1
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    assert module.decoder._compiled_call_impl is not None, "trainer.compile compiles the module's networks"
    assert not any("_orig_mod" in k for k in module.state_dict()), "in place: checkpoints keep their names"


def test_the_speed_switches_reach_the_trainer(tmp_path):
    from antimask.models.callbacks import ChannelsLast
    from antimask.training import build_trainer

    cfg = load_config(None, [f"run.dir={tmp_path}", "trainer.accelerator=cpu"])
    trainer = build_trainer(cfg, "mask_decoder")
    assert torch.backends.cudnn.benchmark and any(isinstance(c, ChannelsLast) for c in trainer.callbacks)
    cfg = load_config(None, [f"run.dir={tmp_path}", "trainer.accelerator=cpu", "trainer.deterministic=true",
                             "trainer.channels_last=false"])
    trainer = build_trainer(cfg, "mask_decoder")
    assert not torch.backends.cudnn.benchmark, "deterministic kernels: cuDNN may not pick the fastest"
    assert not any(isinstance(c, ChannelsLast) for c in trainer.callbacks)


def test_missing_stage_in_manifest_is_named(tmp_path):
    with pytest.raises(ManifestError, match="stage 'face_decoder' has not finished"):
        stage_checkpoint(tmp_path, "face_decoder")


def test_two_process_ddp_writes_one_checkpoint_and_one_log(utk_photos, utk_store, tmp_path):
    cmd = [sys.executable, "-m", "antimask", "train", "mask_decoder", "--config",
           str(REPO / "experiments" / "default.yaml"), f"data.sources=[{utk_photos}]", f"data.store={utk_store}",
           f"run.dir={tmp_path}", "augment.neighbors=2", "data.batch_size=16", "stages.mask_decoder.max_epochs=1",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = sorted(p.name for p in (tmp_path / "mask_decoder" / "checkpoints").iterdir())
    assert ckpts == ["best.ckpt", "last.ckpt"]
    assert [p.name for p in (tmp_path / "mask_decoder").glob("*.csv")] == ["metrics.csv"]
    assert not list(tmp_path.rglob("version_*")), "DDP must not create one log folder per rank"
    entry = read_manifest(tmp_path)["stages"]["mask_decoder"]
    ckpt = torch.load(tmp_path / entry["last_checkpoint"], weights_only=True)
    # Two ranks share the global batch: per-device batch 8, so the step count equals a 1-process run's.
    n_train = len(open_store(utk_store).rows("train"))
    per_rank = -(-n_train // 2)  # DistributedSampler pads to an even split
    assert ckpt["global_step"] == -(-per_rank // 8)
