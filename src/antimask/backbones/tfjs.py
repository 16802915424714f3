"""TensorFlow.js graph models (``model.json`` + ``.bin`` shards) run as torch modules.

Pretrained face networks are published as TF.js graph models on npm; this loader reads such a model and
runs its graph op by op in torch (NHWC, TF semantics), so the network is differentiable, moves with
``.to(device)`` and needs neither TensorFlow nor node at run time.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from antimask.backbones.base import WeightsError

_DTYPES = {"float32": np.float32, "int32": np.int32}
# Quantized weights are stored as these and widened to float32 on load (tfjs-converter's --quantize_*).
_QUANTIZED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_TF_DTYPES = {"DT_FLOAT": np.float32, "DT_INT32": np.int32}


class UnsupportedOpError(WeightsError):
    """A graph op (or fused op, or attribute) this port does not implement; the message names it and the file."""


def read_weights(model_json: dict, folder: Path, source: Path) -> dict[str, np.ndarray]:
    """Every weight of the manifest by name, decoded from the concatenated shards of each group."""
    out: dict[str, np.ndarray] = {}
    for group in model_json.get("weightsManifest", []):
        data = b""
        for shard in group["paths"]:
            path = folder / shard
            if not path.is_file():
                raise WeightsError(f"weights shard {path} named by {source} is missing")
            data += path.read_bytes()
        offset = 0
        for spec in group["weights"]:
            name, shape, dtype = spec["name"], [int(d) for d in spec["shape"]], spec["dtype"]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant:
                qtype = quant.get("dtype")
                if qtype not in _QUANTIZED or dtype not in _DTYPES:
                    raise WeightsError(f"{source}: weight {name} is quantized as {qtype} ({dtype}); this loader reads "
                                       f"{', '.join(_QUANTIZED)} quantization of {', '.join(_DTYPES)} weights only")
                raw = np.frombuffer(data, _QUANTIZED[qtype], count, offset)
                offset += raw.nbytes
                if qtype == "float16":
                    value = raw.astype(np.float32)
                else:  # affine: q * scale + min, as tfjs-converter writes it
                    value = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                value = value.astype(_DTYPES[dtype])
            else:
                if dtype not in _DTYPES:
                    raise WeightsError(f"{source}: weight {name} has dtype {dtype}; this loader reads "
                                       f"{', '.join(_DTYPES)} only")
                value = np.frombuffer(data, _DTYPES[dtype], count, offset).copy()
                offset += value.nbytes
            out[name] = value.reshape(shape)
        if offset != len(data):
            raise WeightsError(f"{source}: the manifest describes {offset} bytes but its shards hold {len(data)}; "
                               "the .bin files do not belong to this model.json")
    return out


def _attr(node: dict, key: str, default: Any = None) -> Any:
    """A node attribute as a plain value: strings decoded from base64, lists of ints/strings unwrapped."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        return []
    if "type" in a:
        return a["type"]
    if "tensor" in a or "shape" in a:
        return a
    return default


def _inline_const(node: dict) -> Optional[np.ndarray]:
    """A Const whose value sits in the graph itself (small scalars some converters leave inline)."""
    tensor = node.get("attr", {}).get("value", {}).get("tensor")
    if not tensor:
        return None
    dtype = _TF_DTYPES.get(tensor.get("dtype"))
    shape = [int(d["size"]) for d in tensor.get("tensorShape", {}).get("dim", [])]
    for key in ("floatVal", "intVal"):
        if key in tensor and dtype is not None:
            vals = np.array(tensor[key], dtype)
            return np.broadcast_to(vals, shape).copy() if vals.size == 1 else vals.reshape(shape)
    return None


