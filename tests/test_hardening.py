"""Hardening (issue 8): untrusted files, paths escaping the run, kill -9, NaN losses, full disks, bad config.

Every test runs on a small real store (40 UTKFace photos aligned at 64 px, morphs, dlib features)
prepared once for the module. The prepare fuzz test lives in tests/data/test_fuzz.py.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, adult_utkface

from antimask.config import ConfigError, load_config
from antimask.data.store import open_store
from antimask.pipeline import train_stage
from antimask.runs import ManifestError, stage_checkpoint

DEFAULT = REPO / "experiments" / "default.yaml"


def _overrides(photos: Path, store: Path, run: Path, *extra: str) -> list[str]:
    return [f"data.sources=[{photos}]", f"data.store={store}", f"run.dir={run}", "augment.neighbors=2",
            "data.batch_size=8", "prepare.workers=2", "prepare.image_size=64", "prepare.cnn_fallback=false",
            "prepare.crop_fallback=false", "augment.workers=1", *extra]


def _cfg(photos: Path, store: Path, run: Path, *extra: str):
    return load_config(DEFAULT, _overrides(photos, store, run, *extra))


@pytest.fixture(scope="module")
def small(utkface_dir, tmp_path_factory):
    """(photos, store): 40 real photos and their prepared store with morphs and dlib features."""
    from antimask.pipeline import prepare_data

    photos = tmp_path_factory.mktemp("hz_photos")
    for p in adult_utkface(utkface_dir, 40, start=5):
        (photos / p.name).symlink_to(p)
    store = tmp_path_factory.mktemp("hz_store")
    prepare_data(_cfg(photos, store, tmp_path_factory.mktemp("hz_run")))
    return photos, store


def _photo_copy(store: Path, dest: Path) -> Path:
    """The photo group of ``store`` alone (no morphs, no features) in a fresh folder."""
    dest.mkdir(parents=True)
    for name in ("header.json", "images.npy", "landmarks.npy", "meta.csv", "summary.json"):
        shutil.copy2(store / name, dest / name)
    return dest


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "antimask", *args]


# --- untrusted files -------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls open(marker, "w"): the file appears only if a loader ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    payload = {"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"stage": "mask_decoder"},
               "epoch": 0, "global_step": 1, "surprise": _RunsCode(marker)}
    torch.save(payload, path)
    return path


def test_pickled_code_in_a_checkpoint_or_weights_file_is_refused_by_every_loader(tmp_path):
    from antimask.backbones.timm_backbone import read_state_dict
    from antimask.backbones.vggface import load_vggface_state
    from antimask.models.components.encoder import load_weights_file
    from antimask.models.modules import StageMismatchError, load_stage

    marker = tmp_path / "PWNED"
    ckpt = _evil_checkpoint(tmp_path / "best.ckpt", marker)
    pth = shutil.copy(ckpt, tmp_path / "weights.pth")
    with pytest.raises(StageMismatchError, match="refused: it is not a weights-only checkpoint"):
        load_stage(ckpt, "mask_decoder")
    with pytest.raises(ValueError, match="refused: not a weights-only state dict"):
        load_weights_file(pth)
    from antimask.backbones import BackboneError

    with pytest.raises(BackboneError, match="cannot read"):
        load_vggface_state(pth)
    with pytest.raises(BackboneError, match="cannot read weights"):
        read_state_dict(Path(pth))
    assert not marker.exists(), "a loader ran code from a pickle"
    # The file really is dangerous: a plain unpickler runs it (so the refusals above mean something).
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_lightning_resume_refuses_a_pickled_code_checkpoint(small, tmp_path):
    photos, store = small
    marker = tmp_path / "PWNED"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    cfg = _cfg(photos, store, tmp_path / "run", "stages.mask_decoder.max_epochs=1", f"trainer.ckpt_path={evil}")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train_stage(cfg, "mask_decoder")
    assert not marker.exists()


def test_no_numpy_load_in_the_package_allows_pickles():
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "src").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "allow_pickle=True" in line or "pickle.load(" in line or "weights_only=False" in line]
    assert not offenders, offenders


def test_a_numpy_array_of_objects_under_a_store_name_is_refused(small, tmp_path):
    from antimask.data.store import StoreError

    root = _photo_copy(small[1], tmp_path / "store")
    np.save(root / "landmarks.npy", np.array([_RunsCode(tmp_path / "PWNED")], dtype=object), allow_pickle=True)
    with pytest.raises(StoreError, match="missing or truncated array"):
        open_store(root)
    assert not (tmp_path / "PWNED").exists()


# --- paths from a manifest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["../../etc/passwd", "/etc/passwd", "link/passwd"])
def test_manifest_checkpoint_outside_the_run_folder_is_refused(where, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "link").symlink_to("/etc")  # inside the run by name, outside once resolved
    manifest = {"stages": {"mask_decoder": {"status": "done", "best_checkpoint": where, "last_checkpoint": where}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="points outside the run folder"):
        stage_checkpoint(run, "mask_decoder")


def test_evaluate_and_predict_refuse_an_escaping_manifest(tmp_path, capsys):
    from antimask.cli import main

    run = tmp_path / "run"
    run.mkdir()
    from antimask.config import save_config

    save_config(load_config(DEFAULT, [f"run.dir={run}", f"data.store={tmp_path / 'store'}"]), run)
    entry = {"status": "done", "best_checkpoint": "../../etc/passwd", "last_checkpoint": "../../etc/passwd"}
    (run / "manifest.json").write_text(json.dumps({"stages": {s: entry for s in ("face_decoder", "mask_decoder",
                                                                                  "encoder")}}))
    photo = tmp_path / "p.png"
    photo.write_bytes(b"x")
    assert main(["predict", str(run), str(photo), "--out", str(tmp_path / "out")]) == 2
    assert "points outside the run folder" in capsys.readouterr().err


# --- invalid config overrides -------------------------------------------------------------------------------

# (override, the key the error must name); out-of-range values are checked by validate(), types by OmegaConf.
_OUT_OF_RANGE = [
    ("data.split_row=0", "data.split_row"), ("data.split_row=64", "data.split_row"),
    ("data.split_row=-5", "data.split_row"), ("data.split_row=500", "data.split_row"),
    ("stages.mask_decoder.lr=-0.001", "stages.mask_decoder.lr"), ("stages.encoder.lr=0", "stages.encoder.lr"),
    ("stages.face_decoder.max_epochs=0", "stages.face_decoder.max_epochs"),
    ("stages.encoder.weight_decay=-1", "stages.encoder.weight_decay"), ("data.batch_size=0", "data.batch_size"),
    ("data.image_size=16", "data.image_size"), ("data.image_size=512", "data.image_size"),
    ("data.num_workers=-1", "data.num_workers"), ("prepare.image_size=32", "prepare.image_size"),
    ("prepare.chunk=0", "prepare.chunk"), ("prepare.test_fraction=1.5", "prepare.test_fraction"),
    ("prepare.val_fraction=-0.1", "prepare.val_fraction"), ("prepare.max_yaw=120", "prepare.max_yaw"),
    ("prepare.keep=smallest", "prepare.keep"), ("augment.neighbors=0", "augment.neighbors"),
    ("augment.blend_min=0.9", "augment.blend_min"), ("augment.blend_max=1.5", "augment.blend_min"),
    ("backbone.name=resnet", "backbone.name"), ("backbone.layer=fc9", "backbone.layer"),
    ("model.encoder_loss=l1", "model.encoder_loss"), ("model.texture_weight=-1", "model.texture_weight"),
    ("model.decoder_upsamplings=0", "model.decoder_upsamplings"), ("trainer.precision=8-bit", "trainer.precision"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("eval.ci_method=magic", "eval.ci_method"), ("predict.feather=0.7", "predict.feather"),
    ("predict.device=tpu", "predict.device"), ("data.photometric_p=2", "data.photometric_p"),
    ("data.blur_max=4", "data.blur_max"),
]
_TYPED = {  # key -> a value of the wrong type
    "data.batch_size": "many", "stages.mask_decoder.lr": "fast", "data.flip": "maybe", "prepare.workers": "1.5x",
    "model.shared_dim": "[1,2]", "augment.landmark_weight": "heavy", "trainer.num_nodes": "two",
    "stages.encoder.max_epochs": "3.7", "eval.bootstrap": "lots", "data.sources": "{a: 1}",
}
_SECTIONS = ("run", "data", "prepare", "augment", "backbone", "model", "stages.encoder", "trainer", "eval")


def _random_bad_overrides(seed: int = 8, n: int = 50) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        kind = rng.integers(3)
        if kind == 0:
            override, key = _OUT_OF_RANGE[rng.integers(len(_OUT_OF_RANGE))]
        elif kind == 1:
            key = list(_TYPED)[rng.integers(len(_TYPED))]
            override = f"{key}={_TYPED[key]}"
        else:
            word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz_"), size=int(rng.integers(4, 12))))
            key = f"{_SECTIONS[rng.integers(len(_SECTIONS))]}.{word}"
            override = f"{key}={int(rng.integers(100))}"
        cases.append((override, key))
    return cases


@pytest.mark.parametrize("override,key", _random_bad_overrides())
def test_random_invalid_override_is_a_config_error_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT, [override])
    assert key in str(err.value), str(err.value)


def test_misspelt_key_gets_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'model.landmark_weight'"):
        load_config(DEFAULT, ["model.landmark_weigth=3"])


@pytest.mark.parametrize("bad", ["stages.mask_decoder.lr=-1", "data.split_row=64", "trainer.nonsense=1"])
def test_train_all_with_a_bad_override_exits_2_at_once_and_creates_no_run_folder(bad, tmp_path):
    run = tmp_path / "run"
    start = time.perf_counter()
    proc = subprocess.run(_cli("train-all", f"run.dir={run}", f"data.store={tmp_path / 'store'}", bad),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error" in proc.stderr and bad.split("=")[0] in proc.stderr
    assert not run.exists() and not (tmp_path / "store").exists()
    assert time.perf_counter() - start < 60


# --- NaN / inf loss -----------------------------------------------------------------------------------------


def test_nan_loss_stops_with_the_step_and_rows_and_keeps_the_last_good_checkpoint(small, tmp_path):
    import pytorch_lightning as pl

    from antimask.data.datamodule import FaceDataModule
    from antimask.guards import NonFiniteLossError

    photos, store = small
    cfg = _cfg(photos, store, tmp_path, "stages.mask_decoder.max_epochs=3")
    from antimask.backbones import teacher_features

    features = np.array(teacher_features(cfg, open_store(store)), dtype=np.float32)  # a private, writable copy
    poisoned = int(open_store(store).rows("train")[0])

    class PoisonAfterFirstEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                features[poisoned] = np.nan

    from antimask import training

    real_build = training.build_trainer
    original = training.build_trainer

    def build(cfg_, stage, callbacks=None, **kw):
        return real_build(cfg_, stage, callbacks=list(callbacks or []) + [PoisonAfterFirstEpoch()], **kw)

    training.build_trainer = build
    try:
        with pytest.raises(NonFiniteLossError) as err:
            train_stage(cfg, "mask_decoder", datamodule=FaceDataModule(cfg, features=features))
    finally:
        training.build_trainer = original
    text = str(err.value)
    assert "loss is nan at global step" in text and "epoch 1" in text
    assert f"{poisoned}" in text.split("store rows in the batch:")[1]
    last = tmp_path / "mask_decoder" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    from antimask.models.modules import load_stage

    load_stage(last, "mask_decoder")


# --- full disk ---------------------------------------------------------------------------------------------


def _enospc_after(limit: int):
    """A write() for a file object that accepts ``limit`` bytes in all, then fails as a full disk does."""
    state = {"left": limit}

    def write(real_write, data):
        view = memoryview(data).cast("B")
        if len(view) > state["left"]:
            real_write(view[: state["left"]])
            state["left"] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        state["left"] -= len(view)
        return real_write(data)

    return write


def test_full_disk_while_rewriting_the_photo_group_keeps_the_previous_store(small, tmp_path, monkeypatch):
    from antimask.data import store as store_module

    root = _photo_copy(small[1], tmp_path / "store")
    before = _snapshot(root)
    old = open_store(root)
    images = np.asarray(old.images[:])[::-1].copy()  # a different store to write over the old one
    landmarks = np.asarray(old.landmarks[:])[::-1].copy()
    real_save = np.save
    calls = {"n": 0}

    def failing_save(fh, array, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the landmarks, after the images were written in full
            fh.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(fh, array, *a, **kw)

    monkeypatch.setattr(store_module.np, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        store_module.write_group(root, images, landmarks, old.meta, {"image_size": 64})
    monkeypatch.undo()
    assert _snapshot(root) == before, "the failed write changed or left files in the store"
    again = open_store(root)
    np.testing.assert_array_equal(again.images[:], old.images[:])


def test_full_disk_during_augment_keeps_the_photo_store(small, tmp_path, monkeypatch):
    from antimask.data import augment

    root = _photo_copy(small[1], tmp_path / "store")
    before = _snapshot(root)
    real = augment._morph_batch

    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(augment, "_morph_batch", disk_full)
    with pytest.raises(OSError, match="No space left"):
        augment.augment_store(root, _cfg(*small, tmp_path), progress=False)
    monkeypatch.setattr(augment, "_morph_batch", real)
    after = _snapshot(root)
    assert {k: v for k, v in after.items() if not k.startswith("morphs/")} == before
    assert not [k for k in after if k.startswith("morphs/")], sorted(after)  # no partial morph files left
    assert open_store(root).num_morphs == 0


def test_full_disk_on_a_real_small_filesystem_keeps_the_previous_store(small, tmp_path):
    """A 3 MB tmpfs (needs root and mount): the store fits, a second copy of its images does not."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root); the simulated full-disk tests cover this")
    try:
        from antimask.data.store import write_group

        root = _photo_copy(small[1], mnt / "store")
        old = open_store(root)
        before = _snapshot(root)
        big = np.zeros((len(old.images) * 12,) + old.images.shape[1:], np.uint8)  # ~6 MB: cannot fit
        table = old.meta.concat(old.meta)
        for _ in range(3):
            table = table.concat(table)
        table = type(table)({k: v[: len(big)] for k, v in table.columns.items()})
        lmk = np.zeros((len(big), 68, 2), np.float32)
        with pytest.raises(OSError) as err:
            write_group(root, big, lmk, table, {"image_size": 64})
        # numpy reports a short write without an errno ("N requested and M written")
        assert err.value.errno == errno.ENOSPC or "written" in str(err.value), err.value
        assert _snapshot(root) == before
        np.testing.assert_array_equal(open_store(root).images[:], np.asarray(old.images[:]))
    finally:
        old = None  # the memory maps keep the mount busy
        import gc

        gc.collect()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_while_saving_a_checkpoint_keeps_the_previous_last_ckpt(small, tmp_path, monkeypatch):
    """Lightning saves through fsspec's transaction (temp file, then rename): a failed write leaves last.ckpt."""
    from fsspec.implementations import local

    photos, store = small
    train_stage(_cfg(photos, store, tmp_path, "stages.mask_decoder.max_epochs=1"), "mask_decoder")
    ckpts = tmp_path / "mask_decoder" / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    failing = _enospc_after(4096)
    real_write = local.LocalFileOpener.write
    monkeypatch.setattr(local.LocalFileOpener, "write", lambda self, data: failing(lambda d: real_write(self, d), data))
    with pytest.raises(OSError, match="No space left"):
        train_stage(_cfg(photos, store, tmp_path, "stages.mask_decoder.max_epochs=2", "trainer.ckpt_path=last"),
                    "mask_decoder")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before, "a checkpoint was torn or a temp file left"
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 0


