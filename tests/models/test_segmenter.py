"""The mask segmenter: its U-Net, its loss on real masked faces, a CPU fit, safe checkpoints, predicted regions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from antimask.config import load_config
from antimask.data.datamodule import unpack_batch
from antimask.data.masked import MaskedFaceDataModule
from antimask.data.resized import build_resized_cache
from antimask.data.store import open_store
from antimask.faces.images import to_uint8
from antimask.models.components.segmenter import MaskSegmenter
from antimask.models.modules import StageMismatchError
from antimask.models.segmenter import (
    MaskSegmenterModule,
    face_probabilities,
    load_segmenter,
    predict_regions,
    soft_dice_loss,
)
from antimask.runs import read_manifest
from antimask.segmentation import train_segmenter
from helpers import adult_utkface
from real_faces import align_photos, write_store

SIZE = 64


@pytest.fixture(scope="module")
def face_store(utkface_dir, tmp_path_factory) -> Path:
    """About 20 real aligned faces (7 in 10 train, 1 val, 2 test) with a 64 px cache."""
    images, landmarks, names = align_photos(adult_utkface(utkface_dir, 20, start=11))
    root = write_store(tmp_path_factory.mktemp("seg_store"), images, landmarks, names)
    build_resized_cache(open_store(root), SIZE, progress=False)
    return root


def _cfg(store: Path, run: Path, *extra: str):
    return load_config(None, [f"data.store={store}", f"data.image_size={SIZE}", f"run.dir={run}",
                              "data.num_workers=0", "data.batch_size=4", "trainer.accelerator=cpu",
                              "masks.segmenter_width=8", "masks.segmenter_depth=3", *extra])


def _batch(store: Path, run: Path, split: str = "train", n: int = 4) -> dict[str, torch.Tensor]:
    """n samples of ``split`` as the module gets them: collated, then unpacked as on the device."""
    dm = MaskedFaceDataModule(_cfg(store, run))
    ds = dm.dataset(split)
    return unpack_batch(default_collate([ds[i] for i in range(n)]), dm.split_row)


@pytest.mark.parametrize("size", [64, 50])
def test_the_unet_gives_one_logit_per_pixel_at_any_size(size):
    net = MaskSegmenter(width=4, depth=4)
    assert net(torch.rand(2, 3, size, size)).shape == (2, 1, size, size)


def test_widths_and_depth_have_no_defaults():
    with pytest.raises(TypeError):
        MaskSegmenter()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="depth >= 1"):
        MaskSegmenter(width=8, depth=0)


def test_soft_dice_is_zero_for_a_perfect_prediction_and_one_for_the_opposite():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 4:] = 1
    sure = (target * 2 - 1) * 50
    assert soft_dice_loss(sure, target) < 1e-3
    assert soft_dice_loss(-sure, target) > 0.95


def test_the_loss_falls_over_a_few_steps_on_real_masked_faces(face_store, tmp_path):
    torch.manual_seed(0)
    batch = _batch(face_store, tmp_path)
    module = MaskSegmenterModule.from_config(_cfg(face_store, tmp_path))
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = module.compute_losses(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_a_fast_dev_run_trains_on_the_cpu_without_touching_the_manifest(face_store, tmp_path):
    metrics, objects = train_segmenter(_cfg(face_store, tmp_path, "trainer.fast_dev_run=true"))
    assert np.isfinite(metrics["train/loss"]) and 0 <= metrics["val/iou"] <= 1
    assert objects["trainer"].global_step == 1
    assert "segmenter" not in read_manifest(tmp_path).get("stages", {})


def test_a_short_fit_records_its_checkpoint_which_loads_weights_only(face_store, tmp_path):
    cfg = _cfg(face_store, tmp_path, "stages.segmenter.max_epochs=2", "stages.segmenter.limit_train_batches=2")
    metrics, objects = train_segmenter(cfg)
    entry = read_manifest(tmp_path)["stages"]["segmenter"]
    assert entry["status"] == "done" and entry["held_out_styles"] == list(cfg.masks.held_out_styles)
    assert 0 <= entry["metrics"]["test/iou"] <= 1 and entry["metrics"]["test/iou"] == metrics["test/iou"]
    for name in ("blurred", "low_res"):  # the held-out test masks through a worse camera, scored beside them
        assert 0 <= entry["metrics"][f"test/iou_{name}"] <= 1
    module = load_segmenter(tmp_path / entry["best_checkpoint"], SIZE)
    assert not module.training and module.hparams.width == 8 and module.hparams.depth == 3
    faces = to_uint8(_batch(face_store, tmp_path, "test", n=2)["masked"])
    assert np.array_equal(predict_regions(module, faces), predict_regions(objects["best"], faces))
    with pytest.raises(StageMismatchError, match="segments 64 px faces, not 112"):
        load_segmenter(tmp_path / entry["best_checkpoint"], 112)


def test_a_resumed_fit_goes_on_from_last_and_keeps_the_earlier_epochs_log(face_store, tmp_path):
    train_segmenter(_cfg(face_store, tmp_path, "stages.segmenter.max_epochs=1",
                         "stages.segmenter.limit_train_batches=2", "stages.segmenter.limit_val_batches=1"))
    _, objects = train_segmenter(_cfg(face_store, tmp_path, "stages.segmenter.max_epochs=2", "trainer.ckpt_path=last",
                                      "stages.segmenter.limit_train_batches=3", "stages.segmenter.limit_val_batches=1"))
    # 2 batches of the first fit, then 3 of the second's one epoch (a fresh fit would have run 3 + 3)
    assert objects["trainer"].current_epoch == 2 and objects["trainer"].global_step == 2 + 3
    with open(tmp_path / "segmenter" / "metrics.csv", newline="") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh) if r.get("val/loss")] == [0, 1]


class _RunsCode:
    """Unpickling this calls open(marker, "w"): the file appears only if a loader ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_with_pickled_code_or_of_another_stage_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"stage": "segmenter"}, "surprise": _RunsCode(marker)}, evil)
    with pytest.raises(StageMismatchError, match="refused: it is not a weights-only checkpoint"):
        load_segmenter(evil)
    assert not marker.exists()
    other = tmp_path / "decoder.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"stage": "face_decoder"}}, other)
    with pytest.raises(StageMismatchError, match="a face_decoder checkpoint, expected a segmenter one"):
        load_segmenter(other)
    with pytest.raises(FileNotFoundError):
        load_segmenter(tmp_path / "missing.ckpt")


