"""VGG-Face loads both published layouts: the PyTorch vgg_face_dag.pth and rcmalli's Keras .h5."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
import torch

from antimask.backbones import WeightsError, create_backbone
from antimask.backbones.vggface import (
    MEAN_RGB, POOL_AFTER, H5_URL, PTH_URL, VGGFace, conv_specs, expected_shapes, init_random, keras_shapes,
)


def keras_layers(state: dict[str, torch.Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What keras-vggface stores for these weights: BGR conv1_1, (3, 3, in, out) kernels, fc6 rows in HWC order."""
    layers = {}
    for name, _, _ in conv_specs():
        w = state[f"{name}.weight"].numpy()
        if name == "conv1_1":
            w = w[:, ::-1]
        layers[name] = (np.ascontiguousarray(w.transpose(2, 3, 1, 0)), state[f"{name}.bias"].numpy())
    w6 = state["fc6.weight"].numpy().reshape(4096, 512, 7, 7).transpose(0, 2, 3, 1).reshape(4096, -1)
    layers["fc6"] = (np.ascontiguousarray(w6.T), state["fc6.bias"].numpy())
    for name in ("fc7", "fc8"):
        layers[name] = (np.ascontiguousarray(state[f"{name}.weight"].numpy().T), state[f"{name}.bias"].numpy())
    return layers


def write_keras_h5(path, layers: dict, names=None) -> None:
    """Keras 2 ``save_weights`` layout: one group per layer, ``weight_names`` attributes, pool/flatten groups empty."""
    order = ["input_1"] + [n for n, _, _ in conv_specs()] + ["pool5", "flatten", "fc6", "fc6/relu", "fc7", "fc8"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in order]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for name in order:
            g = f.create_group(name)
            if name in layers:
                kernel, bias = layers[name]
                g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
                g.create_dataset(f"{name}/kernel:0", data=kernel)  # weight names are paths below the group
                g.create_dataset(f"{name}/bias:0", data=bias)
            else:
                g.attrs["weight_names"] = np.array([], dtype="S1")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A full-size random VGG-Face in both published formats, made from the same numbers."""
    folder = tmp_path_factory.mktemp("vggface")
    state = {k: v.clone() for k, v in init_random(VGGFace(), seed=1).state_dict().items()}
    for k in state:  # non-zero biases, so a bias loaded into the wrong place shows
        if k.endswith(".bias"):
            state[k].uniform_(-0.1, 0.1)
    pth, h5 = folder / "vgg_face_dag.pth", folder / "rcmalli_vggface_tf_vgg16.h5"
    torch.save(state, pth)
    layers = keras_layers(state)
    write_keras_h5(h5, layers)
    return {"state": state, "pth": pth, "h5": h5, "layers": layers}


@pytest.fixture(scope="module")
def pth_model(weights):
    return create_backbone("vggface", weights=weights["pth"])


@pytest.fixture(scope="module")
def h5_model(weights):
    return create_backbone("vggface", weights=weights["h5"])


@pytest.fixture(scope="module")
def faces():
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 28, 28, generator=gen), size=224, mode="bilinear")
    return smooth.clamp(0, 1)


@pytest.fixture(scope="module")
def pool5(pth_model, h5_model, faces):
    """pool5 of the face through each model (the convolutions are the slow part: run them once)."""
    return {"pth": pth_model.pool5(pth_model.preprocess(faces)), "h5": h5_model.pool5(h5_model.preprocess(faces))}


def numpy_keras_fc7(layers: dict, rgb01: np.ndarray) -> np.ndarray:
    """The Keras VGGFace model in plain numpy: BGR 0-255 minus the BGR mean, NHWC, HWC flatten before fc6."""
    x = (rgb01.transpose(1, 2, 0) * 255.0)[:, :, ::-1] - np.array(MEAN_RGB[::-1])
    x = x.astype(np.float32)
    for name, _, cout in conv_specs():
        kernel, bias = layers[name]
        h, w, c = x.shape
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((1, 1), (1, 1), (0, 0))), (3, 3), axis=(0, 1))
        cols = windows.transpose(0, 1, 3, 4, 2).reshape(h * w, 9 * c)  # (dy, dx, c) like the kernel's first axes
        x = np.maximum(cols @ kernel.reshape(9 * c, cout) + bias, 0).reshape(h, w, cout)
        if name in POOL_AFTER:
            x = x.reshape(h // 2, 2, w // 2, 2, cout).max(axis=(1, 3))
    flat = x.reshape(-1)  # Keras' Flatten on (7, 7, 512): H, W, C order
    fc6 = np.maximum(flat @ layers["fc6"][0] + layers["fc6"][1], 0)
    return np.maximum(fc6 @ layers["fc7"][0] + layers["fc7"][1], 0)


def test_pth_loads_every_tensor_and_is_frozen(weights, pth_model, faces):
    model = pth_model
    for k, v in weights["state"].items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.weights_hash == hashlib.sha256(weights["pth"].read_bytes()).hexdigest()
    assert (model.name, model.feature_dim, model.input_size, model.differentiable) == ("vggface", 4096, 224, True)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training
    out = model(faces)
    assert out.shape == (1, 4096) and out.dtype == torch.float32 and (out >= 0).all() and out.abs().sum() > 0


def test_h5_model_equals_numpy_keras_model(weights, h5_model, pool5, faces):
    """Checks the BGR flip of conv1_1 and the HWC -> CHW permutation of fc6 against Keras' own arithmetic."""
    want = numpy_keras_fc7(weights["layers"], faces[0].numpy().astype(np.float64))
    got = h5_model.head(pool5["h5"])[0].numpy()
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_pth_and_h5_give_the_same_features(pth_model, h5_model, pool5):
    torch.testing.assert_close(pool5["pth"], pool5["h5"], rtol=1e-4, atol=1e-4 * pool5["pth"].abs().max().item())
    pool5 = pool5["pth"]
    a = pth_model.head(pool5)
    torch.testing.assert_close(a, h5_model.head(pool5), rtol=1e-4, atol=1e-4 * a.abs().max().item())
    for model in (pth_model, h5_model):  # fc6 before its ReLU
        model.layer, model.relu = "fc6", False
    try:
        a6, b6 = pth_model.head(pool5), h5_model.head(pool5)
    finally:
        for model in (pth_model, h5_model):
            model.layer, model.relu = "fc7", True
    assert (a6 < 0).any() and not torch.allclose(a6, a[:, :4096])
    torch.testing.assert_close(a6, b6, rtol=1e-4, atol=1e-4 * a6.abs().max().item())