def _same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    # TF's SAME: the output is ceil(size / stride) and the extra pixel of an odd padding goes after.
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _paddings(x: torch.Tensor, padding: str, explicit: Sequence[int], kernel: tuple[int, int],
              stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of NCHW ``x`` for TF's ``padding``."""
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding == "SAME":
        return (*_same_padding(x.shape[2], kernel[0], stride[0], dilation[0]),
                *_same_padding(x.shape[3], kernel[1], stride[1], dilation[1]))
    if padding == "EXPLICIT":  # NHWC pairs: [0, 0, top, bottom, left, right, 0, 0]
        top, bottom, left, right = explicit[2:6]
        return int(top), int(bottom), int(left), int(right)
    raise ValueError(f"padding {padding}")


def _pad_nchw(x: torch.Tensor, padding: str, explicit: Sequence[int], kernel: tuple[int, int],
              stride: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    top, bottom, left, right = _paddings(x, padding, explicit, kernel, stride, dilation)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom))
    return x


_ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "Relu": torch.relu,
    "Relu6": lambda x: x.clamp(0, 6),
    "Elu": F.elu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
}


class _Step:
    """One graph node compiled: its op, its op function, the names of its inputs, and its static attributes."""

    __slots__ = ("name", "op", "fn", "inputs", "attrs", "frees")

    def __init__(self, name: str, op: str, fn: Callable, inputs: list[str], attrs: dict):
        self.name, self.op, self.fn, self.inputs, self.attrs = name, op, fn, inputs, attrs
        self.frees: tuple[str, ...] = ()  # the values no later step reads, dropped once this step has run


