"""The GPU path on the CPU (issue 22): uint8 batches unpacked on the device give the losses and gradients the float
batches of before gave; device-resident splits give the loader's batches, refuse what does not fit and train."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from antimask.data.datamodule import FaceDataModule, unpack_batch
from antimask.data.masked import MaskedFaceDataModule
from antimask.data.resident import DeviceMemoryError, ResidentBatches, resident_bytes
from antimask.faces import masks
from antimask.faces.align import FLIP_PERMUTATION, LOWER_POINTS
from antimask.faces.images import to_float, to_uint8
from antimask.models import EncoderDistillModule, FaceDecoderModule, MaskDecoderModule
from antimask.models.segmenter import MaskSegmenterModule
from helpers import build_module

SIZE, ROW, FEATURES = 64, 27, 16
# float32 rounding: faces are bit-identical (x / 255 either way); a mirrored landmark differs by an ulp
# ((S - 1 - x) / S before, (S - 1) / S - x / S now)
TOL = dict(atol=1e-6, rtol=1e-5)
SMALL = dict(shared_dim=32, decoder_channels=32, decoder_upsamplings=3)


def _datamodule(cfg, stage=None, cls=FaceDataModule):
    dm = cls(cfg) if cls is MaskedFaceDataModule else cls(cfg, stage=stage)
    dm.setup("fit")
    dm.attach_features(np.random.default_rng(0).standard_normal((len(dm.store), FEATURES)).astype(np.float32))
    return dm


def _todays_sample(faces, index: int, flip: bool, row_masks=None) -> dict:
    """A sample as FaceDataset (and RowMasks) made it before batches left the loader as uint8: float faces, flipped
    in numpy, the mask drawn on the flipped face. The reference the unpacked batches must equal."""
    row = int(faces.rows[index])
    image = np.asarray(faces.images[row])
    lmk = faces.landmarks[row].copy()
    if flip:
        image = image[:, ::-1]
        lmk[:, 0] = (faces.size - 1) - lmk[:, 0]
        lmk = lmk[FLIP_PERMUTATION]
    face = to_float(image)
    lmk = torch.from_numpy(lmk / faces.size)
    item = {"face": face, "upper": face[:, :ROW], "lower": face[:, ROW:], "landmarks": lmk,
            "lower_landmarks": lmk[LOWER_POINTS], "features": torch.from_numpy(faces.features[row])}
    if row_masks is not None:
        style = row_masks.augment.style(np.random.default_rng((row_masks.augment.seed, row)))
        drawn, region = ((to_uint8(face), np.zeros((SIZE, SIZE), bool)) if style is None
                         else masks.draw_mask(to_uint8(face), lmk.numpy() * SIZE, style))
        item.update(masked=to_float(drawn), region=torch.from_numpy(region[None].astype(np.float32)))
        if row_masks.redraw is not None:
            item["redraw"] = torch.from_numpy(masks.redraw_region(region, *row_masks.redraw)[None])
    return item


def _both_batches(dataset, faces, row_masks, flip: bool, n: int = 8) -> tuple[dict, dict]:
    """(unpacked uint8 batch, today's float batch) of the first n samples, mirrored alike when ``flip``."""
    packed = default_collate([dataset[i] for i in range(n)])
    assert packed["face"].dtype == torch.uint8 and "upper" not in packed
    torch.manual_seed(5)
    mirror = (torch.rand(n) < 0.5).tolist() if flip else [False] * n
    assert not flip or 0 < sum(mirror) < n
    torch.manual_seed(5)
    new = unpack_batch(packed, ROW, flip=flip)
    old = default_collate([_todays_sample(faces, i, m, row_masks) for i, m in enumerate(mirror)])
    # the keys the reference does not make (row, style, is_face, ...) as they are; the segmenter's hold fewer
    old = {key: old.get(key, value) for key, value in new.items()}
    assert torch.equal(new["face"], old["face"]) and (row_masks is None or torch.equal(new["masked"], old["masked"]))
    for key in old:
        if torch.is_tensor(old[key]):
            torch.testing.assert_close(new[key], old[key], atol=1e-6, rtol=0)
    return new, old


def _loss_and_grads(module, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    module.zero_grad()
    loss, _ = module.compute_losses(batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]


STAGE_CASES = [  # (stage, module, its changes, config overrides, flip)
    ("face_decoder", FaceDecoderModule, SMALL, (), True),
    ("mask_decoder", MaskDecoderModule, SMALL, (), True),
    ("encoder", EncoderDistillModule, dict(encoder_width=8), (), True),
    # mask_aware samples: the flip now mirrors the drawn mask with the face (before, the mask was drawn on the
    # mirrored face), so they are compared unflipped
    ("mask_decoder", MaskDecoderModule, dict(SMALL, decoder="appearance", mask_aware=True),
     ("model.decoder=appearance", "model.mask_aware=true", "masks.redraw_dilate_px=3"), False),
    ("encoder", EncoderDistillModule, dict(encoder_width=8, mask_aware=True),
     ("model.decoder=appearance", "model.mask_aware=true"), False),
]


@pytest.mark.parametrize("stage, cls, changes, overrides, flip", STAGE_CASES)
def test_uint8_batches_give_the_float_batches_losses_and_gradients(store64_cfg, stage, cls, changes, overrides, flip):
    dataset = _datamodule(store64_cfg(*overrides), stage).dataset("train", train=True)
    new, old = _both_batches(dataset, dataset, dataset.masks, flip)
    torch.manual_seed(0)
    module = build_module(cls, FEATURES, SIZE, ROW, **changes)
    new_loss, new_grads = _loss_and_grads(module, new)
    old_loss, old_grads = _loss_and_grads(module, old)
    torch.testing.assert_close(new_loss, old_loss, **TOL)
    assert len(new_grads) == len(old_grads) > 0
    for a, b in zip(new_grads, old_grads):
        torch.testing.assert_close(a, b, **TOL)


def test_the_segmenters_uint8_batches_give_the_same_loss(store64_cfg):
    # masks.negative_p=0: every row a masked face, as the float reference draws them
    cfg = store64_cfg("masks.segmenter_width=8", "masks.segmenter_depth=3", "masks.negative_p=0")
    dataset = _datamodule(cfg, cls=MaskedFaceDataModule).dataset("val")
    packed = dataset[0]
    assert packed["masked"].dtype == torch.uint8 and packed["region"].dtype == torch.bool
    new, old = _both_batches(dataset, dataset.faces, dataset.masks, flip=False, n=3)
    torch.manual_seed(0)
    module = MaskSegmenterModule.from_config(cfg)
    new_loss, new_grads = _loss_and_grads(module, new)
    old_loss, old_grads = _loss_and_grads(module, old)
    torch.testing.assert_close(new_loss, old_loss, **TOL)
    for a, b in zip(new_grads, old_grads):
        torch.testing.assert_close(a, b, **TOL)


def _epochs(dm: FaceDataModule, epochs: int = 2) -> list[dict]:
    """Every unpacked batch of ``epochs`` passes over train then val, as a trainer draws them."""
    torch.manual_seed(3)
    out = []
    for _ in range(epochs):
        for loader, train in ((dm.train_dataloader(), True), (dm.val_dataloader(), False)):
            out += [unpack_batch(batch, dm.split_row, flip=train) for batch in loader]
    return out


def test_device_resident_splits_give_the_loaders_batches_for_the_same_seed(store64_cfg):
    overrides = ("data.batch_size=4", "data.flip=true")
    loader = _datamodule(store64_cfg(*overrides), "mask_decoder")
    resident = _datamodule(store64_cfg(*overrides, "data.device_resident=true"), "mask_decoder")
    assert isinstance(loader.train_dataloader(), DataLoader)
    assert isinstance(resident.train_dataloader(), ResidentBatches)
    assert len(resident.train_dataloader()) == len(loader.train_dataloader()) == 6  # 21 train faces, last batch 1
    a, b = _epochs(loader), _epochs(resident)
    assert len(a) == len(b) == 2 * (6 + 1)
    assert a[0]["row"].tolist() != a[7]["row"].tolist()  # reshuffled each epoch
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_a_split_that_does_not_fit_its_budget_is_refused_with_the_sizes(store64_cfg):
    cfg = store64_cfg("data.device_resident=true", "data.device_memory_fraction=1e-9")
    dm = _datamodule(cfg, "face_decoder")
    needed = resident_bytes(21, SIZE, FEATURES)
    with pytest.raises(DeviceMemoryError) as err:
        dm.train_dataloader()
    text = str(err.value)
    assert str(dm.root) in text and f"{needed:,} bytes" in text and "budget of" in text
    assert "data.device_memory_fraction=1e-09 of the" in text and "data.device_resident=false" in text


def test_each_ddp_rank_holds_only_its_share(store64_cfg):
    cfg = store64_cfg("data.device_resident=true", "data.batch_size=4")
    shares = []
    for rank in (0, 1):
        dm = _datamodule(cfg, "face_decoder")
        dm.trainer = type("Trainer", (), {"global_rank": rank, "world_size": 2, "training": False,
                                          "strategy": type("S", (), {"root_device": torch.device("cpu")})})()
        batches = dm.train_dataloader()
        assert batches.batch_size == 2 and batches.nbytes == resident_bytes(11, SIZE, FEATURES)
        shares.append(set(batches.tensors["row"].tolist()))
    train = set(dm.store.rows("train").tolist())
    assert shares[0] | shares[1] == train and len(shares[0] & shares[1]) == 1  # 21 rows: one repeated, as DDP pads


def test_splits_with_per_face_numpy_work_keep_the_loader(store64_cfg):
    encoder = _datamodule(store64_cfg("data.device_resident=true", "data.photometric=true"), "encoder")
    assert isinstance(encoder.train_dataloader(), DataLoader)  # albumentations in the workers
    assert isinstance(encoder.val_dataloader(), ResidentBatches)  # no photometrics on val
    masked = _datamodule(store64_cfg("data.device_resident=true", "model.decoder=appearance", "model.mask_aware=true"),
                         "mask_decoder")
    assert isinstance(masked.train_dataloader(), DataLoader) and isinstance(masked.val_dataloader(), DataLoader)


def _fit(cfg, tmp_path, stage: str = "face_decoder"):
    from antimask.training import train_stage

    dm = FaceDataModule(cfg, stage=stage)
    dm.setup("fit")
    dm.attach_features(np.random.default_rng(0).standard_normal((len(dm.store), FEATURES)).astype(np.float32))
    return train_stage(cfg, stage, datamodule=dm)


@pytest.mark.parametrize("stage", ["face_decoder", "mask_decoder"])
def test_fast_dev_run_with_device_resident_data_on_the_cpu(store64_cfg, tmp_path, stage):
    cfg = store64_cfg("data.device_resident=true", "data.flip=true", "trainer.fast_dev_run=true",
                      "trainer.accelerator=cpu", f"run.dir={tmp_path}", "data.batch_size=8")
    metrics, objects = _fit(cfg, tmp_path, stage)
    assert objects["trainer"].global_step == 1
    assert isinstance(objects["trainer"].train_dataloader, ResidentBatches)
    assert all(np.isfinite(v) for v in metrics.values())


def test_an_epoch_with_device_resident_data_learns_what_the_loader_teaches(store64_cfg, tmp_path):
    """Through Lightning: the same seed gives the same batches, flips and so the same losses either way."""
    base = ("data.flip=true", "trainer.accelerator=cpu", "data.batch_size=8", "stages.face_decoder.max_epochs=2",
            "model.shared_dim=32", "model.decoder_channels=32", "model.decoder_upsamplings=3")
    first, _ = _fit(store64_cfg(*base, f"run.dir={tmp_path / 'loader'}"), tmp_path)
    second, _ = _fit(store64_cfg(*base, f"run.dir={tmp_path / 'resident'}", "data.device_resident=true"), tmp_path)
    assert first.keys() == second.keys() and "val/loss" in first
    for key in first:
        assert first[key] == pytest.approx(second[key], rel=1e-6, abs=1e-6), key
