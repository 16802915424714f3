"""VGG-Face (Parkhi et al. 2015), the paper's frozen face network: VGG-16 whose fc7 (4096-d) feeds the decoders.

Two published weight files load into the same PyTorch module: Albanie's converted ``vgg_face_dag.pth``
(a PyTorch state dict) and rcmalli's Keras ``rcmalli_vggface_tf_vgg16.h5`` (BGR input, HWC flatten).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from antimask import files
from antimask.backbones.base import (
    FrozenBackbone,
    WeightsError,
    file_sha256,
    register_backbone,
)

PTH_URL = "https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth"
H5_URL = "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/rcmalli_vggface_tf_vgg16.h5"
PUBLISHED = f"the weights are published at {PTH_URL} (PyTorch state dict) and {H5_URL} (Keras)"
# The mean face pixel of the VGG-Face training set, RGB, in 0-255 (no division by a std).
MEAN_RGB = (129.186279296875, 104.76238250732422, 93.59396362304688)
# (channels, convolutions) of the five blocks; each block ends in a 2x2 max pool.
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
NUM_IDENTITIES = 2622
LAYERS = ("fc6", "fc7")
POOL_AFTER = {f"conv{b}_{n}" for b, (_, n) in enumerate(BLOCKS, start=1)}


def conv_specs() -> list[tuple[str, int, int]]:
    """(name, in_channels, out_channels) of conv1_1 .. conv5_3."""
    specs, cin = [], 3
    for b, (cout, n) in enumerate(BLOCKS, start=1):
        for i in range(1, n + 1):
            specs.append((f"conv{b}_{i}", cin, cout))
            cin = cout
    return specs


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of ``vgg_face_dag.pth``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in conv_specs():
        shapes[f"{name}.weight"] = (cout, cin, 3, 3)
        shapes[f"{name}.bias"] = (cout,)
    for name, (cout, cin) in {"fc6": (4096, 512 * 7 * 7), "fc7": (4096, 4096), "fc8": (NUM_IDENTITIES, 4096)}.items():
        shapes[f"{name}.weight"] = (cout, cin)
        shapes[f"{name}.bias"] = (cout,)
    return shapes


def keras_shapes() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(kernel, bias) shapes of each layer group in the Keras .h5: kernels (3, 3, in, out), dense (in, out)."""
    out = {}
    for key, shape in expected_shapes().items():
        name, kind = key.split(".")
        if kind == "weight":
            kernel = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else (shape[1], shape[0])
            out[name] = (kernel, (shape[0],))
    return out


