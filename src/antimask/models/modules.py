"""The three training stages as LightningModules: face decoder, mask decoder, upper-face encoder.

Each module only holds its net(s), the loss, the optimiser and the logging; the nets live in
``components/``. Hyperparameters are plain ints/floats/strings so that checkpoints load with
``torch.load(weights_only=True)``; ``load_stage`` does exactly that and checks the stage and the
feature size before building the module. The constructors have no defaults: the schema holds them, and a
checkpoint saved before a hyperparameter existed gets the schema's default for it when it loads.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, Optional, get_args

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics import MeanMetric, MinMetric

from antimask.backbones import backbone_from_config, create_backbone
from antimask.config import EncoderLoss, decoder_rule_violations, schema, split_row_for
from antimask.errors import AntimaskError
from antimask.faces.align import LOWER_POINTS, TEMPLATE_224, TEMPLATE_SIZE
from antimask.faces.compositing import blend_region, hide_region
from antimask.models.components import AppearanceDecoder, Decoder, LandmarkWarp, MaskAwareDecoder, UpperEncoder
from antimask.models.components.discriminator import PatchDiscriminator, discriminator_loss, generator_loss
from antimask.models.losses import IdentityLoss, PerceptualLoss, ssim_loss

NUM_LANDMARKS = 68


class StageMismatchError(AntimaskError, ValueError):
    """A checkpoint that belongs to another stage or another backbone than the one asked for."""


class _StageModule(pl.LightningModule):
    """Shared loss bookkeeping: train/loss, val/loss, val/loss_best, test/loss and extra val metrics.

    ``compute_losses`` returns (loss, extra): each extra value is logged as a per-split mean, except keys
    starting with "_" (outputs a subclass's ``_eval_step`` uses itself, e.g. logits for an IoU).
    """

    STAGE = ""
    EXTRA_METRICS: tuple[str, ...] = ()
    BATCH_KEY = "features"  # the batch entry whose length is the batch size

    def __init__(self) -> None:
        super().__init__()
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_loss_best = MinMetric()
        self.val_extra = torch.nn.ModuleDict({k: MeanMetric() for k in self.EXTRA_METRICS})
        self.test_extra = torch.nn.ModuleDict({k: MeanMetric() for k in self.EXTRA_METRICS})

    def _check_stage(self, stage: str) -> None:
        if stage != self.STAGE:
            raise StageMismatchError(f"{type(self).__name__} is the {self.STAGE} stage, got stage='{stage}'")

    # subclasses: loss and extra metric values of one batch
    def compute_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def on_train_start(self) -> None:
        # the sanity check's val/loss must not count as the best epoch
        self.val_loss_best.reset()
        # A resumed fit restores the optimiser's last lr, set for the checkpoint's max_epochs: set this epoch's
        # lr from the schedule as it reads now (more epochs than before: a longer schedule)
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) and scheduler.last_epoch > 0:
                for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                               scheduler.lr_lambdas):
                    group["lr"] = base * factor(scheduler.last_epoch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.compute_losses(batch)
        self.train_loss(loss.detach())
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(batch[self.BATCH_KEY]))
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], split: str) -> tuple[torch.Tensor, dict]:
        loss, extra = self.compute_losses(batch)
        n = len(batch[self.BATCH_KEY])
        agg = self.val_loss if split == "val" else self.test_loss
        metrics = self.val_extra if split == "val" else self.test_extra
        agg(loss, n)
        self.log(f"{split}/loss", agg, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        for name, value in extra.items():
            if name.startswith("_"):
                continue
            metrics[name](value, n)
            self.log(f"{split}/{name}", metrics[name], on_step=False, on_epoch=True, batch_size=n)
        return loss, extra

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")[0]

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")[0]

    def on_validation_epoch_end(self) -> None:
        # val_loss is already reduced across processes by compute()
        self.val_loss_best(self.val_loss.compute())
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True, prog_bar=True)

    @classmethod
    def hparams_from_config(cls, cfg: DictConfig, feature_dim: int) -> dict[str, Any]:
        """Every constructor argument, from the config (``from_config`` and old checkpoints use it)."""
        raise NotImplementedError

    def _adam(self, params: list[torch.nn.Parameter], betas: tuple[float, float]) -> torch.optim.Optimizer:
        """Adam; its fused kernel with ``fused_adam`` where the parameters' device has one (else torch's default)."""
        params = [p for p in params if p.requires_grad]
        kwargs = dict(lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, betas=tuple(betas))
        fused = self.hparams.get("fused_adam", False) and fused_adam_takes(params)
        return torch.optim.Adam(params, **kwargs, **({"fused": True} if fused else {}))

    def _schedule(self, optimizer: torch.optim.Optimizer) -> Optional[dict]:
        """stages.<stage>.scheduler: none, or cosine from lr to 0 over the stage's max_epochs.

        The closed form reads max_epochs each epoch: a stage resumed with more epochs than it was started with
        follows the longer schedule (CosineAnnealingLR keeps the T_max of the checkpoint and climbs back up).
        """
        if self.hparams.get("scheduler", "none") != "cosine":
            return None
        module = self

        def cosine(epoch: int) -> float:
            epochs = max(int(module.trainer.max_epochs or 1), 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))

        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, cosine), "interval": "epoch"}

    def configure_optimizers(self):
        optimizer = self._adam(list(self.parameters()), (self.hparams.beta1, self.hparams.beta2))
        schedule = self._schedule(optimizer)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}


def fused_adam_takes(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused Adam takes every one of these parameters (it checks only at its first step)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        devices = _get_fused_kernels_supported_devices()
    except ImportError:  # a torch without the list: CUDA has had the kernel longest
        devices = ["cuda"]
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)


def _stage_kwargs(cfg: DictConfig, stage: str) -> dict[str, Any]:
    size = int(cfg.data.image_size)
    settings = cfg.stages[stage]
    return dict(image_size=size, split_row=split_row_for(size, cfg.data.split_row), lr=float(settings.lr),
                weight_decay=float(settings.weight_decay), scheduler=str(settings.scheduler),
                beta1=float(settings.betas[0]), beta2=float(settings.betas[1]), fused_adam=bool(settings.fused_adam))


def _decoder_kwargs(cfg: DictConfig, stage: str) -> dict[str, Any]:
    model = cfg.model
    return dict(shared_dim=int(model.shared_dim), decoder_channels=int(model.decoder_channels),
                decoder_upsamplings=int(model.decoder_upsamplings), upsample=str(model.upsample),
                landmark_weight=float(model.landmark_weight), texture_weight=float(model.texture_weight),
                **_stage_kwargs(cfg, stage))


class FaceDecoderModule(_StageModule):
    """Stage 1: teacher features of the whole face -> the whole face (+ its 68 landmarks)."""

    STAGE = "face_decoder"

    def __init__(self, feature_dim: int, image_size: int, split_row: int, shared_dim: int, decoder_channels: int,
                 decoder_upsamplings: int, upsample: str, use_landmarks: bool, landmark_weight: float,
                 texture_weight: float, lr: float, weight_decay: float, scheduler: str, beta1: float, beta2: float,
                 fused_adam: bool, stage: str = "face_decoder"):
        super().__init__()
        self._check_stage(stage)
        self.save_hyperparameters(logger=False)
        self.decoder = Decoder(feature_dim, image_size, image_size, NUM_LANDMARKS if use_landmarks else 0,
                               shared_dim, decoder_channels, decoder_upsamplings, upsample)

    @classmethod
    def hparams_from_config(cls, cfg: DictConfig, feature_dim: int) -> dict[str, Any]:
        return dict(feature_dim=int(feature_dim), use_landmarks=bool(cfg.model.face_decoder_landmarks),
                    **_decoder_kwargs(cfg, cls.STAGE))

    @classmethod
    def from_config(cls, cfg: DictConfig, feature_dim: int) -> "FaceDecoderModule":
        return cls(**cls.hparams_from_config(cfg, feature_dim))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.decoder(features)

    def compute_losses(self, batch):
        image, points = self.decoder(batch["features"])
        hp = self.hparams
        loss = hp.texture_weight * F.l1_loss(image.float(), batch["face"])
        if points is not None:
            loss = loss + hp.landmark_weight * F.mse_loss(points.float(), batch["landmarks"])
        return loss, {}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> torch.Tensor:
        return self.decoder.draw(batch["features"])


class MaskDecoderModule(_StageModule):
    """Stage 2: teacher features -> shared layer -> lower-face landmarks + the lower band (rows R..S).

    Ablations: ``use_landmarks=False`` drops the landmark head; ``full_face=True`` draws the whole face
    (and all 68 landmarks), as in the paper's full-face redraw.

    Beyond the paper (each off by default): ``decoder="appearance"`` also sees the upper crop (U-Net;
    ``code_every_level`` lets the identity code modulate each of its levels);
    ``landmark_warp`` warps the drawn band onto the predicted landmarks; extra loss terms ``ssim_weight``,
    ``identity_weight`` (through the frozen backbone, attached by ``from_config``), ``perceptual_weight``
    (a frozen timm network from a local weights file) and ``adversarial_weight`` (a PatchGAN on the
    completed face, trained by manual optimisation). The frozen loss networks are never saved in the
    checkpoint; the discriminator is (a resumed run continues the game).

    ``mask_aware`` (with the U-Net): the decoder sees the masked face with its redraw region blanked
    (batch ``masked``, ``redraw``) and draws the whole face; the loss is L1 (and SSIM) under the redraw
    alpha plus ``whole_face_weight`` x the whole face's L1, and the completed face is the masked one
    outside the redraw region (``blend_region``).
    """

    STAGE = "mask_decoder"
    EXTRA_METRICS = ("l1_lower", "l1_redraw")

    def __init__(self, feature_dim: int, image_size: int, split_row: int, shared_dim: int, decoder_channels: int,
                 decoder_upsamplings: int, upsample: str, use_landmarks: bool, full_face: bool,
                 landmark_weight: float, texture_weight: float, lr: float, weight_decay: float, scheduler: str,
                 beta1: float, beta2: float, fused_adam: bool, decoder: str, landmark_warp: bool, ssim_weight: float,
                 identity_weight: float, perceptual_weight: float, perceptual_net: str,
                 perceptual_weights: Optional[str], perceptual_stages: int, adversarial_weight: float,
                 discriminator_width: int, discriminator_layers: int, adversarial_beta1: float,
                 adversarial_beta2: float, code_every_level: bool, identity_net: Optional[str], mask_aware: bool,
                 whole_face_weight: float, stage: str = "mask_decoder"):
        super().__init__()
        self._check_stage(stage)
        if not 0 < split_row < image_size:
            raise ValueError(f"split_row {split_row} lies outside the {image_size}-px face")
        for key, why in decoder_rule_violations(decoder, full_face, use_landmarks, landmark_warp, code_every_level,
                                                mask_aware=mask_aware):
            raise ValueError(f"{key.removeprefix('model.')}: {why}")
        self.save_hyperparameters(logger=False)
        height = image_size if full_face else image_size - split_row
        points = (NUM_LANDMARKS if full_face else len(LOWER_POINTS)) if use_landmarks else 0
        if mask_aware:
            self.decoder = MaskAwareDecoder(feature_dim, image_size, points, shared_dim, decoder_channels,
                                            decoder_upsamplings, code_every_level=code_every_level)
        elif decoder == "paper":
            self.decoder = Decoder(feature_dim, height, image_size, points, shared_dim, decoder_channels,
                                   decoder_upsamplings, upsample)
        else:
            self.decoder = AppearanceDecoder(feature_dim, image_size, split_row, points, shared_dim,
                                             decoder_channels, decoder_upsamplings,
                                             code_every_level=code_every_level)
        if landmark_warp:
            template = torch.from_numpy(TEMPLATE_224[LOWER_POINTS] / TEMPLATE_SIZE)
            self.decoder.warp = LandmarkWarp(image_size, split_row, template)
        self.discriminator = (PatchDiscriminator(discriminator_width, discriminator_layers)
                              if adversarial_weight > 0 else None)
        self.automatic_optimization = adversarial_weight == 0
        self._frozen: dict[str, torch.nn.Module] = {}  # identity / perceptual loss nets: not in the state dict

    def attach_identity_backbone(self, backbone) -> None:
        """The frozen backbone the identity loss runs through (it must be differentiable). Unless it is the
        teacher (whose cached features of the real face come with the batch), its features of the real face
        are computed on the fly."""
        self._frozen["identity"] = IdentityLoss(backbone)

    def _identity_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.hparams.get("identity_net") is None:
            return batch["features"]
        net = self._loss_net("identity").backbone
        with torch.no_grad():
            return net.features(net.preprocess(batch["face"])).float()

    def _loss_net(self, name: str) -> torch.nn.Module:
        if name not in self._frozen:
            if name == "identity":
                raise RuntimeError("identity_weight > 0 needs attach_identity_backbone(backbone) before training "
                                   "(MaskDecoderModule.from_config does it)")
            hp = self.hparams
            self._frozen[name] = PerceptualLoss(hp.perceptual_net, hp.perceptual_weights, hp.perceptual_stages
                                                ).to(self.device)
        return self._frozen[name]

    def on_fit_start(self) -> None:
        for net in self._frozen.values():  # once per fit, not every step: they are outside the module tree
            net.to(self.device)

    @classmethod
    def hparams_from_config(cls, cfg: DictConfig, feature_dim: int) -> dict[str, Any]:
        model = cfg.model
        return dict(
            feature_dim=int(feature_dim), use_landmarks=bool(model.use_landmarks), full_face=bool(model.full_face),
            decoder=str(model.decoder), landmark_warp=bool(model.landmark_warp),
            ssim_weight=float(model.ssim_weight), identity_weight=float(model.identity_weight),
            perceptual_weight=float(model.perceptual_weight), perceptual_net=str(model.perceptual_net),
            perceptual_weights=None if model.perceptual_weights is None else str(model.perceptual_weights),
            perceptual_stages=int(model.perceptual_stages), adversarial_weight=float(model.adversarial_weight),
            discriminator_width=int(model.discriminator_width), discriminator_layers=int(model.discriminator_layers),
            adversarial_beta1=float(model.adversarial_betas[0]), adversarial_beta2=float(model.adversarial_betas[1]),
            code_every_level=bool(model.code_every_level),
            # None: the teacher itself (its cached features of the real face are the target)
            identity_net=None if model.identity_net in (None, cfg.backbone.name) else str(model.identity_net),
            mask_aware=bool(model.mask_aware), whole_face_weight=float(model.whole_face_weight),
            **_decoder_kwargs(cfg, cls.STAGE))

    @classmethod
    def from_config(cls, cfg: DictConfig, feature_dim: int,
                    face_decoder_ckpt: Optional[str | Path] = None) -> "MaskDecoderModule":
        module = cls(**cls.hparams_from_config(cfg, feature_dim))
        if module.hparams.identity_weight > 0:
            identity_net = module.hparams.identity_net
            module.attach_identity_backbone(create_backbone(identity_net) if identity_net
                                            else backbone_from_config(cfg))
        # model.init_from_face_decoder says whether the pipeline hands over the face decoder's checkpoint
        if face_decoder_ckpt is not None:
            module.init_from_face_decoder(face_decoder_ckpt)
        return module

    def forward(self, features: torch.Tensor, upper: Optional[torch.Tensor] = None, *,
                masked: Optional[torch.Tensor] = None, redraw: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(drawn, landmarks): the lower band from features [+ upper]; mask_aware: the whole face from
        features + the masked face + its redraw alpha."""
        if self.hparams.get("mask_aware", False):
            return self.decoder(features, masked, redraw)
        return self.decoder(features, upper)

    def init_from_face_decoder(self, source: "str | Path | FaceDecoderModule") -> list[str]:
        """Copy the face decoder's weights where they mean the same thing; returns the copied names.

        Copied: the shared layer and the whole conv stack (same shapes); the landmark head's rows of the
        40 lower points (or all 68 with full_face); the texture FC whole (full_face) or, when the split
        row falls on a coarse-grid row, the FC rows of the grid cells that cover the lower band.
        """
        hp = self.hparams
        for key, why in decoder_rule_violations(hp.decoder, hp.full_face, hp.use_landmarks, hp.landmark_warp,
                                                hp.code_every_level, init_from_face_decoder=True):
            raise ValueError(f"{key}: {why}")
        face = source if isinstance(source, FaceDecoderModule) else load_stage(
            source, FaceDecoderModule.STAGE, self.hparams.feature_dim)
        src, dst = face.decoder.state_dict(), self.decoder.state_dict()
        new: dict[str, torch.Tensor] = {}
        for name, value in dst.items():
            if name.startswith("landmarks.") or name.startswith("texture.fc."):
                continue
            if name in src and src[name].shape == value.shape:
                new[name] = src[name]
        if self.decoder.landmarks is not None and face.decoder.landmarks is not None:
            idx = torch.arange(NUM_LANDMARKS) if self.hparams.full_face else torch.tensor(LOWER_POINTS)
            rows = torch.stack([2 * idx, 2 * idx + 1], 1).reshape(-1)
            for p in ("weight", "bias"):
                new[f"landmarks.fc.{p}"] = src[f"landmarks.fc.{p}"][rows]
        new.update(self._texture_fc_from(face.decoder, src))
        self.decoder.load_state_dict({**dst, **new})
        return sorted(new)

    def _texture_fc_from(self, face: Decoder, src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ours = self.decoder.texture
        if src["texture.fc.weight"].shape[1] != ours.fc.in_features or face.texture.channels != ours.channels:
            return {}
        if self.hparams.full_face:
            if face.texture.grid != ours.grid:
                return {}
            return {"texture.fc.weight": src["texture.fc.weight"], "texture.fc.bias": src["texture.fc.bias"]}
        cell = self.hparams.image_size / face.texture.grid[0]
        top = self.hparams.split_row / cell
        (fh, fw), (lh, lw) = face.texture.grid, ours.grid
        if top != int(top) or fw != lw or int(top) + lh > fh:
            return {}
        top = int(top)
        c = ours.channels
        w = src["texture.fc.weight"].view(c, fh, fw, -1)[:, top:top + lh].reshape(c * lh * lw, -1)
        b = src["texture.fc.bias"].view(c, fh, fw)[:, top:top + lh].reshape(-1)
        return {"texture.fc.weight": w, "texture.fc.bias": b}

    def compute_losses(self, batch, adversarial: bool = False):
        """(loss, extra metrics); with ``adversarial`` the generator's PatchGAN term is added and the
        completed faces come back as extra["completed"] for the discriminator step."""
        if self.hparams.get("mask_aware", False):
            return self._mask_aware_losses(batch, adversarial)
        image, points = self.decoder(batch["features"], batch["upper"])
        image = image.float()
        hp = self.hparams
        target = batch["face"] if hp.full_face else batch["lower"]
        loss = hp.texture_weight * F.l1_loss(image, target)
        if points is not None:
            truth = batch["landmarks"] if hp.full_face else batch["lower_landmarks"]
            loss = loss + hp.landmark_weight * F.mse_loss(points.float(), truth)
        lower = image[:, :, hp.split_row:] if hp.full_face else image
        extra = {"l1_lower": F.l1_loss(lower.detach(), batch["lower"])}
        if hp.get("ssim_weight", 0) > 0:
            loss = loss + hp.ssim_weight * ssim_loss(lower, batch["lower"])
        if hp.get("perceptual_weight", 0) > 0:
            loss = loss + hp.perceptual_weight * self._loss_net("perceptual")(lower, batch["lower"])
        if hp.get("identity_weight", 0) > 0 or adversarial:
            loss = loss + self._face_terms(torch.cat([batch["upper"], lower], dim=2), batch, adversarial, extra)
        return loss, extra

    def _mask_aware_losses(self, batch, adversarial: bool):
        """mask_aware: L1 (+ SSIM) under the redraw alpha, a smaller whole-face L1 (the U-Net also learns to
        pass the visible face through, which keeps the drawn rim continuous with it) and the other terms on
        the completed face."""
        hp = self.hparams
        alpha, face = batch["redraw"], batch["face"]
        drawn, points = self.decoder(batch["features"], batch["masked"], alpha)
        drawn = drawn.float()
        error = (drawn - face).abs()
        in_region = (error * alpha).sum() / (3 * alpha.sum()).clamp_min(1.0)  # per redrawn pixel and channel
        loss = hp.texture_weight * (in_region + hp.whole_face_weight * error.mean())
        if points is not None:
            loss = loss + hp.landmark_weight * F.mse_loss(points.float(), batch["lower_landmarks"])
        completed = blend_region(batch["masked"], drawn, alpha)
        extra = {"l1_lower": F.l1_loss(completed.detach()[:, :, hp.split_row:], batch["lower"]),
                 "l1_redraw": in_region.detach()}
        if hp.ssim_weight > 0:
            loss = loss + hp.ssim_weight * ssim_loss(completed, face, alpha)
        if hp.perceptual_weight > 0:
            loss = loss + hp.perceptual_weight * self._loss_net("perceptual")(completed, face)
        if hp.identity_weight > 0 or adversarial:
            loss = loss + self._face_terms(completed, batch, adversarial, extra)
        return loss, extra

    def _face_terms(self, completed: torch.Tensor, batch, adversarial: bool, extra: dict) -> torch.Tensor:
        """The identity and adversarial terms of the completed face; it goes to extra["completed"] for the
        discriminator step."""
        hp = self.hparams
        loss = completed.new_zeros(())
        if hp.identity_weight > 0:
            loss = loss + hp.identity_weight * self._loss_net("identity")(completed, self._identity_target(batch))
        if adversarial:
            loss = loss + hp.adversarial_weight * generator_loss(self.discriminator(completed))
            extra["completed"] = completed
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)
        gen_opt, disc_opt = self.optimizers()
        loss, extra = self.compute_losses(batch, adversarial=True)
        gen_opt.zero_grad()
        self.manual_backward(loss)
        gen_opt.step()
        fake = extra["completed"].detach()
        disc_loss = discriminator_loss(self.discriminator(batch["face"]), self.discriminator(fake))
        disc_opt.zero_grad()
        self.manual_backward(disc_loss)
        disc_opt.step()
        n = len(batch["features"])
        self.train_loss(loss.detach())
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/discriminator_loss", disc_loss.detach(), on_step=True, on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:  # manual optimisation steps its schedulers itself
            schedulers = self.lr_schedulers()
            for sch in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
                sch.step()

    def configure_optimizers(self):
        if self.discriminator is None:
            return super().configure_optimizers()
        betas = (self.hparams.adversarial_beta1, self.hparams.adversarial_beta2)
        gen = self._adam([p for n, p in self.named_parameters() if not n.startswith("discriminator.")], betas)
        disc = self._adam(list(self.discriminator.parameters()), betas)
        schedules = [s for s in (self._schedule(gen), self._schedule(disc)) if s is not None]
        return [gen, disc], schedules

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> torch.Tensor:
        """The drawn lower band; mask_aware: the completed face (masked outside the redraw region)."""
        if self.hparams.get("mask_aware", False):
            drawn = self.decoder.draw(batch["features"], batch["masked"], batch["redraw"])
            return blend_region(batch["masked"], drawn, batch["redraw"])
        return self.decoder.draw(batch["features"], batch["upper"])


