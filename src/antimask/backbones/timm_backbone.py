"""Any timm model as a frozen face-feature extractor (its pre-logits features, ``num_classes=0``).

Weights come from a local file (safetensors, or a state dict read with ``weights_only``) or from the
local Hugging Face / torch hub cache; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from antimask import files
from antimask.backbones.base import FrozenBackbone, WeightsError, file_sha256

HF_FILES = ("model.safetensors", "pytorch_model.bin")


class TimmBackbone(FrozenBackbone):
    """A timm model without its classifier, with the ImageNet normalisation of its pretrained config."""

    bf16 = True  # ImageNet networks are trained and served in bf16

    def __init__(self, model: torch.nn.Module, model_name: str, weights_hash: str):
        super().__init__()
        self.model = model
        cfg = model.pretrained_cfg
        self.name = f"timm:{model_name}"
        self.input_size = int(cfg.get("input_size", (3, 224, 224))[-1])
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.differentiable, self.weights_hash = True, weights_hash
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file or a state dict (``weights_only``: no code is unpickled)."""
    try:
        return files.read_state_dict(path)
    except files.WeightsFileError as err:
        if err.unreadable:
            raise WeightsError(f"{path}: cannot read weights ({err}); expected a .safetensors file "
                               "or a PyTorch state dict") from None
        raise WeightsError(f"{path}: {err}") from None


def load_into(model: torch.nn.Module, path: Path, model_name: str) -> None:
    """Load a checkpoint, dropping only the classifier (``num_classes=0`` has none); anything else must match."""
    state = read_state_dict(path)
    own = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier") or ""
    heads = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    state = {k: v for k, v in state.items() if k in own or not any(h and k.startswith(h + ".") for h in heads)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {tuple(v.shape)}, expected {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        detail = []
        if missing:
            detail.append(f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)} keys)")
        if unexpected:
            detail.append(f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)} keys)")
        if shapes:
            detail.append("wrong shapes: " + "; ".join(shapes[:10]))
        raise WeightsError(f"{path}: does not match timm model '{model_name}': {', '.join(detail)}")
    model.load_state_dict(state, strict=True)


def cached_pretrained(model: torch.nn.Module) -> tuple[Optional[Path], list[str]]:
    """The model's pretrained weights in the local HF hub or torch hub cache, and every place looked at."""
    cfg = model.pretrained_cfg
    looked = []
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        for name in ([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(HF_FILES)):
            found = try_to_load_from_cache(hub_id, name)
            looked.append(f"{constants.HF_HUB_CACHE} (repo {hub_id}, file {name})")
            if isinstance(found, str):
                return Path(found), looked
    url = cfg.get("url")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        looked.append(str(path))
        if path.is_file():
            return path, looked
    return None, looked


def create_timm_backbone(model_name: str, weights: Optional[str | Path] = None, **kwargs) -> TimmBackbone:
    import timm

    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as err:
        raise WeightsError(f"timm cannot build '{model_name}': {err}") from None
    if str(weights) == "random":  # seeded random init, for tests and benchmarks
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        return TimmBackbone(model, model_name, "random-seed0")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {path} for timm:{model_name} not found (backbone.weights)")
    else:
        path, looked = cached_pretrained(model)
        if path is None:
            raise WeightsError(
                f"no local pretrained weights for timm:{model_name}; looked in {'; '.join(looked) or 'nothing (no hf_hub_id or url)'}. "
                "Download them once where there is internet (python -c \"import timm; timm.create_model("
                f"'{model_name}', pretrained=True)\"), or set backbone.weights to a .safetensors / state-dict file")
    load_into(model, path, model_name)
    return TimmBackbone(model, model_name, file_sha256(path))