def test_predict_regions_gives_a_bool_region_per_face(face_store, tmp_path):
    module = MaskSegmenterModule.from_config(_cfg(face_store, tmp_path)).train()
    faces = to_uint8(_batch(face_store, tmp_path, "val", n=2)["masked"])
    regions = predict_regions(module, faces, batch_size=1)
    assert regions.dtype == bool and regions.shape == (2, SIZE, SIZE)
    assert module.training  # the module's mode is given back
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        predict_regions(module, faces[:, :32])
    with pytest.raises(ValueError, match="uint8"):
        predict_regions(module, faces.astype(np.float32))


def test_antimask_train_segmenter_prepares_what_is_missing_and_records_the_fit(face_store, tmp_path, capsys):
    """The command line trains the segmenter like a stage: `antimask train segmenter key=value ...`."""
    from antimask.cli import main

    rc = main(["train", "segmenter", f"data.store={face_store}", f"data.image_size={SIZE}", f"run.dir={tmp_path}",
               "data.num_workers=0", "data.batch_size=4", "trainer.accelerator=cpu", "augment.enabled=false",
               "masks.segmenter_width=8", "masks.segmenter_depth=3", "stages.segmenter.max_epochs=1",
               "stages.segmenter.limit_train_batches=2"])
    assert rc == 0
    entry = read_manifest(tmp_path)["stages"]["segmenter"]
    assert entry["status"] == "done" and (tmp_path / entry["best_checkpoint"]).is_file()
    assert "test/iou=" in capsys.readouterr().out


def test_the_face_head_learns_to_tell_faces_from_crops_that_are_not(face_store, tmp_path):
    """masks.negative_p mixes faces.negatives crops into the batches; the face head's BCE joins the loss and,
    fitted on one batch, its probabilities put every face above every crop that is not one."""
    torch.manual_seed(0)
    cfg = _cfg(face_store, tmp_path, "masks.negative_p=0.5")
    dm = MaskedFaceDataModule(cfg)
    ds = dm.dataset("train")
    batch = unpack_batch(default_collate([ds[i] for i in range(len(ds))]), dm.split_row)
    is_face = batch["is_face"].bool()
    assert is_face.any() and (~is_face).any()
    module = MaskSegmenterModule.from_config(cfg)
    assert module.hparams.face_weight == 1.0 and module.net.face_head is not None
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(30):
        loss, _ = module.compute_losses(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    probs = face_probabilities(module, to_uint8(batch["masked"]))
    assert probs.shape == (len(is_face),) and ((probs >= 0) & (probs <= 1)).all()
    assert probs[is_face.numpy()].min() > probs[~is_face.numpy()].max(), probs


def test_a_checkpoint_from_before_the_face_head_loads_without_one(face_store, tmp_path):
    cfg = _cfg(face_store, tmp_path, "stages.segmenter.max_epochs=1", "stages.segmenter.limit_train_batches=1")
    train_segmenter(cfg)
    path = tmp_path / read_manifest(tmp_path)["stages"]["segmenter"]["best_checkpoint"]
    ckpt = torch.load(path, weights_only=True)
    assert "face_weight" in ckpt["hyper_parameters"]
    del ckpt["hyper_parameters"]["face_weight"]
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "face_head" not in k}
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    module = load_segmenter(old, SIZE)
    assert module.net.face_head is None
    with pytest.raises(ValueError, match="no face head.*antimask train segmenter"):
        face_probabilities(module, np.zeros((1, SIZE, SIZE, 3), np.uint8))
