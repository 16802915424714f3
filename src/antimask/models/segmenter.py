"""The mask segmenter as a LightningModule (BCE + soft Dice on the region a synthetic mask covers, IoU logged; a
face head told faces from the crops ``faces.negatives`` makes), its weights-only checkpoint loader,
``predict_regions`` (uint8 faces in, bool mask regions out) and ``face_probabilities`` (is each crop a face)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics.classification import BinaryAccuracy, BinaryJaccardIndex
from torchvision.transforms.functional import gaussian_blur

from antimask.config import SEGMENTER, schema
from antimask.faces.images import to_float
from antimask.models.components.segmenter import MaskSegmenter
from antimask.models.modules import StageMismatchError, _StageModule, read_stage_checkpoint

STAGE = SEGMENTER


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - Dice of the predicted probabilities, per face then averaged; ``smooth`` keeps a face without a mask
    (empty target) from dividing by zero and rewards an empty prediction for it."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (prob * target).sum(1)
    return (1 - (2 * overlap + smooth) / (prob.sum(1) + target.sum(1) + smooth)).mean()


def _low_res(faces: torch.Tensor) -> torch.Tensor:
    size = faces.shape[-1]
    return F.interpolate(F.interpolate(faces, scale_factor=0.5, mode="area"), size=(size, size), mode="bilinear",
                         align_corners=False)


# test/iou_NAME: the held-out test masks through a fixed degradation of float (B, 3, S, S) faces
DEGRADED = {"blurred": lambda faces: gaussian_blur(faces, [5, 5], [1.0, 1.0]), "low_res": _low_res}


class MaskSegmenterModule(_StageModule):
    """``MaskSegmenter`` trained on ``MaskedFaceDataModule`` batches (``masked`` in, ``region`` target).

    Logs train/loss, val/loss, val/loss_best and val/iou (test/loss, test/iou on test): the IoU of the thresholded
    region over all pixels of the split's faces (torchmetrics, so DDP reduces it over every process); on test also
    test/iou_blurred and test/iou_low_res, the same faces through a worse camera (``DEGRADED``).
    With ``face_weight`` > 0 the batches also hold crops that are not faces (``is_face`` 0, empty region): the face
    head's BCE joins the loss with that weight, and val/face_accuracy (test/...) is logged.
    """

    STAGE = STAGE
    BATCH_KEY = "masked"

    def __init__(self, stage: str, image_size: int, width: int, depth: int, dice_weight: float, threshold: float,
                 lr: float, weight_decay: float, scheduler: str, beta1: float, beta2: float, fused_adam: bool,
                 face_weight: float):
        super().__init__()
        self._check_stage(stage)
        self.save_hyperparameters(logger=False)
        self.net = MaskSegmenter(width, depth, face_head=face_weight > 0)
        self.val_iou = BinaryJaccardIndex(threshold=threshold)
        self.test_iou = BinaryJaccardIndex(threshold=threshold)
        self.val_face = BinaryAccuracy()
        self.test_face = BinaryAccuracy()
        # the test faces seen through a worse camera than the store's: what a real photo does to the masks
        self.test_degraded = torch.nn.ModuleDict({name: BinaryJaccardIndex(threshold=threshold) for name in DEGRADED})

    @classmethod
    def hparams_from_config(cls, cfg: DictConfig) -> dict[str, Any]:
        m, settings = cfg.masks, cfg.stages[STAGE]
        return dict(stage=STAGE, image_size=int(cfg.data.image_size), width=int(m.segmenter_width),
                    depth=int(m.segmenter_depth), dice_weight=float(m.dice_weight), threshold=float(m.threshold),
                    lr=float(settings.lr), weight_decay=float(settings.weight_decay),
                    scheduler=str(settings.scheduler), beta1=float(settings.betas[0]), beta2=float(settings.betas[1]),
                    fused_adam=bool(settings.fused_adam), face_weight=float(m.face_weight))

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "MaskSegmenterModule":
        return cls(**cls.hparams_from_config(cfg))

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        return self.net(masked)

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, {"_logits": logits, "_face": face logits}) of one batch; they feed the metrics, not the log."""
        logits, face = self.net.both(batch["masked"])
        target = batch["region"]
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if self.hparams.dice_weight:
            loss = loss + self.hparams.dice_weight * soft_dice_loss(logits, target)
        if face is not None and "is_face" in batch:
            loss = loss + self.hparams.face_weight * F.binary_cross_entropy_with_logits(face, batch["is_face"].float())
        return loss, {"_logits": logits, "_face": face}

    def _eval_step(self, batch: dict[str, torch.Tensor], split: str) -> tuple[torch.Tensor, dict]:
        loss, extra = super()._eval_step(batch, split)
        iou = self.val_iou if split == "val" else self.test_iou
        faces = batch["is_face"].bool() if "is_face" in batch else torch.ones(len(batch["masked"]), dtype=torch.bool,
                                                                               device=batch["masked"].device)
        if faces.any():
            iou(torch.sigmoid(extra["_logits"][faces]), batch["region"][faces].long())
            self.log(f"{split}/iou", iou, on_step=False, on_epoch=True, prog_bar=True, batch_size=int(faces.sum()))
            if split == "test":
                for name, degrade in DEGRADED.items():
                    metric = self.test_degraded[name]
                    metric(torch.sigmoid(self(degrade(batch["masked"][faces]))), batch["region"][faces].long())
                    self.log(f"test/iou_{name}", metric, on_step=False, on_epoch=True, batch_size=int(faces.sum()))
        if extra["_face"] is not None and "is_face" in batch:
            accuracy = self.val_face if split == "val" else self.test_face
            accuracy(torch.sigmoid(extra["_face"]), batch["is_face"].long())
            self.log(f"{split}/face_accuracy", accuracy, on_step=False, on_epoch=True, batch_size=len(faces))
        return loss, extra

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> torch.Tensor:
        """Mask probabilities (B, 1, S, S)."""
        return torch.sigmoid(self(batch["masked"]))


