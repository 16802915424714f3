"""FaceDataModule on a real store: shapes and ranges at three sizes, flips, splits, errors, and DDP shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import default_collate

from real_faces import detect_landmarks, write_store
from antimask.config import load_config, split_row_for
from antimask.faces.align import LOWER_POINTS
from antimask.data.datamodule import FaceDataModule, mirror_batch, unpack_batch
from antimask.data.resized import cache_path
from antimask.pipeline import prepare_data
from antimask.data.store import StoreError


def _cfg(root, size, **data):
    overrides = [f"data.store={root}", f"data.image_size={size}", "data.num_workers=0", "data.batch_size=8",
                 "augment.neighbors=2", "augment.workers=1"]
    overrides += [f"data.{k}={v}" for k, v in data.items()]
    return load_config(overrides=overrides)


def _module(cfg, stage=None):
    prepare_data(cfg)
    dm = FaceDataModule(cfg, stage=stage)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def _prepared_store(utk_faces, tmp_path_factory):
    """A 40-face store prepared once for the module: its morphs and features (the slow part, dlib's
    descriptors), no resized cache."""
    images, landmarks, names = utk_faces
    root = write_store(tmp_path_factory.mktemp("datamodule") / "store", images[:40], landmarks[:40], names[:40])
    prepare_data(_cfg(root, 224))
    assert not any(cache_path(root, size).exists() for size in (64, 112))
    return root


@pytest.fixture
def store_root(_prepared_store, tmp_path):
    """This test's own copy of the prepared store: what a test writes (a resized cache) no other test sees."""
    return Path(shutil.copytree(_prepared_store, tmp_path / "store"))


@pytest.mark.parametrize("size", [64, 112, 224])
def test_sample_shapes_dtypes_ranges(store_root, size):
    dm = _module(_cfg(store_root, size))
    row = split_row_for(size)
    assert row == {64: 27, 112: 48, 224: 96}[size]
    packed = next(iter(dm.train_dataloader()))  # uint8 faces travel; the device unpacks them
    assert packed["face"].shape == (8, 3, size, size) and packed["face"].dtype == torch.uint8
    assert not {"upper", "lower", "lower_landmarks"} & set(packed)
    batch = unpack_batch(packed, row)
    assert batch["face"].shape == (8, 3, size, size) and batch["face"].dtype == torch.float32
    assert batch["upper"].shape == (8, 3, row, size) and batch["lower"].shape == (8, 3, size - row, size)
    assert torch.equal(torch.cat([batch["upper"], batch["lower"]], 2), batch["face"])
    assert 0 <= batch["face"].min() and batch["face"].max() <= 1 and batch["face"].std() > 0.05
    assert batch["landmarks"].shape == (8, 68, 2) and batch["landmarks"].dtype == torch.float32
    assert batch["lower_landmarks"].shape == (8, len(LOWER_POINTS), 2)
    assert torch.equal(batch["lower_landmarks"], batch["landmarks"][:, LOWER_POINTS])
    assert -0.2 < batch["landmarks"].min() and batch["landmarks"].max() < 1.2  # a jaw may leave the frame
    assert 0.2 < batch["landmarks"].mean() < 0.8
    assert batch["identity"].dtype == torch.int64 and batch["row"].dtype == torch.int64
    # normalised landmarks mean the same at every size: the chin sits near row 206/224
    assert abs(batch["landmarks"][:, 8, 1].mean().item() - 206 / 224) < 0.03
    train = dm.dataset("train", train=True)
    assert len(train) == len(dm.store.rows("train")) > len(dm.store.rows("train", morphs=False))
    assert set(dm.dataset("val").rows) == set(dm.store.rows("val", morphs=False))
    if size != 224:
        assert cache_path(store_root, size).exists()
        info = json.loads(cache_path(store_root, size).with_suffix(".json").read_text())
        assert info["store_digest"] == dm.store.digest


def test_features_are_indexed_by_row(store_root):
    dm = _module(_cfg(store_root, 64))
    feats = np.arange(len(dm.store) * 4, dtype=np.float32).reshape(-1, 4)
    dm.attach_features(feats)
    item = dm.dataset("test")[3]
    assert item["features"].shape == (4,) and torch.equal(item["features"], torch.from_numpy(feats[item["row"]]))
    with pytest.raises(ValueError, match="rows"):
        dm.attach_features(feats[:5])