def test_unknown_layer_is_refused():
    with pytest.raises(ValueError, match="fc6, fc7"):
        create_backbone("vggface", weights="random", layer="fc8")


def test_preprocessing_subtracts_the_mean_pixel_and_resizes(pth_model):
    model = pth_model
    x = torch.full((1, 3, 100, 100), 0.5)
    y = model.preprocess(x)
    assert y.shape == (1, 3, 224, 224)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([127.5 - m for m in MEAN_RGB]))


def test_missing_file_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(WeightsError) as err:
        create_backbone("vggface", weights=tmp_path / "vgg_face_dag.pth")
    assert str(tmp_path / "vgg_face_dag.pth") in str(err.value) and PTH_URL in str(err.value)
    with pytest.raises(WeightsError, match="backbone.weights"):
        create_backbone("vggface")


def test_wrong_shape_and_missing_key_are_named(weights, tmp_path):
    state = dict(weights["state"])
    state["fc6.weight"] = torch.zeros(4096, 512)
    del state["fc8.bias"]
    state["classifier.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        create_backbone("vggface", weights=path)
    msg = str(err.value)
    assert str(path) in msg and PTH_URL in msg
    assert "fc6.weight is (4096, 512), expected (4096, 25088)" in msg
    assert "missing ['fc8.bias']" in msg and "classifier.weight" in msg
    assert "conv1_1.weight (64, 3, 3, 3)" in msg  # the expected layout is spelled out


def test_h5_errors_name_the_layer(tmp_path, weights):
    layers = dict(weights["layers"])
    layers["conv1_1"] = (np.zeros((3, 3, 3, 32), np.float32), np.zeros(32, np.float32))
    bad = tmp_path / "bad.h5"
    write_keras_h5(bad, {"conv1_1": layers["conv1_1"]})
    with pytest.raises(WeightsError) as err:
        create_backbone("vggface", weights=bad)
    assert str(bad) in str(err.value) and "conv1_1: kernel (3, 3, 3, 32)" in str(err.value) and H5_URL in str(err.value)
    partial = tmp_path / "partial.h5"
    write_keras_h5(partial, {"conv1_1": weights["layers"]["conv1_1"]})
    with pytest.raises(WeightsError, match=r"missing \['conv1_2'\]"):
        create_backbone("vggface", weights=partial)


def test_pickled_module_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(WeightsError, match="cannot read a PyTorch state dict"):
        create_backbone("vggface", weights=path)


def test_expected_layouts_are_the_published_ones():
    shapes = expected_shapes()
    assert len(shapes) == 2 * 16 and shapes["fc6.weight"] == (4096, 25088) and shapes["fc8.weight"] == (2622, 4096)
    assert keras_shapes()["conv5_3"] == ((3, 3, 512, 512), (512,)) and keras_shapes()["fc6"] == ((25088, 4096), (4096,))