def load_segmenter(path: str | Path, image_size: Optional[int] = None) -> MaskSegmenterModule:
    """The segmenter of a Lightning checkpoint, loaded without unpickling code, in eval mode.

    Raises StageMismatchError for a file that is not a weights-only segmenter checkpoint (of ``image_size``
    when given).
    """
    ckpt, hparams = read_stage_checkpoint(path, STAGE, expected=f"a {STAGE} one")
    if image_size is not None and int(hparams["image_size"]) != int(image_size):
        raise StageMismatchError(f"checkpoint {path} segments {hparams['image_size']} px faces, not {image_size} px")
    # keys added to the schema after the checkpoint was saved: the schema's default, but no face head for a
    # checkpoint saved before it existed
    hparams = {**MaskSegmenterModule.hparams_from_config(schema()), "face_weight": 0.0, **hparams}
    module = MaskSegmenterModule(**hparams)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


@torch.no_grad()
def predict_regions(module: MaskSegmenterModule, faces: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mask regions (bool (N, S, S)) of aligned uint8 faces (N, S, S, 3) at the module's face size."""
    faces = np.asarray(faces)
    size = int(module.hparams.image_size)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
        raise ValueError(f"predict_regions expects aligned uint8 faces (N, {size}, {size}, 3) (the segmenter's "
                         f"face size), got {faces.dtype} {faces.shape}")
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    out = np.zeros(faces.shape[:3], bool)
    # logit > logit(threshold) is probability > threshold without the sigmoid
    threshold = float(np.log(module.hparams.threshold / (1 - module.hparams.threshold)))
    try:
        for start in range(0, len(faces), batch_size):
            logits = module(to_float(faces[start:start + batch_size], device=device))
            out[start:start + batch_size] = (logits[:, 0] > threshold).cpu().numpy()
    finally:
        module.train(was_training)
    return out


@torch.no_grad()
def face_probabilities(module: MaskSegmenterModule, faces: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The face head's probability (float (N,)) that each aligned uint8 crop (N, S, S, 3) is a face."""
    if module.net.face_head is None:
        raise ValueError("this segmenter has no face head (masks.face_weight was 0, or it predates the head); "
                         "retrain it with `antimask train segmenter`")
    faces = np.asarray(faces)
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    try:
        out = [torch.sigmoid(module.net.classify(to_float(faces[s:s + batch_size], device=device))).cpu().numpy()
               for s in range(0, len(faces), batch_size)]
    finally:
        module.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)
