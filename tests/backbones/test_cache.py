"""The feature cache: computed once, resumed after a crash, refused when it holds NaN/inf; on the trainer's
accelerator (the CPU when it has none), dlib over several processes, bitwise the plain loop's features on the CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from antimask.backbones import (
    FeatureCacheError,
    FrozenBackbone,
    cached_features,
    create_backbone,
    feature_key,
    load_cached_features,
    to_training_device,
    training_device,
)
from antimask.backbones.dlib_descriptor import DlibDescriptor
from antimask.backbones.face_networks import FaceNetwork
from antimask.backbones.timm_backbone import TimmBackbone
from antimask.backbones.vggface import VGGFace
from antimask.data.store import Table, open_store, write_group
from antimask.faces.images import to_float

N = 10


class CountingBackbone(FrozenBackbone):
    """Per-channel means and spreads of the face (D = 6), counting calls; can crash after some calls."""

    def __init__(self, crash_after=None, tag="w1"):
        super().__init__()
        self.name, self.feature_dim, self.input_size = "counting", 6, 224
        self.differentiable, self.weights_hash = True, tag
        self.calls, self.rows, self.crash_after = 0, 0, crash_after

    def features(self, x):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.rows += len(x)
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, 224, 224, 3), dtype=np.uint8)
    landmarks = np.zeros((N, 68, 2), np.float32)
    table = Table.from_records([{"row": i, "kind": "photo", "split": "train", "identity": str(i)} for i in range(N)])
    write_group(tmp_path / "store", images, landmarks, table, {})
    return open_store(tmp_path / "store")


def direct(store, backbone) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(store.images[0:N])).permute(0, 3, 1, 2).float() / 255
    return backbone(x).numpy()


def test_second_call_hits_the_cache(store):
    first = CountingBackbone()
    features = cached_features(store, first, batch_size=4, progress=False)
    assert features.shape == (N, 6) and features.dtype == np.float32 and first.calls == 3
    np.testing.assert_allclose(features, direct(store, CountingBackbone()), rtol=1e-6)
    key = feature_key(store, first)
    folder = store.root / "features"
    assert sorted(p.name for p in folder.iterdir()) == [f"{key}.json", f"{key}.npy"]
    meta = json.loads((folder / f"{key}.json").read_text())
    assert meta["backbone"] == "counting" and meta["weights_hash"] == "w1" and meta["shape"] == [N, 6]
    assert meta["store_digest"] == store.digest

    second = CountingBackbone()
    again = cached_features(store, second, batch_size=4, progress=False)
    assert second.calls == 0
    np.testing.assert_array_equal(again, features)
    np.testing.assert_array_equal(load_cached_features(store, key), features)


def test_key_depends_on_weights_and_options(store):
    a, b = CountingBackbone(tag="w1"), CountingBackbone(tag="w2")
    assert feature_key(store, a) != feature_key(store, b)
    assert feature_key(store, a) == feature_key(store, CountingBackbone(tag="w1"))
    assert feature_key(store, a).startswith("counting-")


def test_interrupted_run_resumes_where_it_stopped(store, tmp_path):
    crashing = CountingBackbone(crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        cached_features(store, crashing, batch_size=3, progress=False)
    key = feature_key(store, crashing)
    folder = store.root / "features"
    assert not (folder / f"{key}.npy").exists()
    assert json.loads((folder / f"{key}.progress.json").read_text())["done"] == 6

    resumed = CountingBackbone()
    features = cached_features(store, resumed, batch_size=3, progress=False)
    assert resumed.rows == N - 6 and resumed.calls == 2  # rows 6..9 only
    np.testing.assert_allclose(features, direct(store, CountingBackbone()), rtol=1e-6)
    assert sorted(p.name for p in folder.iterdir()) == [f"{key}.json", f"{key}.npy"]


def test_nan_in_a_cache_is_refused_naming_file_and_rows(store):
    backbone = CountingBackbone()
    cached_features(store, backbone, batch_size=4, progress=False)
    path = store.root / "features" / f"{feature_key(store, backbone)}.npy"
    bad = np.load(path)
    bad[3, 1], bad[7, 0] = np.nan, np.inf
    np.save(path, bad)
    with pytest.raises(FeatureCacheError) as err:
        cached_features(store, CountingBackbone(), progress=False)
    assert str(path) in str(err.value) and "2 rows (3, 7)" in str(err.value)


def test_cache_of_the_wrong_length_is_refused(store):
    backbone = CountingBackbone()
    cached_features(store, backbone, batch_size=4, progress=False)
    path = store.root / "features" / f"{feature_key(store, backbone)}.npy"
    np.save(path, np.zeros((N - 1, 6), np.float32))
    with pytest.raises(FeatureCacheError, match=r"expected float32 \(10, 6\)"):
        load_cached_features(store, feature_key(store, backbone))


def test_nan_from_the_backbone_is_not_cached(store):
    class NaNBackbone(CountingBackbone):
        def features(self, x):
            out = super().features(x)
            out[0, 0] = float("nan")
            return out

    backbone = NaNBackbone()
    with pytest.raises(FeatureCacheError, match=r"rows \[0\]"):
        cached_features(store, backbone, batch_size=4, progress=False)
    assert not (store.root / "features" / f"{feature_key(store, backbone)}.npy").exists()


# --- where the features are computed ------------------------------------------------------------------------

@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto"])
def test_the_backbones_run_on_the_gpu_the_trainer_asks_for(accelerator, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device(accelerator) == torch.device("cuda")
    assert capsys.readouterr().out == ""


def test_the_cpu_trainer_keeps_the_backbones_on_the_cpu_even_beside_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_asked_for_but_missing_falls_back_to_the_cpu_saying_so_in_one_line(accelerator, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    backbone = to_training_device(CountingBackbone(), accelerator)
    assert backbone.device == torch.device("cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"trainer.accelerator={accelerator}" in out and "on the CPU" in out


def test_auto_without_a_gpu_uses_the_cpu_quietly(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert training_device("auto") == torch.device("cpu")
    assert capsys.readouterr().out == ""


def test_dlib_stays_on_the_cpu_whatever_the_trainer_runs_on(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    dlib = create_backbone("dlib")
    assert to_training_device(dlib, "gpu") is dlib and not dlib.torch_network
    assert capsys.readouterr().out == ""


def test_vggface_and_timm_allow_bf16_the_face_networks_do_not_and_dlib_is_not_a_torch_network():
    assert VGGFace.bf16 and TimmBackbone.bf16 and not FaceNetwork.bf16 and not FrozenBackbone.bf16
    assert DlibDescriptor.torch_network is False and VGGFace.torch_network and FaceNetwork.torch_network


def test_cpu_features_are_bitwise_those_of_a_plain_loop_and_say_where_they_were_made(store):
    backbone = CountingBackbone()
    features = cached_features(store, backbone, batch_size=4, progress=False)
    plain = np.concatenate([backbone(to_float(store.images[i:i + 4])).numpy() for i in range(0, N, 4)])
    np.testing.assert_array_equal(features, plain)
    meta = json.loads((store.root / "features" / f"{feature_key(store, backbone)}.json").read_text())
    assert meta["computed_on"] == "cpu" and meta["precision"] == "float32"


def test_dlib_spread_over_processes_gives_bitwise_the_features_of_one_process(store, monkeypatch):
    import antimask.backbones.cache as cache

    monkeypatch.setattr(cache, "POOL_MIN_ROWS", 4)  # this store's 10 rows are worth a pool here
    one = cached_features(store, create_backbone("dlib"), batch_size=4, progress=False, workers=1)
    shutil.rmtree(store.root / "features")
    pooled = cached_features(store, create_backbone("dlib"), batch_size=4, progress=False, workers=2)
    np.testing.assert_array_equal(pooled, one)


def test_worker_processes_that_die_leave_the_rest_to_this_process_with_a_message(capsys):
    from antimask.backbones import DescriptorPool, features_in_memory
    from helpers import DiesInAWorker

    faces = np.random.default_rng(3).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    with DescriptorPool(2, min_rows=1) as pool:
        out = features_in_memory(DiesInAWorker(), faces, batch_size=4, pool=pool)
        assert "worker processes stopped" in capsys.readouterr().out
        assert pool.broken and not pool.spreads(DiesInAWorker(), 10**6)  # later passes do not try again
        again = features_in_memory(DiesInAWorker(), faces, batch_size=4, pool=pool)
    expected = features_in_memory(DiesInAWorker(), faces, batch_size=4)  # no pool: this process
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(again, expected)
