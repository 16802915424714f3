"""The TF.js graph loader: the torch port gives TF.js's numbers, on a synthetic graph and on the face networks."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from antimask.backbones.base import WeightsError
from antimask.backbones.tfjs import UnsupportedOpError, load_tfjs_graph
from helpers import require_data, require_face_networks

REFERENCE_JS = Path(__file__).with_name("tfjs_reference.js")


def tfjs_reference(model: Path, x: np.ndarray, output: str, folder: Path, tmp: Path) -> np.ndarray:
    """The output node of ``model`` on NHWC ``x``, computed by TF.js (CPU backend) in node."""
    (tmp / "in.f32").write_bytes(np.ascontiguousarray(x, np.float32).tobytes())
    env = {"NODE_PATH": str(folder / "tfjs-reference" / "node_modules"), "PATH": os.environ["PATH"]}
    proc = subprocess.run(["node", str(REFERENCE_JS), str(model), str(tmp / "in.f32"), ",".join(map(str, x.shape)),
                           output, str(tmp / "out.f32")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    shape = json.loads(proc.stdout.strip().splitlines()[-1])["shape"]
    return np.fromfile(tmp / "out.f32", np.float32).reshape(shape)


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def write_graph(folder: Path, consts: dict[str, np.ndarray], nodes: list[dict], quantize: dict | None = None) -> Path:
    """A TF.js graph model (model.json + one .bin) from named constants and op nodes; input node "x"."""
    specs, data = [], b""
    for name, value in consts.items():
        spec = {"name": name, "shape": list(value.shape), "dtype": "int32" if value.dtype.kind == "i" else "float32"}
        if quantize and name in quantize:
            spec["quantization"] = quantize[name]
            data += np.asarray(value, quantize[name]["dtype"]).tobytes()
        else:
            data += np.asarray(value, np.int32 if value.dtype.kind == "i" else np.float32).tobytes()
        specs.append(spec)
    graph = [{"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}}]
    graph += [{"name": n, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}} for n in consts]
    graph += nodes
    model = {"format": "graph-model", "generatedBy": "test", "convertedBy": "test",
             "modelTopology": {"node": graph, "library": {}, "versions": {}},
             "weightsManifest": [{"paths": ["model.bin"], "weights": specs}]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(data)
    (folder / "model.json").write_text(json.dumps(model))
    return folder / "model.json"


def conv_node(name, op, inputs, stride=1, padding="SAME", dilation=1, fused=(), explicit=()):
    attr = {"strides": _ints([1, stride, stride, 1]), "dilations": _ints([1, dilation, dilation, 1]),
            "padding": _s(padding), "data_format": _s("NHWC"), "T": {"type": "DT_FLOAT"}}
    if explicit:
        attr["explicit_paddings"] = _ints(explicit)
    if fused:
        attr["fused_ops"] = {"list": {"s": [_s(f)["s"] for f in fused]}}
        attr["num_args"] = {"i": str(len(inputs) - 2)}
    return {"name": name, "op": op, "input": list(inputs), "attr": attr}


def synthetic_graph(folder: Path) -> Path:
    """Odd sizes, stride 2 SAME (asymmetric in TF), dilation, explicit padding, a depthwise multiplier of 2,
    fused BiasAdd + Prelu and + Relu, PReLU spelled out, a mean and a fused matmul with Relu6."""
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)  # noqa: E731
    consts = {"w1": f(3, 3, 3, 4), "b1": f(4), "a1": f(4), "w2": f(3, 3, 4, 2), "b2": f(8), "w3": f(2, 2, 8, 6),
              "w4": f(3, 3, 6, 5), "half": f(5), "axes": np.array([1, 2], np.int32), "wm": f(5, 7), "bm": f(7)}
    nodes = [
        conv_node("c1", "_FusedConv2D", ["x", "w1", "b1", "a1"], stride=2, fused=("BiasAdd", "Prelu")),
        conv_node("c2", "FusedDepthwiseConv2dNative", ["c1", "w2", "b2"], fused=("BiasAdd", "Relu")),
        conv_node("c3", "Conv2D", ["c2", "w3"], padding="EXPLICIT", explicit=[0, 0, 1, 2, 2, 0, 0, 0]),
        conv_node("c4", "Conv2D", ["c3", "w4"], dilation=2),
        {"name": "r", "op": "Relu", "input": ["c4"]},
        {"name": "abs", "op": "Abs", "input": ["c4"]},
        {"name": "sub", "op": "Sub", "input": ["c4", "abs"]},
        {"name": "mul", "op": "Mul", "input": ["sub", "half"]},
        {"name": "prelu", "op": "Add", "input": ["r", "mul"]},
        {"name": "mean", "op": "Mean", "input": ["prelu", "axes"], "attr": {"keep_dims": {"b": False}}},
        {"name": "out", "op": "_FusedMatMul", "input": ["mean", "wm", "bm"],
         "attr": {"fused_ops": {"list": {"s": [_s("BiasAdd")["s"], _s("Relu6")["s"]]}}, "num_args": {"i": "1"},
                  "transpose_a": {"b": False}, "transpose_b": {"b": False}}},
    ]
    return write_graph(folder, consts, nodes)


def test_a_synthetic_graph_with_tf_padding_quirks_equals_tfjs(tmp_path):
    folder = require_face_networks(reference=True)
    model = synthetic_graph(tmp_path / "graph")
    x = np.random.default_rng(1).normal(size=(2, 13, 11, 3)).astype(np.float32)
    ref = tfjs_reference(model, x, "out", folder, tmp_path)
    out = load_tfjs_graph(model)(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (2, 7)
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("name, output, size, scale", [("mobilefacenet", "embeddings", 112, 1.0),
                                                       ("faceres", "global_pooling/Mean", 224, 255.0)])
def test_the_face_networks_equal_tfjs_on_real_aligned_faces(name, output, size, scale, tmp_path):
    """The same model files and the same crops of four real AFDB faces: embeddings within 1e-4 of TF.js."""
    folder = require_face_networks(reference=True)
    afdb = require_data("afdb_east_asian")
    from antimask.backbones.registry import create_backbone
    from benchmarks.bench_face_networks import align_afdb

    faces, _, _ = align_afdb(afdb, people=2, per_person=2)
    backbone = create_backbone(name)
    with torch.no_grad():
        crops = backbone.preprocess(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255)
        ours = backbone.features(crops).numpy()
    x = crops.permute(0, 2, 3, 1).contiguous().numpy()
    assert x.shape[1:] == (size, size, 3) and x.max() > 0.5 * scale
    ref = tfjs_reference(folder / f"{name}.json", x, output, folder, tmp_path)
    diff = float(np.abs(ours - ref).max())
    print(f"{name}: max abs difference to TF.js {diff:.2e} over {ours.shape}")
    assert diff <= 1e-4


def test_an_unknown_op_is_named_with_its_model_file(tmp_path):
    model = write_graph(tmp_path, {"w": np.ones((2, 2), np.float32)},
                        [{"name": "y", "op": "Cumprod", "input": ["x", "w"]}])
    with pytest.raises(UnsupportedOpError, match=r"model\.json: op Cumprod \(node 'y'\)"):
        load_tfjs_graph(model)


def test_an_unknown_fused_op_is_named(tmp_path):
    model = write_graph(tmp_path, {"w": np.ones((1, 1, 3, 2), np.float32), "b": np.ones(2, np.float32)},
                        [conv_node("y", "_FusedConv2D", ["x", "w", "b"], fused=("BiasAdd", "Gelu"))])
    with pytest.raises(UnsupportedOpError, match="fuses Gelu"):
        load_tfjs_graph(model)


def test_quantized_weights_are_widened_and_unknown_quantization_fails(tmp_path):
    w = np.array([[1.5, -2.0], [0.25, 4.0]], np.float32)
    q8 = np.array([[0, 255], [10, 20]], np.uint8)
    model = write_graph(tmp_path / "ok", {"w": w, "v": q8.astype(np.float32)},
                        [{"name": "m", "op": "MatMul", "input": ["x", "w"]},
                         {"name": "y", "op": "MatMul", "input": ["m", "v"]}],
                        quantize={"w": {"dtype": "float16", "original_dtype": "float32"},
                                  "v": {"dtype": "uint8", "scale": 0.5, "min": -1.0, "original_dtype": "float32"}})
    graph = load_tfjs_graph(model)
    x = torch.eye(2)
    assert torch.allclose(graph(x), torch.from_numpy((w @ (q8 * 0.5 - 1.0)).astype(np.float32)))
    bad = write_graph(tmp_path / "bad", {"w": w}, [{"name": "y", "op": "MatMul", "input": ["x", "w"]}],
                      quantize={"w": {"dtype": "float16", "original_dtype": "float32"}})
    manifest = json.loads(bad.read_text())
    manifest["weightsManifest"][0]["weights"][0]["quantization"]["dtype"] = "int4"
    bad.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="quantized as int4"):
        load_tfjs_graph(bad)


def test_the_port_is_differentiable_moves_with_to_and_exports(tmp_path):
    model = synthetic_graph(tmp_path / "graph")
    graph = load_tfjs_graph(model)
    assert all(not b.requires_grad for b in graph.buffers()) and len(list(graph.buffers())) == 10
    x = torch.randn(2, 13, 11, 3, requires_grad=True)
    graph(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    graph.to(torch.float64)
    assert graph(x.detach().double()).dtype == torch.float64
    graph.to(torch.float32)
    exported = torch.export.export(graph, (x.detach(),))
    assert torch.allclose(exported.module()(x.detach()), graph(x.detach()), atol=1e-6)


def batchnorm_relu6_graph(folder: Path) -> Path:
    """What exported Keras MobileNets hold (FaceRes): conv -> Mul -> Add -> Relu -> Minimum(6) -> Maximum(0),
    with a depthwise conv of multiplier 2 at stride 2 (TF's uneven SAME padding), and two chains that must
    stay unfused: a conv whose output is read twice, and a clip whose Minimum is itself an output."""
    rng = np.random.default_rng(2)
    f = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)  # noqa: E731
    consts = {"w1": f(3, 3, 3, 4), "s1": f(4), "b1": f(4), "six": np.float32(6.0).reshape(()),
              "zero": np.float32(0.0).reshape(()), "w2": f(3, 3, 4, 2), "s2": f(8), "b2": f(8),
              "w3": f(1, 1, 8, 5), "b3": f(5)}
    nodes = [
        conv_node("c1", "Conv2D", ["x", "w1"]),
        {"name": "m1", "op": "Mul", "input": ["c1", "s1"]},
        {"name": "a1", "op": "Add", "input": ["m1", "b1"]},
        {"name": "r1", "op": "Relu", "input": ["a1"]},
        {"name": "lo1", "op": "Minimum", "input": ["r1", "six"]},
        {"name": "hi1", "op": "Maximum", "input": ["lo1", "zero"]},
        conv_node("c2", "DepthwiseConv2dNative", ["hi1", "w2"], stride=2),
        {"name": "m2", "op": "Mul", "input": ["s2", "c2"]},
        {"name": "a2", "op": "AddV2", "input": ["m2", "b2"]},
        {"name": "r2", "op": "Relu", "input": ["a2"]},
        {"name": "lo2", "op": "Minimum", "input": ["r2", "six"]},
        {"name": "hi2", "op": "Maximum", "input": ["lo2", "zero"]},
        conv_node("c3", "Conv2D", ["hi2", "w3"]),
        {"name": "a3", "op": "Add", "input": ["c3", "b3"]},
        {"name": "twice", "op": "Mul", "input": ["c3", "a3"]},
        {"name": "r3", "op": "Relu", "input": ["twice"]},
        {"name": "out_lo", "op": "Minimum", "input": ["r3", "six"]},
        {"name": "out", "op": "Maximum", "input": ["out_lo", "zero"]},
    ]
    return write_graph(folder, consts, nodes)


def test_batchnorm_and_relu6_tails_fold_into_one_op_each_with_the_unfused_values_and_gradients(tmp_path, monkeypatch):
    from antimask.backbones.tfjs import TFJSGraph

    model = batchnorm_relu6_graph(tmp_path / "graph")
    outputs = ["out", "out_lo"]
    fused = load_tfjs_graph(model, outputs).double()
    monkeypatch.setattr(TFJSGraph, "_fused", lambda self, steps: steps)
    plain = load_tfjs_graph(model, outputs).double()
    # c1's and c2's Mul + Add and both clips are folded; c3 (read twice) and the output clip are not
    assert len(plain._steps) == 18 and len(fused._steps) == 10
    assert {s.op for s in fused._steps if s.name in ("a1", "a2")} == {"Conv2D", "DepthwiseConv2dNative"}
    # every value but the outputs is dropped once, after its last reader (a forward does not hold them all)
    freed = [n for st in fused._steps for n in st.frees]
    assert sorted(freed) == sorted({"x"} | {st.name for st in fused._steps} - set(outputs))
    x = torch.randn(2, 9, 7, 3, dtype=torch.float64) * 2
    xf, xp = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (yf, yf_lo), (yp, yp_lo) = fused(xf), plain(xp)
    assert yf.shape == (2, 5, 4, 5) and 0 < float((yf > 0).double().mean()) < 1  # the clip is active
    torch.testing.assert_close(yf, yp, rtol=0, atol=1e-12)
    torch.testing.assert_close(yf_lo, yp_lo, rtol=0, atol=1e-12)
    (yf.sum() + yf_lo.sum()).backward()
    (yp.sum() + yp_lo.sum()).backward()
    torch.testing.assert_close(xf.grad, xp.grad, rtol=0, atol=1e-12)
