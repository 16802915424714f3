"""model.mask_aware on real faces: the mask decoder and encoder stages' samples carry one seeded synthetic mask per
row (train families on train rows, held-out ones on val), the same as the segmenter's; other stages are untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from antimask.data.datamodule import FaceDataModule
from antimask.data.masked import MaskedFaceDataModule
from antimask.faces import masks

SIZE = 64
MASK_KEYS = {"masked", "region", "redraw", "style"}


@pytest.fixture
def store_cfg(store64_cfg):
    """config(*overrides) over the 30-face store at 64 px (tests/data/conftest.py), mask_aware on."""
    return lambda *overrides: store64_cfg("model.decoder=appearance", "model.mask_aware=true", *overrides)


def _items(dataset):
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("stage", ["mask_decoder", "encoder"])
def test_samples_hold_the_masked_face_its_region_and_the_redraw_alpha(store_cfg, stage):
    cfg = store_cfg("masks.redraw_dilate_px=3", "masks.redraw_feather_px=2")
    for item in _items(FaceDataModule(cfg, stage=stage).dataset("train", train=True))[:8]:
        assert MASK_KEYS <= set(item)
        region, redraw = item["region"], item["redraw"]
        assert item["masked"].shape == item["face"].shape == (3, SIZE, SIZE)
        assert region.shape == redraw.shape == (1, SIZE, SIZE) and redraw.dtype == torch.float32
        assert item["masked"].dtype == torch.uint8 and region.dtype == torch.bool  # compact until the device
        outside = ~region[0]
        assert torch.equal(item["masked"][:, outside], item["face"][:, outside])  # only the mask is drawn on
        assert not torch.equal(item["masked"][:, ~outside], item["face"][:, ~outside])
        expected = masks.redraw_region(region[0].numpy(), 3, 2)
        assert np.array_equal(redraw[0].numpy(), expected)
        assert bool((redraw[region] == 1).all()) and float(redraw.sum()) > float(region.sum())
        assert {"face", "landmarks", "row"} <= set(item)  # the usual keys are still there


def test_train_rows_draw_training_families_and_val_rows_held_out_ones_the_segmenters_masks(store_cfg):
    cfg = store_cfg()
    dm = FaceDataModule(cfg, stage="mask_decoder")
    train = {item["style"] for item in _items(dm.dataset("train", train=True))}
    val = _items(dm.dataset("val"))
    assert train and train <= set(masks.TRAIN_STYLES) and len(train) >= 5
    assert {item["style"] for item in val} <= set(masks.HELD_OUT_STYLES)
    segmenter = _items(MaskedFaceDataModule(cfg).dataset("val"))  # one machinery: the same mask for a row
    assert any(theirs["is_face"] for theirs in segmenter)
    for ours, theirs in zip(val, segmenter):
        assert ours["row"] == theirs["row"] and ours["style"] == theirs["style"]
        if theirs["is_face"]:  # the others are crops that are not faces (masks.negative_p), drawn from the same mask
            assert torch.equal(ours["masked"], theirs["masked"]) and torch.equal(ours["region"], theirs["region"])


def test_a_loader_batches_the_mask_keys(store_cfg):
    batch = next(iter(FaceDataModule(store_cfg("data.batch_size=4"), stage="encoder").val_dataloader()))
    assert batch["masked"].shape == (3, 3, SIZE, SIZE) and batch["redraw"].shape == (3, 1, SIZE, SIZE)
    assert len(batch["style"]) == 3


def test_without_the_switch_and_in_the_other_stages_samples_are_unchanged(store_cfg):
    cfg = store_cfg()
    plain = FaceDataModule(store_cfg("model.mask_aware=false"), stage="mask_decoder").dataset("val")
    for stage in ("face_decoder", None):
        other = FaceDataModule(cfg, stage=stage).dataset("val")
        assert other.masks is None
        for a, b in zip(_items(plain), _items(other)):
            assert a.keys() == b.keys() and not MASK_KEYS & set(a)
            assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