def test_flip_mirrors_and_permutes_landmarks(store_root):
    dm = _module(_cfg(store_root, 224))
    packed = default_collate([dm.dataset("train")[0]])
    plain = {k: v[0] for k, v in unpack_batch(packed, dm.split_row).items()}
    flipped = {k: v[0] for k, v in unpack_batch(mirror_batch(packed, torch.tensor([True])), dm.split_row).items()}
    assert torch.equal(flipped["face"], plain["face"].flip(-1))
    assert torch.equal(flipped["lower_landmarks"], flipped["landmarks"][LOWER_POINTS])
    # dlib on the mirrored image finds the landmarks the dataset says are there (indices swapped)
    image = (flipped["face"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    found = detect_landmarks(image) / 224
    assert np.abs(found - flipped["landmarks"].numpy()).mean() < 3 / 224
    unpermuted = plain["landmarks"].numpy().copy()
    unpermuted[:, 0] = 223 / 224 - unpermuted[:, 0]
    assert np.abs(found - unpermuted).mean() > 2 * np.abs(found - flipped["landmarks"].numpy()).mean()


def test_photometric_changes_pixels_not_landmarks(store_root):
    dm = _module(_cfg(store_root, 64, photometric=True, photometric_p=1.0))
    ds = dm.dataset("train", train=True)
    a, b = ds[0], dm.dataset("train", train=False)[0]
    assert not torch.equal(a["face"], b["face"]) and torch.equal(a["landmarks"], b["landmarks"])


def test_photometric_repeats_with_the_torch_seed(store_root):
    """albumentations has its own RNG: a run's photometric faces must follow run.seed like the rest."""
    cfg = _cfg(store_root, 64, photometric=True, photometric_p=1.0)

    def faces(seed):
        torch.manual_seed(seed)
        ds = _module(cfg).dataset("train", train=True)
        return torch.stack([ds[i]["face"] for i in range(4)])

    first = faces(3)
    assert torch.equal(first, faces(3))
    assert not torch.equal(first, faces(4))


@pytest.mark.parametrize("stage, jittered", [("encoder", True), ("mask_decoder", False), ("face_decoder", False)])
def test_photometric_reaches_only_the_encoder_stage(store_root, stage, jittered):
    """A decoder's target faces must stay the faces the teacher features describe."""
    dm = _module(_cfg(store_root, 64, photometric=True, photometric_p=1.0), stage=stage)
    a, b = dm.dataset("train", train=True)[0], dm.dataset("train", train=False)[0]
    assert torch.equal(a["face"], b["face"]) != jittered


def test_errors(make_store, tmp_path):
    root = make_store(20, splits=["train"] * 17 + ["test"] * 3)
    dm = _module(_cfg(root, 64))
    with pytest.raises(StoreError, match="'val' split has no faces"):
        dm.val_dataloader()
    header = json.loads((root / "header.json").read_text())
    (root / "header.json").write_text(json.dumps({**header, "version": 999}))
    with pytest.raises(StoreError, match="rebuild"):
        FaceDataModule(_cfg(root, 64)).setup("fit")
    (root / "header.json").write_text(json.dumps(header))
    with open(root / "images.npy", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(StoreError, match="truncated"):
        FaceDataModule(_cfg(root, 64)).setup("fit")
    with pytest.raises(ValueError, match="divisible"):
        dm = FaceDataModule(_cfg(make_store(20, name="odd"), 64, batch_size=7))
        dm.trainer = type("T", (), {"world_size": 2})()
        dm.batch_size_per_device


class RowRecorder(pl.LightningModule):
    """Writes the store rows each rank trained on to out_dir/rank<r>.json."""

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, _):
        self.seen += batch["row"].tolist()
        return (self.weight * batch["face"].mean()).sum() ** 2

    def on_train_epoch_end(self):
        (self.out_dir / f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def teardown(self, stage):
        # Leave gloo's threads stopped before the spawned rank exits: a process group still alive at interpreter
        # exit now and then aborts the rank ("terminate called without an active exception", SIGABRT).
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("resident", [False, True])
def test_ddp_ranks_read_disjoint_shards(store_root, tmp_path, resident):
    cfg = _cfg(store_root, 64, batch_size=4, device_resident=resident)  # resident: each rank holds only its shard
    prepare_data(cfg)  # the datamodule opens a prepared store; it prepares nothing itself
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(RowRecorder(tmp_path), datamodule=FaceDataModule(cfg))
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    dm = _module(cfg)
    train = set(dm.store.rows("train").tolist())
    assert len(seen[0]) == len(seen[1]) == -(-len(train) // 2)
    assert set(seen[0]) | set(seen[1]) == train
    # DistributedSampler pads an odd count with one repeated row; otherwise the shards are disjoint
    assert len(set(seen[0]) & set(seen[1])) == len(train) % 2
