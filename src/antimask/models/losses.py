"""Losses on drawn faces: structure (SSIM), identity (a frozen face backbone) and perception (frozen timm stages).

The frozen networks are held outside the module tree: an optimizer never sees their parameters and
checkpoints never carry their weights (they are rebuilt from the config), yet ``.to()`` still moves them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from antimask import files
from antimask.backbones.base import FrozenBackbone


def ssim_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """1 - SSIM of float [0, 1] (B, 3, H, W) images (Gaussian window of 11 px), averaged over the batch;
    with ``weight`` (B, 1, H, W), the SSIM map averaged under it (e.g. over a redraw region only)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if weight is None:
        return 1.0 - structural_similarity_index_measure(pred, target, data_range=1.0)
    _, ssim_map = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none",
                                                      return_full_image=True)
    weight = weight.to(ssim_map.dtype).expand_as(ssim_map)
    return 1.0 - (ssim_map * weight).sum() / weight.sum().clamp_min(1.0)


class _HoldsFrozen(nn.Module):
    """A loss around a frozen network kept in a plain attribute (see the module docstring)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        for p in net.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "net", net.eval())  # bypasses nn.Module registration on purpose

    def _apply(self, fn: Callable, recurse: bool = True) -> _HoldsFrozen:
        self.net._apply(fn, recurse)  # .to(), .cuda(), .half() reach the hidden network too
        return super()._apply(fn, recurse)


class IdentityLoss(_HoldsFrozen):
    """1 - cosine between the frozen backbone's features of the drawn face and target features."""

    def __init__(self, backbone: FrozenBackbone):
        if not backbone.differentiable:
            raise ValueError("identity loss needs a differentiable backbone (vggface or timm:<model>); "
                             f"'{backbone.name}' runs outside torch")
        super().__init__(backbone.freeze())

    @property
    def backbone(self) -> FrozenBackbone:
        return self.net

    def forward(self, faces: Tensor, target_features: Tensor) -> Tensor:
        """Faces float [0, 1] (B, 3, H, W), any size; target features (B, D). Gradients reach the faces."""
        # features(preprocess(x)) rather than backbone(x): a backbone may wrap forward in no_grad
        feats = self.backbone.features(self.backbone.preprocess(faces)).float()
        if target_features.shape != feats.shape:
            raise ValueError(f"target features are {tuple(target_features.shape)}, but {self.backbone.name} "
                             f"gives {tuple(feats.shape)} for these faces")
        return 1.0 - F.cosine_similarity(feats, target_features.to(feats), dim=1).mean()

    def extra_repr(self) -> str:
        return f"backbone={self.backbone.name!r}"


class PerceptualLoss(_HoldsFrozen):
    """Mean L1 between feature maps of a frozen timm network (features_only) of pred and target, over its stages."""

    def __init__(self, model: str, weights: str | Path | None, stages: int):
        import timm

        if weights is None:
            raise ValueError(f"the perceptual loss needs pretrained {model} weights: set model.perceptual_weights to a "
                             "local weights file (timm/ImageNet .safetensors or .pth); nothing is downloaded here")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"perceptual weights file {path} for timm model '{model}' not found "
                                    "(model.perceptual_weights)")
        net = timm.create_model(model, pretrained=False, features_only=True, out_indices=tuple(range(stages)))
        load_features(net, model, path)
        super().__init__(net)
        self.model, self.stages = model, stages
        cfg = net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1), persistent=False)

    def stage_features(self, x: Tensor) -> list[Tensor]:
        return self.net((x.float() - self.mean) / self.std)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Float [0, 1] (B, 3, H, W) images; gradients reach ``pred``, ``target`` is a fixed reference."""
        with torch.no_grad():
            wanted = self.stage_features(target)
        drawn = self.stage_features(pred)
        return torch.stack([F.l1_loss(d, w) for d, w in zip(drawn, wanted)]).mean()

    def extra_repr(self) -> str:
        return f"model={self.model!r}, stages={self.stages}"


def load_features(net: nn.Module, model: str, path: Path) -> None:
    """Load a full timm checkpoint (classifier optional) into ``net``, the features_only cut of ``model``.

    The file is checked against the whole architecture, so another model's weights cannot slip into the
    stages the cut keeps; ``features_only`` renames flattened modules (``features.0`` -> ``features_0``).
    """
    import timm

    try:
        state = files.read_state_dict(path)
    except files.WeightsFileError as err:
        raise ValueError(f"{path}: cannot use as perceptual weights for timm model '{model}': {err}") from None
    with torch.device("meta"):  # only names and shapes are needed
        full = timm.create_model(model, pretrained=False, num_classes=0)
    own = full.state_dict()
    classifier = full.pretrained_cfg.get("classifier") or ""  # features_only drops it from its own cfg
    heads = tuple(h + "." for h in (classifier if isinstance(classifier, (list, tuple)) else (classifier,)) if h)
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
    problems = [f"missing key {k}" for k in own if k not in state and not k.endswith("num_batches_tracked")]
    problems += [f"unexpected key {k}" for k in state if k not in own]
    problems += [f"{k} is {tuple(v.shape)}, expected {tuple(own[k].shape)}" for k, v in state.items()
                 if k in own and v.shape != own[k].shape]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{path}: does not match timm model '{model}' (model.perceptual_weights): {problems[0]}{more}")
    mapped = {}
    for k, v in net.state_dict().items():
        src = _source_key(k, state)
        if src is None and not k.endswith("num_batches_tracked"):
            raise ValueError(f"{path}: has no tensor for {k} of the features_only cut of timm model '{model}'")
        mapped[k] = state[src] if src else v
    net.load_state_dict(mapped)


def _source_key(key: str, state: dict) -> str | None:
    """The checkpoint key of a features_only key: itself, without ``model.``, or one ``_`` of its first name a dot."""
    first, dot, rest = key.removeprefix("model.").partition(".")
    candidates = [key, key.removeprefix("model.")]
    candidates += [first[:i] + "." + first[i + 1:] + dot + rest for i, c in enumerate(first) if c == "_"]
    return next((k for k in candidates if k in state), None)
