"""Masked-face datasets on real faces: train rows get training families, val/test rows held-out ones, per-row masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from antimask.config import STAGES, ConfigError, load_config
from antimask.data.masked import MaskedFaceDataModule, mask_styles
from antimask.faces import masks

SIZE = 64


@pytest.fixture
def masked_cfg(store64_cfg):
    """config(*overrides) over the 30-face store at 64 px (tests/data/conftest.py)."""
    return store64_cfg


def _items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_items_hold_the_masked_face_its_region_the_face_and_the_row(masked_cfg):
    item = MaskedFaceDataModule(masked_cfg("masks.augment=false")).dataset("train", train=True)[0]
    assert item["masked"].shape == item["face"].shape == (3, SIZE, SIZE)
    assert item["masked"].dtype == item["face"].dtype == torch.uint8 and item["region"].dtype == torch.bool
    assert item["region"].shape == (1, SIZE, SIZE)
    assert 0.1 < item["region"].float().mean() < 0.6  # a mask over the lower face, not a speck or the whole image
    outside = ~item["region"][0]
    assert torch.equal(item["masked"][:, outside], item["face"][:, outside])  # only the region is drawn on
    assert not torch.equal(item["masked"][:, ~outside], item["face"][:, ~outside])
    assert isinstance(item["row"], int)


def test_train_rows_draw_training_families_and_val_test_rows_only_held_out_ones(masked_cfg):
    dm = MaskedFaceDataModule(masked_cfg())
    train = {item["style"] for item in _items(dm.dataset("train", train=True))}
    held_out = {item["style"] for split in ("val", "test") for item in _items(dm.dataset(split))}
    assert train and train <= set(masks.TRAIN_STYLES)
    assert len(train) >= 5  # 21 faces spread over the 11 training families
    assert held_out and held_out <= set(masks.HELD_OUT_STYLES)


def test_each_row_gets_the_same_mask_every_time_and_another_with_another_seed(masked_cfg):
    first = MaskedFaceDataModule(masked_cfg()).dataset("test")
    again = MaskedFaceDataModule(masked_cfg()).dataset("test")
    other = MaskedFaceDataModule(masked_cfg("masks.seed=1")).dataset("test")
    for i in range(3):
        a, b, c = first[i], again[i], first[i]
        assert torch.equal(a["masked"], b["masked"]) and torch.equal(a["region"], b["region"])
        assert torch.equal(a["masked"], c["masked"])  # a second epoch
    assert any(not torch.equal(first[i]["masked"], other[i]["masked"]) for i in range(3))


def test_the_held_out_families_come_from_the_config(masked_cfg):
    cfg = masked_cfg("masks.held_out_styles=[n95]")
    assert mask_styles(cfg, "test") == ("n95",)
    assert "n95" not in mask_styles(cfg, "train") and "kn95" in mask_styles(cfg, "train")
    dm = MaskedFaceDataModule(cfg)
    assert {item["style"] for item in _items(dm.dataset("test"))} == {"n95"}
    # a split can be drawn with other families, e.g. to score the test faces under the training ones
    assert {item["style"] for item in _items(dm.dataset("test", styles=["cloth_dots"]))} == {"cloth_dots"}


def test_an_unknown_family_or_none_left_to_train_names_the_key(masked_cfg):
    with pytest.raises(ConfigError, match=r"masks.held_out_styles.*surgical_gren"):
        mask_styles(masked_cfg("masks.held_out_styles=[surgical_gren]"), "test")
    every = ",".join(masks.FAMILIES)
    with pytest.raises(ConfigError, match=r"masks.held_out_styles.*none to train on"):
        mask_styles(masked_cfg(f"masks.held_out_styles=[{every}]"), "train")


def test_with_p_zero_faces_stay_bare(masked_cfg):
    item = MaskedFaceDataModule(masked_cfg("masks.p=0", "masks.negative_p=0")).dataset("val")[0]
    assert torch.equal(item["masked"], item["face"])
    assert item["region"].sum() == 0 and item["style"] == "" and item["is_face"] == 1


def test_a_share_of_rows_are_crops_that_are_not_faces(masked_cfg):
    """masks.negative_p: those rows hold a faces.negatives crop with an empty region and is_face 0, the same in
    every call; with masks.face_weight=0 (no face head to train) there are none."""
    ds = MaskedFaceDataModule(masked_cfg("masks.negative_p=0.5")).dataset("train")
    items = [ds[i] for i in range(len(ds))]
    negatives = [it for it in items if it["is_face"] == 0]
    assert 0.2 * len(items) < len(negatives) < 0.8 * len(items)
    for it in negatives:
        assert it["region"].sum() == 0 and not torch.equal(it["masked"], it["face"])
        assert it["masked"].dtype == torch.uint8 and it["masked"].shape == it["face"].shape
    assert all(it["region"].sum() > 0 for it in items if it["is_face"] == 1)
    again = [ds[i]["is_face"] for i in range(len(ds))]
    assert again == [it["is_face"] for it in items]
    plain = MaskedFaceDataModule(masked_cfg("masks.negative_p=0.5", "masks.face_weight=0")).dataset("train")
    assert all(plain[i]["is_face"] == 1 for i in range(len(plain)))


def test_the_schema_defaults_are_the_mask_drawings_own():
    cfg = load_config()
    assert tuple(cfg.masks.held_out_styles) == masks.HELD_OUT_STYLES
    assert tuple(cfg.masks.height_range) == masks.HEIGHT_RANGE
    assert (cfg.masks.redraw_dilate_px, cfg.masks.redraw_feather_px) == (masks.REDRAW_DILATE_PX,
                                                                       masks.REDRAW_FEATHER_PX)
    assert "segmenter" in cfg.stages and "segmenter" not in STAGES  # train-all keeps its three stages


@pytest.mark.parametrize("override, key", [
    ("masks.p=1.5", "masks.p"), ("masks.held_out_styles=[]", "masks.held_out_styles"),
    ("masks.height_range=[0.8,0.2]", "masks.height_range"), ("masks.seed=-1", "masks.seed"),
    ("masks.redraw_dilate_px=-1", "masks.redraw_dilate_px"), ("masks.segmenter_width=0", "masks.segmenter_width"),
    ("masks.segmenter_depth=8", "masks.segmenter_depth"), ("masks.threshold=1", "masks.threshold"),
    ("masks.negative_p=1", "masks.negative_p"), ("masks.face_weight=-1", "masks.face_weight"),
    ("masks.face_threshold=0", "masks.face_threshold"),
    ("stages.segmenter.lr=0", "stages.segmenter.lr"),
])
def test_out_of_range_mask_keys_are_refused_by_name(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, ["data.image_size=64", override])


def test_region_pixels_match_draw_mask_on_the_same_face(masked_cfg):
    dm = MaskedFaceDataModule(masked_cfg("masks.negative_p=0"))  # a face, not a crop that is none
    item = dm.dataset("val")[0]
    style = masks.MaskAugment(styles=masks.HELD_OUT_STYLES).style(np.random.default_rng((0, item["row"])))
    face = np.ascontiguousarray(item["face"].permute(1, 2, 0).numpy())
    _, region = masks.draw_mask(face, item["landmarks"].numpy() * SIZE, style)
    assert np.array_equal(region, item["region"][0].numpy())


def test_the_camera_moves_and_degrades_train_crops_only_and_repeats_with_the_torch_seed(masked_cfg):
    """masks.augment: train crops change anew each time (the mask itself is the row's), held-out ones never do,
    and a run's crops follow the torch seed (albumentations' own RNG is seeded from it)."""
    dm = MaskedFaceDataModule(masked_cfg())
    train, test = dm.dataset("train", train=True), dm.dataset("test")
    plain = MaskedFaceDataModule(masked_cfg("masks.augment=false")).dataset("train", train=True)
    assert test.camera is None and plain.camera is None and train.camera is not None
    changed = [not torch.equal(train[i]["masked"], plain[i]["masked"]) for i in range(8)]
    assert sum(changed) >= 6  # each transform at p=0.6: nearly every crop meets at least one
    assert torch.equal(test[0]["masked"], test[0]["masked"])
    torch.manual_seed(5)
    first = MaskedFaceDataModule(masked_cfg()).dataset("train", train=True)
    a = [first[i]["masked"] for i in range(4)]
    torch.manual_seed(5)
    again = MaskedFaceDataModule(masked_cfg()).dataset("train", train=True)
    assert all(torch.equal(x, again[i]["masked"]) for i, x in enumerate(a))


def test_the_camera_moves_the_region_with_the_mask():
    """Shift, scale and rotation reach the region exactly as the pixels: a white square on black keeps its region
    on it through every draw, and the region does move."""
    from antimask.data.masked import segmenter_transform

    cfg = load_config(None, ["masks.augment_p=1", "masks.shift=0.1", "masks.rotate=15"])
    camera = segmenter_transform(cfg)
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:44, 16:40] = 255
    region = np.zeros((64, 64), np.uint8)
    region[20:44, 16:40] = 1
    moved = 0
    for _ in range(10):
        out = camera(image=image, mask=region)
        inside = out["mask"] > 0
        grey = out["image"].astype(np.float32).mean(-1)
        assert inside.sum() > 300 and grey[inside].mean() > 150 and grey[~inside].mean() < 60
        moved += not np.array_equal(inside, region > 0)
    assert moved >= 8


def test_camera_settings_are_checked():
    for bad in ("masks.augment_p=1.5", "masks.shift=0.6", "masks.downscale_min=0", "masks.jpeg_quality_min=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[1]):
            load_config(None, [bad])