# --- file modes --------------------------------------------------------------------------------------------

_MODES = """
import os, stat, sys
os.umask(int(sys.argv[2], 8))  # before antimask.files reads it at import
from antimask.files import atomic_write_json, atomic_write_text
folder = sys.argv[1]
mode = lambda path: oct(stat.S_IMODE(os.stat(path).st_mode))
atomic_write_text(os.path.join(folder, "new.txt"), "new")
atomic_write_json(os.path.join(folder, "new.json"), {"new": True})
old = os.path.join(folder, "old.md")
with open(old, "w") as fh:
    fh.write("old")
os.chmod(old, 0o640)
atomic_write_text(old, "rewritten")
print(mode(os.path.join(folder, "new.txt")), mode(os.path.join(folder, "new.json")), mode(old), open(old).read())
"""


@pytest.mark.parametrize("umask, new_mode", [("022", "0o644"), ("077", "0o600")])
def test_a_file_written_atomically_gets_the_umasks_mode_and_a_rewritten_one_keeps_its_own(tmp_path, umask, new_mode):
    """Not the temporary file's 0600: predict's PNGs and the reports are as readable as any file the user writes."""
    done = subprocess.run([sys.executable, "-c", _MODES, str(tmp_path), umask], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == [new_mode, new_mode, "0o640", "rewritten"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "new.txt", "old.md"]  # no temporary file left


# --- kill -9 and run again ----------------------------------------------------------------------------------


def _kill_when(args: list[str], ready, what: str, timeout: float = 240) -> None:
    """Start ``args``, SIGKILL its whole process group as soon as ``ready()``; fail if it finished first."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    finished = proc.poll() is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not finished and ready(), f"the kill came too late (or never) to test: {what}"


def test_killed_augment_resumes_to_the_same_morphs(small, tmp_path):
    killed = _photo_copy(small[1], tmp_path / "killed")
    whole = _photo_copy(small[1], tmp_path / "whole")
    opts = ["--config", str(DEFAULT), "augment.neighbors=10", "augment.workers=1"]
    _kill_when(_cli("augment", str(killed), *opts), lambda: bool(list((killed / "morphs").glob(".images.*.partial"))),
               "the morph images being written")
    assert not (killed / "morphs" / "header.json").exists()
    assert subprocess.run(_cli("augment", str(killed), *opts), capture_output=True).returncode == 0
    assert subprocess.run(_cli("augment", str(whole), *opts), capture_output=True).returncode == 0
    for name in ("images.npy", "landmarks.npy"):
        np.testing.assert_array_equal(np.load(killed / "morphs" / name), np.load(whole / "morphs" / name))
    assert (killed / "morphs" / "meta.csv").read_text() == (whole / "morphs" / "meta.csv").read_text()
    assert open_store(killed).digest == open_store(whole).digest
    assert not list((killed / "morphs").glob(".*")), "the killed run's partial morph file was left behind"


_FEATURES = ("import sys; from antimask.config import load_config; from antimask.data.store import open_store; "
             "from antimask.backbones import backbone_from_config, cached_features; "
             "cached_features(open_store(sys.argv[1]), backbone_from_config(load_config(None, [])), batch_size=1, "
             "progress=False)")


def test_killed_feature_caching_resumes_to_the_same_features(small, tmp_path):
    from antimask.backbones import backbone_from_config, feature_key

    src = small[1]
    killed = tmp_path / "killed"
    shutil.copytree(src, killed, ignore=shutil.ignore_patterns("features", "cache", "parts"))
    store = open_store(killed)
    key = feature_key(store, backbone_from_config(load_config(None, [])))
    progress = killed / "features" / f"{key}.progress.json"

    def some_rows_done() -> bool:
        try:
            return json.loads(progress.read_text())["done"] >= 3
        except (OSError, ValueError, KeyError):
            return False

    _kill_when([sys.executable, "-c", _FEATURES, str(killed)], some_rows_done, "rows 3.. of the features")
    done = json.loads(progress.read_text())["done"]
    assert done < len(store) and not (killed / "features" / f"{key}.npy").exists()
    assert subprocess.run([sys.executable, "-c", _FEATURES, str(killed)], capture_output=True).returncode == 0
    resumed = np.load(killed / "features" / f"{key}.npy")
    # The uninterrupted reference uses the same batch size: dlib's batched descriptor differs in the
    # last float bits between batch sizes, so only a same-batch run can be bit-equal.
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(src, uninterrupted, ignore=shutil.ignore_patterns("features", "cache", "parts"))
    assert subprocess.run([sys.executable, "-c", _FEATURES, str(uninterrupted)], capture_output=True).returncode == 0
    whole = np.load(uninterrupted / "features" / f"{key}.npy")
    np.testing.assert_array_equal(resumed, whole)
    assert sorted(p.name for p in (killed / "features").iterdir()) == [f"{key}.json", f"{key}.npy"]


VAL_LOSS_TOLERANCE = 0.15  # relative: the resumed epochs draw other shuffles, so the loss differs a little


def test_killed_training_resumes_to_the_same_step_count(small, tmp_path):
    photos, store = small
    args = ["--config", str(DEFAULT), *_overrides(photos, store, tmp_path / "killed", "stages.mask_decoder.max_epochs=3")]
    last = tmp_path / "killed" / "mask_decoder" / "checkpoints" / "last.ckpt"
    _kill_when(_cli("train", "mask_decoder", *args), last.exists, "the first epoch's last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] < 2
    proc = subprocess.run(_cli("train", "mask_decoder", *args, "trainer.ckpt_path=last"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, whole = train_stage(_cfg(photos, store, tmp_path / "whole", "stages.mask_decoder.max_epochs=3"), "mask_decoder")
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == whole["trainer"].global_step
    assert resumed["epoch"] == whole["trainer"].current_epoch - 1 == 2
    with open(tmp_path / "killed" / "mask_decoder" / "metrics.csv") as fh:
        a = [float(r["val/loss"]) for r in csv.DictReader(fh) if r.get("val/loss")][-1]
    with open(tmp_path / "whole" / "mask_decoder" / "metrics.csv") as fh:
        b = [float(r["val/loss"]) for r in csv.DictReader(fh) if r.get("val/loss")][-1]
    assert abs(a - b) <= VAL_LOSS_TOLERANCE * b, (a, b)


@pytest.mark.parametrize("given", ["runs/other", "=runs/other"])
def test_evaluate_with_a_run_not_named_is_a_usage_error(given, tmp_path, capsys):
    from antimask.cli import main

    assert main(["evaluate", str(tmp_path / "run"), "--with", given]) == 2
    assert f"--with {given}: give NAME=RUN_DIR" in capsys.readouterr().err
