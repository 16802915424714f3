"""The backbone registry (after timm's ``create_model``): a frozen face network by name.

``create_backbone("dlib" | "vggface" | "timm:<model>", weights=...)``; each built-in backbone module
registers its factory with ``register_backbone`` when imported below.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional

# The built-in backbones register themselves when imported.
from antimask.backbones import dlib_descriptor, face_networks, vggface  # noqa: F401
from antimask.backbones.base import (  # noqa: F401  (re-exported: the registry is where users look)
    _REGISTRY,
    BackboneError,
    FrozenBackbone,
    WeightsError,
    check_faces,
    file_sha256,
    register_backbone,
)
from antimask.backbones.timm_backbone import create_timm_backbone
from antimask.config import TIMM_PREFIX


def list_backbones() -> list[str]:
    """Registered names; ``timm:<model>`` stands for every timm model (``timm.list_models()``)."""
    return sorted(_REGISTRY) + [TIMM_PREFIX + "<model>"]


def create_backbone(name: str, weights: Optional[str | Path] = None, **kwargs) -> FrozenBackbone:
    """Build a frozen backbone by name: ``dlib``, ``vggface`` or ``timm:<model>``."""
    if name.startswith(TIMM_PREFIX):
        model = create_timm_backbone(name[len(TIMM_PREFIX):], weights=weights, **kwargs)
    elif name in _REGISTRY:
        model = _REGISTRY[name](weights=weights, **kwargs)
    else:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise BackboneError(f"unknown backbone '{name}'; known: {', '.join(list_backbones())}{hint}")
    return model.freeze()


def backbone_from_config(cfg) -> FrozenBackbone:
    """The backbone ``cfg.backbone`` describes (``cfg`` is the whole config or its backbone section)."""
    section = cfg.backbone if "backbone" in cfg else cfg
    kwargs: dict[str, Any] = {}
    if section.name == "vggface":
        kwargs = {"layer": section.layer, "relu": bool(section.relu)}
    return create_backbone(section.name, weights=section.weights, **kwargs)