class TFJSGraph(nn.Module):
    """A TF.js graph model as a torch module: ``forward(x)`` takes the input NHWC, as the graph does.

    Float constants are buffers (they follow ``.to(device)``; ``requires_grad`` stays off, so the graph is a
    frozen function that gradients flow through); integer constants (axes, shapes) are resolved at build.
    """

    def __init__(self, path: str | Path, outputs: Optional[Sequence[str]] = None):
        super().__init__()
        path = Path(path)
        if path.is_dir():
            candidates = sorted(path.glob("*.json"))
            if len(candidates) != 1:
                raise WeightsError(f"{path} holds {len(candidates)} .json files; name the model.json itself")
            path = candidates[0]
        if not path.is_file():
            raise WeightsError(f"TF.js model {path} not found")
        self.source = path
        model = json.loads(path.read_text())
        if model.get("format", "graph-model") != "graph-model" or "node" not in model.get("modelTopology", {}):
            raise WeightsError(f"{path} is not a TF.js graph model (format {model.get('format')!r}); "
                               "layers models are not supported")
        weights = read_weights(model, path.parent, path)
        nodes = {n["name"]: n for n in model["modelTopology"]["node"]}

        self.input_names = [n for n, node in nodes.items() if node["op"] == "Placeholder"]
        if len(self.input_names) != 1:
            raise UnsupportedOpError(f"{path}: graphs with {len(self.input_names)} inputs are not supported (one)")
        if outputs is None:
            sig = model.get("signature") or model.get("userDefinedMetadata", {}).get("signature") or {}
            outputs = [o["name"].split(":")[0] for o in sig.get("outputs", {}).values()]
            if not outputs:
                consumed = {_ref(i) for node in nodes.values() for i in node.get("input", [])}
                outputs = [n for n, node in nodes.items() if n not in consumed and node["op"] != "Const"]
        self.output_names = list(outputs)
        for name in self.output_names:
            if name not in nodes:
                raise WeightsError(f"{path} has no node {name!r}")

        # Only the nodes the outputs need, in dependency order.
        order, seen = [], set()

        def visit(name: str) -> None:
            stack = [(name, False)]
            while stack:
                n, done = stack.pop()
                if done:
                    order.append(n)
                    continue
                if n in seen:
                    continue
                seen.add(n)
                if n not in nodes:
                    raise WeightsError(f"{path}: node {n!r} is used but not defined")
                stack.append((n, True))
                for i in reversed(nodes[n].get("input", [])):
                    if not i.startswith("^"):
                        stack.append((_ref(i), False))

        for name in self.output_names:
            visit(name)

        self._consts: dict[str, Any] = {}  # name -> buffer attribute name (float) or numpy array (int)
        self._steps: list[_Step] = []
        for name in order:
            node = nodes[name]
            op = node["op"]
            if op == "Placeholder":
                continue
            if op == "Const":
                value = weights.get(name)
                if value is None:
                    value = _inline_const(node)
                if value is None:
                    raise WeightsError(f"{path}: constant {name!r} is neither in the weights manifest nor inline")
                if value.dtype == np.float32:
                    attr = f"const{len(self._consts)}"  # plain names: torch.export mangles long ones
                    self.register_buffer(attr, torch.from_numpy(np.ascontiguousarray(value)))
                    self._consts[name] = attr
                else:
                    self._consts[name] = value
                continue
            if op not in _OPS:
                raise UnsupportedOpError(f"{path}: op {op} (node {name!r}) is not supported by antimask's TF.js "
                                         f"port; supported: {', '.join(sorted(_OPS))}")
            inputs = [_ref(i) for i in node.get("input", []) if not i.startswith("^")]
            for i in node.get("input", []):
                if not i.startswith("^") and ":" in i and not i.endswith(":0"):
                    raise UnsupportedOpError(f"{path}: node {name!r} reads output {i}; multi-output ops are "
                                             "not supported")
            attrs = _compile_attrs(op, node, path)
            self._steps.append(_Step(name, op, _OPS[op], inputs, attrs))
        self.ops = sorted({nodes[n]["op"] for n in order})
        self._steps = self._fused(self._steps)
        # Each value is dropped after its last reader: without that a forward holds every feature map of the
        # graph at once (2.5 GB for FaceRes at batch 64).
        last_read = {i: k for k, st in enumerate(self._steps) for i in st.inputs}
        for k, st in enumerate(self._steps):
            st.frees = tuple(n for n in dict.fromkeys(st.inputs)
                             if last_read[n] == k and n not in self.output_names and n not in self._consts)

    def _float_const(self, name: str) -> Optional[torch.Tensor]:
        const = self._consts.get(name)
        return getattr(self, const) if isinstance(const, str) else None

    def _fused(self, steps: list[_Step]) -> list[_Step]:
        """``steps`` with the elementwise tails that exported batch norms and ReLU6 leave in a graph folded
        into one op each, as TF.js's own runtime fuses them: conv -> Mul (per-channel const) -> Add
        (per-channel const) becomes one conv with scaled weights and a bias, and Relu -> Minimum(c >= 0) ->
        Maximum(<= 0) one clamp. Each pass over a feature map costs as much as the op it follows on the
        CPU; the values are those of the unfused graph to float rounding."""
        uses: dict[str, int] = {}
        for name in [i for st in steps for i in st.inputs] + list(self.output_names):
            uses[name] = uses.get(name, 0) + 1
        consumer = {i: st for st in steps for i in st.inputs if uses.get(i) == 1}

        def other_const(st: _Step, name: str) -> Optional[torch.Tensor]:
            others = [i for i in st.inputs if i != name]
            return self._float_const(others[0]) if len(st.inputs) == 2 and len(others) == 1 else None

        absorbed: set[str] = set()
        out: list[_Step] = []
        for st in steps:
            if st.name in absorbed:
                continue
            if st.op in ("Conv2D", "DepthwiseConv2dNative") and len(st.inputs) == 2:
                w = self._float_const(st.inputs[1])
                channels = None if w is None else int(w.shape[3] * (w.shape[2] if st.op != "Conv2D" else 1))
                found, last = {}, st  # the per-channel constant of the Mul, then of the Add, after the conv
                for role, ops in (("scale", ("Mul",)), ("bias", ("Add", "AddV2", "BiasAdd"))):
                    nxt = consumer.get(last.name)
                    c = None if nxt is None or nxt.op not in ops or not channels else other_const(nxt, last.name)
                    if c is not None and c.numel() == channels and c.shape[-1] == channels:
                        found[role], last = nxt.inputs[1 - nxt.inputs.index(last.name)], nxt
                if "bias" in found:  # a scale alone stays a Mul: no bias to fold with it
                    absorbed.update(t.name for t in (consumer[st.name], last) if t is not st)
                    out.append(_Step(last.name, st.op, _conv_affine, [*st.inputs, found["bias"]] + (
                        [found["scale"]] if "scale" in found else []),
                        {**st.attrs, "depthwise": st.op != "Conv2D", "scaled": "scale" in found}))
                    continue
            if st.op == "Relu":
                lo_step = consumer.get(st.name)
                hi_step = None if lo_step is None or lo_step.op != "Minimum" else consumer.get(lo_step.name)
                if hi_step is not None and hi_step.op == "Maximum":
                    top, bottom = other_const(lo_step, st.name), other_const(hi_step, lo_step.name)
                    if (top is not None and bottom is not None and top.numel() == 1 == bottom.numel()
                            and float(top) >= 0 >= float(bottom)):
                        absorbed.update((lo_step.name, hi_step.name))
                        out.append(_Step(hi_step.name, "Relu6", _clamp, st.inputs[:1], {**st.attrs, "top": float(top)}))
                        continue
            out.append(st)
        return out

    def _value(self, env: dict[str, torch.Tensor], name: str):
        if name in env:
            return env[name]
        const = self._consts[name]
        return getattr(self, const) if isinstance(const, str) else const

    def forward(self, x: torch.Tensor):
        env: dict[str, Any] = {self.input_names[0]: x}
        for step in self._steps:
            env[step.name] = step.fn(self, [self._value(env, i) for i in step.inputs], step.attrs)
            for name in step.frees:
                del env[name]
        out = tuple(env[n] for n in self.output_names)
        return out[0] if len(out) == 1 else out