class EncoderDistillModule(_StageModule):
    """Stage 3: the visible upper rows -> the teacher's features of the whole face (MSE or cosine).

    ``mask_aware``: the upper rows of the masked face with its redraw region blanked (``visible_upper``), since
    a mask may reach above the split row; the target stays the teacher's features of the real face.
    """

    STAGE = "encoder"
    EXTRA_METRICS = ("cosine",)

    def __init__(self, feature_dim: int, image_size: int, split_row: int, encoder: str, encoder_width: int,
                 encoder_weights: Optional[str], encoder_loss: str, lr: float, weight_decay: float, scheduler: str,
                 beta1: float, beta2: float, fused_adam: bool, mask_aware: bool, stage: str = "encoder"):
        super().__init__()
        self._check_stage(stage)
        if encoder_loss not in get_args(EncoderLoss):
            raise ValueError(f"encoder_loss must be one of {', '.join(get_args(EncoderLoss))}, got '{encoder_loss}'")
        self.save_hyperparameters(logger=False)
        self.encoder = UpperEncoder(feature_dim, encoder, encoder_width, encoder_weights)

    @classmethod
    def hparams_from_config(cls, cfg: DictConfig, feature_dim: int) -> dict[str, Any]:
        model = cfg.model
        return dict(feature_dim=int(feature_dim), encoder=str(model.encoder), encoder_width=int(model.encoder_width),
                    encoder_weights=None if model.encoder_weights is None else str(model.encoder_weights),
                    encoder_loss=str(model.encoder_loss), mask_aware=bool(model.mask_aware),
                    **_stage_kwargs(cfg, cls.STAGE))

    @classmethod
    def from_config(cls, cfg: DictConfig, feature_dim: int) -> "EncoderDistillModule":
        return cls(**cls.hparams_from_config(cfg, feature_dim))

    def forward(self, upper: torch.Tensor) -> torch.Tensor:
        return self.encoder(upper)

    def visible_upper(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's input: the upper crop, or with mask_aware that of the masked face, region blanked."""
        if not self.hparams.get("mask_aware", False):
            return batch["upper"]
        return hide_region(batch["masked"], batch["redraw"])[:, :, :self.hparams.split_row]

    def compute_losses(self, batch):
        pred = self.encoder(self.visible_upper(batch)).float()
        teacher = batch["features"].float()
        cosine = F.cosine_similarity(pred, teacher, dim=1).mean()
        loss = 1 - cosine if self.hparams.encoder_loss == "cosine" else F.mse_loss(pred, teacher)
        return loss, {"cosine": cosine.detach()}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> torch.Tensor:
        return self.encoder(self.visible_upper(batch))


STAGE_MODULES: dict[str, type[_StageModule]] = {
    m.STAGE: m for m in (FaceDecoderModule, MaskDecoderModule, EncoderDistillModule)}


def read_stage_checkpoint(path: str | Path, expected_stage: str, expected: Optional[str] = None
                          ) -> tuple[dict, dict[str, Any]]:
    """(checkpoint, hyperparameters) of a Lightning checkpoint of ``expected_stage``, read without unpickling
    code; StageMismatchError for a pickle with objects, a foreign file or another stage's checkpoint
    (``expected`` words the stage in that message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # a pickle that would run code (or just build objects): refused
        raise StageMismatchError(f"checkpoint {path} refused: it is not a weights-only checkpoint (loading it "
                                 f"would unpickle arbitrary objects: {str(err).splitlines()[0]})") from None
    hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    stage = hparams.get("stage")
    if stage is None or "state_dict" not in ckpt:
        raise StageMismatchError(f"checkpoint {path} is not an antimask stage checkpoint (no stage in its hparams)")
    if stage != expected_stage:
        raise StageMismatchError(f"checkpoint {path} is a {stage} checkpoint, expected {expected or expected_stage}")
    return ckpt, hparams


def load_stage(path: str | Path, expected_stage: str, feature_dim: Optional[int] = None) -> _StageModule:
    """A stage module from a Lightning checkpoint, loaded without unpickling code, in eval mode.

    Raises StageMismatchError when the checkpoint is of another stage or another feature size.
    """
    if expected_stage not in STAGE_MODULES:
        raise ValueError(f"unknown stage '{expected_stage}'; one of {', '.join(STAGE_MODULES)}")
    ckpt, hparams = read_stage_checkpoint(path, expected_stage)
    stage = expected_stage
    if feature_dim is not None and int(hparams["feature_dim"]) != int(feature_dim):
        raise StageMismatchError(f"checkpoint {path} has feature size {hparams['feature_dim']}, "
                                 f"the backbone gives {feature_dim}")
    # hyperparameters added to the schema after the checkpoint was saved: the schema's default, which is
    # what the module did before the key existed
    known = STAGE_MODULES[stage].hparams_from_config(schema(), int(hparams["feature_dim"]))
    hparams = {**known, **hparams}
    if stage == EncoderDistillModule.STAGE:
        hparams["encoder_weights"] = None  # the checkpoint already holds the trained weights
    module = STAGE_MODULES[stage](**hparams)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()