class VGGFace(FrozenBackbone):
    """VGG-16 (13 convolutions, fc6, fc7, fc8); features are fc6 or fc7, after the ReLU by default."""

    bf16 = True  # plain convolutions and ReLUs, no normalisation layer to overflow

    def __init__(self, layer: str = "fc7", relu: bool = True, weights_hash: str = "random"):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"vggface layer must be one of {', '.join(LAYERS)}, got '{layer}'")
        self.layer, self.relu = layer, bool(relu)
        self.name, self.feature_dim, self.input_size = "vggface", 4096, 224
        self.differentiable, self.weights_hash = True, weights_hash
        self.conv_names = [name for name, _, _ in conv_specs()]
        for name, cin, cout in conv_specs():
            setattr(self, name, nn.Conv2d(cin, cout, kernel_size=3, padding=1))
        self.fc6 = nn.Linear(512 * 7 * 7, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, NUM_IDENTITIES)  # the identity classifier: loaded, never used

    @property
    def options(self) -> dict:
        return {"layer": self.layer, "relu": self.relu}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(MEAN_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x * 255.0 - mean

    def pool5(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized (B, 3, 224, 224) -> pool5 (B, 512, 7, 7)."""
        for name in self.conv_names:
            x = F.relu(getattr(self, name)(x))
            if name in POOL_AFTER:
                x = F.max_pool2d(x, 2, 2)
        return x

    def head(self, pool5: torch.Tensor) -> torch.Tensor:
        """pool5 (B, 512, 7, 7) -> fc6 or fc7 features; flattened in PyTorch's (C, H, W) order."""
        x = self.fc6(pool5.flatten(1))
        if self.layer == "fc7":
            x = self.fc7(F.relu(x))
        return F.relu(x) if self.relu else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool5(x))


def init_random(model: VGGFace, seed: int = 0) -> VGGFace:
    """He-normal weights, so that activations keep their scale through 16 layers (tests, benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                m.bias.zero_()
    return model


def load_pth(path: Path) -> dict[str, torch.Tensor]:
    """A ``vgg_face_dag.pth`` state dict (or a .safetensors with the same keys), loaded without unpickling code."""
    try:
        state = files.read_state_dict(path)
    except files.WeightsFileError as err:
        if err.unreadable:
            raise WeightsError(f"{path}: cannot read a PyTorch state dict ({err}); expected vgg_face_dag.pth; "
                               f"{PUBLISHED}") from None
        raise WeightsError(f"{path}: {err}; {PUBLISHED}") from None
    return {k: v.float() for k, v in state.items()}


def _h5_layer(root, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    if name not in root:
        raise WeightsError(_mismatch(path, missing=[name], unexpected=[], shapes=[], keras=True, found=list(root.keys())))
    group = root[name]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
    arrays = [np.asarray(group[n]) for n in names] if names else []
    if not arrays:  # no weight_names attribute: take the datasets in the group, whatever they are called
        group.visititems(lambda _, obj: arrays.append(np.asarray(obj)) if isinstance(obj, h5py.Dataset) else None)
    if not arrays:
        raise WeightsError(_mismatch(path, missing=[name], unexpected=[], shapes=[], keras=True))
    kernels = [a for a in arrays if a.ndim > 1]
    biases = [a for a in arrays if a.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise WeightsError(f"{path}: layer group '{name}' holds {[a.shape for a in arrays]}, expected one kernel "
                           f"{keras_shapes()[name][0]} and one bias {keras_shapes()[name][1]}; {PUBLISHED}")
    return kernels[0], biases[0]


def load_keras_h5(path: Path) -> dict[str, torch.Tensor]:
    """rcmalli's Keras VGGFace weights, converted to the ``vgg_face_dag`` state dict.

    Keras convolves BGR input with (3, 3, in, out) kernels and flattens pool5 as (7, 7, 512) HWC;
    PyTorch takes RGB, (out, in, 3, 3) and a (512, 7, 7) CHW flatten.
    """
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise WeightsError(f"{path}: cannot read as HDF5 ({err}); expected rcmalli_vggface_tf_vgg16.h5; {PUBLISHED}") from None
    with fh:
        root = fh["model_weights"] if "model_weights" in fh else fh  # a full-model save nests the weights
        raw = {}
        for name, want in keras_shapes().items():
            kernel, bias = raw[name] = _h5_layer(root, name, path)
            if (kernel.shape, bias.shape) != want:
                raise WeightsError(_mismatch(path, [], [], [
                    f"{name}: kernel {kernel.shape} bias {bias.shape}, expected kernel {want[0]} bias {want[1]}"], keras=True))
    state = {}
    for name, (kernel, bias) in raw.items():
        if kernel.ndim == 4:
            w = kernel.transpose(3, 2, 0, 1)
            if name == "conv1_1":
                w = w[:, ::-1]  # Keras VGGFace reads BGR; this module reads RGB
        elif name == "fc6":
            w = kernel.T.reshape(4096, 7, 7, 512).transpose(0, 3, 1, 2).reshape(4096, -1)  # HWC -> CHW columns
        else:
            w = kernel.T
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    return state


def _mismatch(path: Path, missing: list, unexpected: list, shapes: list, keras: bool = False,
              found: Optional[list] = None) -> str:
    if keras:
        expected = ", ".join(f"{n} kernel {k} bias {b}" for n, (k, b) in keras_shapes().items())
        kind = "Keras VGGFace layer groups"
    else:
        expected = ", ".join(f"{k} {tuple(s)}" for k, s in expected_shapes().items())
        kind = "vgg_face_dag state-dict keys"
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}")
    if shapes:
        parts.append("wrong shapes: " + "; ".join(shapes))
    if found is not None:
        parts.append(f"the file has {found[:20]}")
    return (f"{path}: does not match VGG-Face: {', '.join(parts)}. Expected {kind}: {expected}. {PUBLISHED}")


def check_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    want = expected_shapes()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} is {tuple(state[k].shape)}, expected {want[k]}" for k in want
              if k in state and tuple(state[k].shape) != want[k]]
    if missing or unexpected or shapes:
        raise WeightsError(_mismatch(path, missing, unexpected, shapes))


def load_vggface_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read either published format into the ``vgg_face_dag`` layout, checking every key and shape."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"VGG-Face weights file {path} not found; {PUBLISHED} "
                           "(set backbone.weights to the downloaded file)")
    state = load_keras_h5(path) if path.suffix in (".h5", ".hdf5") else load_pth(path)
    check_state(path, state)
    return state


@register_backbone("vggface")
def vggface(weights: Optional[str | Path] = None, layer: str = "fc7", relu: bool = True, seed: int = 0) -> VGGFace:
    """VGG-Face from ``vgg_face_dag.pth`` or ``rcmalli_vggface_tf_vgg16.h5``; ``weights="random"`` for tests."""
    if weights is None:
        raise WeightsError(f"the vggface backbone needs its weights file (backbone.weights=...); {PUBLISHED}; "
                           "or use backbone.name=dlib, whose weights ship with face-recognition-models")
    if str(weights) == "random":
        with torch.device("meta"):  # skip PyTorch's default init: init_random overwrites every tensor
            model = VGGFace(layer, relu, weights_hash=f"random-seed{seed}")
        return init_random(model.to_empty(device="cpu"), seed)
    state = load_vggface_state(weights)
    with torch.device("meta"):  # no point initialising 138 M parameters that are overwritten at once
        model = VGGFace(layer, relu, weights_hash=file_sha256(weights))
    model.load_state_dict(state, assign=True)
    return model