def _ref(name: str) -> str:
    return name.split(":")[0]


def _compile_attrs(op: str, node: dict, path: Path) -> dict:
    attrs: dict[str, Any] = {"path": str(path), "node": node["name"]}
    if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative",
              "MaxPool", "AvgPool"):
        fmt = _attr(node, "data_format", "NHWC")
        if fmt != "NHWC":
            raise UnsupportedOpError(f"{path}: node {node['name']} ({op}) uses data_format {fmt}; only NHWC")
        strides = _attr(node, "strides", [1, 1, 1, 1])
        dil = _attr(node, "dilations", [1, 1, 1, 1])
        attrs.update(padding=_attr(node, "padding", "VALID"), explicit=_attr(node, "explicit_paddings", []) or [],
                     stride=(strides[1], strides[2]), dilation=(dil[1], dil[2]))
        if attrs["padding"] not in ("SAME", "VALID", "EXPLICIT"):
            raise UnsupportedOpError(f"{path}: node {node['name']} ({op}) has padding {attrs['padding']}")
        if op in ("MaxPool", "AvgPool"):
            k = _attr(node, "ksize")
            attrs["kernel"] = (k[1], k[2])
    if op in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul"):
        fused = _attr(node, "fused_ops", []) or []
        for f in fused:
            if f not in ("BiasAdd", "Prelu", "LeakyRelu") and f not in _ACTIVATIONS:
                raise UnsupportedOpError(f"{path}: node {node['name']} ({op}) fuses {f}, which is not supported "
                                         f"(BiasAdd, Prelu, LeakyRelu, {', '.join(_ACTIVATIONS)})")
        attrs.update(fused=fused, leaky=_attr(node, "leakyrelu_alpha", 0.2))
    if op in ("MatMul", "_FusedMatMul"):
        attrs.update(ta=_attr(node, "transpose_a", False), tb=_attr(node, "transpose_b", False))
    if op in ("Sum", "Mean", "Max", "Min", "Prod"):
        attrs["keep"] = _attr(node, "keep_dims", False)
    if op == "Squeeze":
        attrs["dims"] = _attr(node, "squeeze_dims", []) or []
    if op == "LeakyRelu":
        attrs["alpha"] = _attr(node, "alpha", 0.2)
    return attrs


def _epilogue(m: TFJSGraph, y: torch.Tensor, args: list, a: dict) -> torch.Tensor:
    """The fused ops after a conv or matmul, on the NHWC (or N, C) result; ``args`` are their operands."""
    rest = list(args)
    for f in a["fused"]:
        if f == "BiasAdd":
            y = y + rest.pop(0)
        elif f == "Prelu":
            alpha = rest.pop(0)
            y = torch.relu(y) + alpha * (y - y.abs()) * 0.5
        elif f == "LeakyRelu":
            y = F.leaky_relu(y, a["leaky"])
        else:
            y = _ACTIVATIONS[f](y)
    return y


def _conv(m: TFJSGraph, ins: list, a: dict, depthwise: bool, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    x, w = ins[0], ins[1]
    kh, kw = w.shape[0], w.shape[1]
    # NHWC -> NCHW as a view (channels_last strides), so the permutes around the conv copy nothing.
    xc = x.permute(0, 3, 1, 2)
    pads = _paddings(xc, a["padding"], a["explicit"], (kh, kw), a["stride"], a["dilation"])
    symmetric = pads[0] == pads[1] and pads[2] == pads[3]
    if not symmetric:  # TF's SAME at stride 2 pads one more after: a padded copy
        xc = F.pad(xc, (pads[2], pads[3], pads[0], pads[1]))
    if depthwise:  # (H, W, C, M) -> (C*M, 1, H, W): TF's output channel c*M + m is torch's group order
        c, mult = w.shape[2], w.shape[3]
        wt, groups = w.permute(2, 3, 0, 1).reshape(c * mult, 1, kh, kw), c
    else:  # HWIO -> OIHW
        wt, groups = w.permute(3, 2, 0, 1), 1
    padding = (pads[0], pads[2]) if symmetric else 0  # the conv pads by itself: no padded copy
    y = F.conv2d(xc, wt, bias, a["stride"], padding, a["dilation"], groups).permute(0, 2, 3, 1)
    return _epilogue(m, y, ins[2:], a) if "fused" in a else y


def _conv_affine(m: TFJSGraph, ins: list, a: dict) -> torch.Tensor:
    """A conv whose per-channel scale (an exported batch norm's) and bias follow it: one conv, weights scaled."""
    x, w, bias = ins[0], ins[1], ins[2]
    if a["scaled"]:
        w = w * ins[3].reshape((1, 1, w.shape[2], w.shape[3]) if a["depthwise"] else (1, 1, 1, -1))
    return _conv(m, [x, w], a, a["depthwise"], bias.reshape(-1))


def _clamp(m: TFJSGraph, ins: list, a: dict) -> torch.Tensor:
    return ins[0].clamp(0.0, a["top"])  # Relu -> Minimum(top) -> Maximum(<= 0), in one pass


def _matmul(m: TFJSGraph, ins: list, a: dict) -> torch.Tensor:
    x, w = ins[0], ins[1]
    x = x.transpose(-1, -2) if a["ta"] else x
    w = w.transpose(-1, -2) if a["tb"] else w
    y = x @ w
    return _epilogue(m, y, ins[2:], a) if "fused" in a else y


def _axes(v, ndim: int) -> list[int]:
    axes = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return [int(ax) % ndim for ax in axes]


def _reduce(fn: Callable) -> Callable:
    def run(m: TFJSGraph, ins: list, a: dict) -> torch.Tensor:
        x = ins[0]
        return fn(x, _axes(ins[1], x.ndim), a["keep"])
    return run


def _pool(kind: str) -> Callable:
    def run(m: TFJSGraph, ins: list, a: dict) -> torch.Tensor:
        xc = ins[0].permute(0, 3, 1, 2)
        if a["padding"] == "SAME" and kind == "avg":
            # TF averages over the valid pixels only: pad explicitly and divide by the count of real ones.
            xp = _pad_nchw(xc, "SAME", [], a["kernel"], a["stride"], (1, 1))
            ones = _pad_nchw(torch.ones_like(xc[:, :1]), "SAME", [], a["kernel"], a["stride"], (1, 1))
            y = F.avg_pool2d(xp, a["kernel"], a["stride"]) / F.avg_pool2d(ones, a["kernel"], a["stride"])
        elif kind == "avg":
            y = F.avg_pool2d(xc, a["kernel"], a["stride"])
        else:
            top, bottom = (0, 0)
            if a["padding"] == "SAME":
                top, bottom = _same_padding(xc.shape[2], a["kernel"][0], a["stride"][0], 1)
                left, right = _same_padding(xc.shape[3], a["kernel"][1], a["stride"][1], 1)
                xc = F.pad(xc, (left, right, top, bottom), value=float("-inf"))
            y = F.max_pool2d(xc, a["kernel"], a["stride"])
        return y.permute(0, 2, 3, 1)
    return run


def _pad(x: torch.Tensor, paddings) -> torch.Tensor:
    # TF lists (before, after) per dim from the first; F.pad wants them from the last dim backwards
    pairs = np.asarray(paddings).reshape(-1, 2).astype(int).tolist()
    return F.pad(x, [v for before, after in reversed(pairs) for v in (before, after)])


def _squeeze(m: TFJSGraph, ins: list, a: dict) -> torch.Tensor:
    x = ins[0]
    dims = [d % x.ndim for d in a["dims"]] or [d for d in range(x.ndim) if x.shape[d] == 1]
    for d in sorted(dims, reverse=True):
        x = x.squeeze(d)
    return x


def _binary(fn: Callable) -> Callable:
    return lambda m, ins, a: fn(_t(ins[0], ins[1]), _t(ins[1], ins[0]))


def _t(v, like) -> torch.Tensor:
    return v if torch.is_tensor(v) else torch.as_tensor(v, dtype=like.dtype, device=like.device)


def _unary(fn: Callable) -> Callable:
    return lambda m, ins, a: fn(ins[0])


_OPS: dict[str, Callable[[TFJSGraph, list, dict], torch.Tensor]] = {
    "Conv2D": lambda m, ins, a: _conv(m, ins, a, False),
    "_FusedConv2D": lambda m, ins, a: _conv(m, ins, a, False),
    "DepthwiseConv2dNative": lambda m, ins, a: _conv(m, ins, a, True),
    "FusedDepthwiseConv2dNative": lambda m, ins, a: _conv(m, ins, a, True),
    "MatMul": _matmul,
    "_FusedMatMul": _matmul,
    "MaxPool": _pool("max"),
    "AvgPool": _pool("avg"),
    "Add": _binary(torch.add),
    "AddV2": _binary(torch.add),
    "BiasAdd": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "RealDiv": _binary(torch.div),
    "Maximum": _binary(torch.maximum),
    "Minimum": _binary(torch.minimum),
    "AddN": lambda m, ins, a: torch.stack(list(ins)).sum(0),
    "Abs": _unary(torch.abs),
    "Neg": _unary(torch.neg),
    "Square": _unary(torch.square),
    "Sqrt": _unary(torch.sqrt),
    "Rsqrt": _unary(torch.rsqrt),
    "Exp": _unary(torch.exp),
    "Identity": _unary(lambda x: x),
    "Relu": _unary(torch.relu),
    "Relu6": _unary(lambda x: x.clamp(0, 6)),
    "Elu": _unary(F.elu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "LeakyRelu": lambda m, ins, a: F.leaky_relu(ins[0], a["alpha"]),
    "Prelu": lambda m, ins, a: torch.relu(ins[0]) + ins[1] * (ins[0] - ins[0].abs()) * 0.5,
    "Softmax": _unary(lambda x: torch.softmax(x, -1)),
    "Sum": _reduce(lambda x, d, k: x.sum(d, keepdim=k)),
    "Mean": _reduce(lambda x, d, k: x.mean(d, keepdim=k)),
    "Max": _reduce(lambda x, d, k: x.amax(d, keepdim=k)),
    "Min": _reduce(lambda x, d, k: x.amin(d, keepdim=k)),
    "Squeeze": _squeeze,
    "Reshape": lambda m, ins, a: ins[0].reshape([int(s) for s in np.asarray(ins[1]).ravel()]),
    "Pad": lambda m, ins, a: _pad(ins[0], ins[1]),
}

SUPPORTED_OPS = sorted(_OPS)


def load_tfjs_graph(path: str | Path, outputs: Optional[Sequence[str]] = None) -> TFJSGraph:
    """The graph model at ``path`` (its model.json, or a folder holding exactly one) as a frozen torch module."""
    graph = TFJSGraph(path, outputs)
    for b in graph.buffers():
        b.requires_grad_(False)
    return graph.eval()
