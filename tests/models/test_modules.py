"""The three stage LightningModules: they run, learn, log, save, load and resume as promised."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from antimask.faces.align import LOWER_POINTS
from antimask.models import (EncoderDistillModule, FaceDecoderModule, MaskDecoderModule, StageMismatchError,
                             load_stage)
from antimask.models.callbacks import ChannelsLast
from antimask.models.modules import fused_adam_takes
from helpers import build_module

FEATURES = 16
MODULES = {"face_decoder": FaceDecoderModule, "mask_decoder": MaskDecoderModule, "encoder": EncoderDistillModule}


class ValLossHistory(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.losses.append(float(trainer.callback_metrics["val/loss"]))


def build(stage, small_cfg, *overrides):
    return MODULES[stage].from_config(small_cfg(*overrides), FEATURES)


@pytest.mark.parametrize("stage", list(MODULES))
def test_fast_dev_run(stage, small_cfg, synthetic, trainer_kwargs):
    module = build(stage, small_cfg)
    trainer = pl.Trainer(fast_dev_run=True, **trainer_kwargs)
    trainer.fit(module, synthetic(), synthetic())
    assert {"train/loss", "val/loss", "val/loss_best"} <= set(trainer.callback_metrics)
    trainer.test(module, synthetic(16))
    assert "test/loss" in trainer.callback_metrics
    extra = {"mask_decoder": "test/l1_lower", "encoder": "test/cosine"}.get(stage)
    if extra:
        assert extra in trainer.callback_metrics


@pytest.mark.parametrize("stage,lr,epochs", [("face_decoder", 1e-2, 8), ("mask_decoder", 1e-2, 8),
                                             ("encoder", 3e-3, 12)])
def test_val_loss_falls(stage, lr, epochs, small_cfg, synthetic, trainer_kwargs):
    torch.manual_seed(0)
    module = build(stage, small_cfg, f"stages.{stage}.lr={lr}")
    history = ValLossHistory()
    trainer = pl.Trainer(max_epochs=epochs, num_sanity_val_steps=0, callbacks=[history], **trainer_kwargs)
    trainer.fit(module, synthetic(shuffle=True), synthetic())
    losses = history.losses
    assert len(losses) == epochs
    assert min(losses) < 0.75 * losses[0] and losses[-1] < 0.9 * losses[0], losses
    assert float(trainer.callback_metrics["val/loss_best"]) == pytest.approx(min(losses), rel=1e-5)
    if stage == "encoder":
        assert float(trainer.callback_metrics["val/cosine"]) > 0.4


def test_bf16_mixed_on_cpu(small_cfg, synthetic, trainer_kwargs):
    module = build("mask_decoder", small_cfg)
    trainer = pl.Trainer(fast_dev_run=True, precision="bf16-mixed", **trainer_kwargs)
    trainer.fit(module, synthetic(), synthetic())
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_hparams_are_plain(small_cfg):
    for stage in MODULES:
        hp = build(stage, small_cfg).hparams
        assert hp["stage"] == stage
        assert all(v is None or isinstance(v, (int, float, str, bool)) for v in hp.values()), dict(hp)


def test_use_landmarks_false_drops_the_head(small_cfg, synthetic):
    with_lm = build("mask_decoder", small_cfg)
    without = build("mask_decoder", small_cfg, "model.use_landmarks=false")
    assert without.decoder.landmarks is None
    names = {n for n, _ in with_lm.named_parameters()} - {n for n, _ in without.named_parameters()}
    assert names == {"decoder.landmarks.fc.weight", "decoder.landmarks.fc.bias"}
    assert with_lm.decoder.landmarks.num_points == len(LOWER_POINTS) == 40
    batch = next(iter(synthetic(8)))
    without.load_state_dict(with_lm.state_dict(), strict=False)
    loss_with, _ = with_lm.eval().compute_losses(batch)
    loss_without, _ = without.eval().compute_losses(batch)
    assert loss_with > loss_without  # the landmark term is gone, the texture term is identical


def test_full_face_draws_the_whole_face(small_cfg, synthetic):
    module = build("mask_decoder", small_cfg, "model.full_face=true")
    batch = next(iter(synthetic(4)))
    image, points = module(batch["features"])
    assert image.shape == (4, 3, 64, 64)
    assert points.shape == (4, 68, 2)
    lower = build("mask_decoder", small_cfg)(batch["features"])[0]
    assert lower.shape == (4, 3, 64 - 27, 64)
    _, extra = module.compute_losses(batch)
    assert extra["l1_lower"] >= 0


def _save(module, path, synthetic, trainer_kwargs):
    trainer = pl.Trainer(fast_dev_run=True, **trainer_kwargs)
    trainer.fit(module, synthetic(16))
    trainer.save_checkpoint(path)
    return path


def test_load_stage_checks_stage_and_feature_size(small_cfg, synthetic, trainer_kwargs, tmp_path):
    face = build("face_decoder", small_cfg)
    path = _save(face, tmp_path / "face.ckpt", synthetic, trainer_kwargs)
    loaded = load_stage(path, "face_decoder", FEATURES)
    assert isinstance(loaded, FaceDecoderModule) and not loaded.training
    assert torch.equal(loaded.decoder.texture.fc.weight, face.decoder.texture.fc.weight)
    with pytest.raises(StageMismatchError, match="is a face_decoder checkpoint, expected mask_decoder"):
        load_stage(path, "mask_decoder")
    with pytest.raises(StageMismatchError, match="feature size 16, the backbone gives 128"):
        load_stage(path, "face_decoder", 128)
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(StageMismatchError, match="not an antimask stage checkpoint"):
        load_stage(tmp_path / "foreign.ckpt", "encoder")


def test_checkpoint_loads_with_weights_only(small_cfg, synthetic, trainer_kwargs, tmp_path):
    path = _save(build("encoder", small_cfg), tmp_path / "enc.ckpt", synthetic, trainer_kwargs)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["stage"] == "encoder"
    assert isinstance(load_stage(path, "encoder", FEATURES), EncoderDistillModule)


def test_resume_from_last_continues_at_next_epoch(small_cfg, synthetic, trainer_kwargs, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    ckpt_dir = tmp_path / "ckpt"
    first = pl.Trainer(max_epochs=2, callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True)], **kwargs)
    first.fit(build("face_decoder", small_cfg), synthetic(32), synthetic(16))
    last = ckpt_dir / "last.ckpt"
    assert last.is_file()
    epochs = []

    class Epochs(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            epochs.append(trainer.current_epoch)

    second = pl.Trainer(max_epochs=3, callbacks=[Epochs(), ModelCheckpoint(dirpath=ckpt_dir, save_last=True)],
                        **kwargs)
    second.fit(build("face_decoder", small_cfg), synthetic(32), synthetic(16), ckpt_path=str(last))
    assert epochs == [2]
    assert second.global_step == 3 * first.global_step // 2


def test_init_from_face_decoder_copies_weights(small_cfg, synthetic, trainer_kwargs, tmp_path):
    # 64 px with 2 upsamplings: 16-px grid cells, split row 32 falls on a cell edge -> FC rows copied
    cfg = ("data.split_row=32", "model.decoder_upsamplings=2", "model.init_from_face_decoder=true")
    face = build("face_decoder", small_cfg, *cfg)
    path = _save(face, tmp_path / "face.ckpt", synthetic, trainer_kwargs)
    fresh = build("mask_decoder", small_cfg, *cfg)  # no checkpoint handed over: random init
    assert not torch.equal(fresh.decoder.shared.fc.weight, face.decoder.shared.fc.weight)
    mask = MaskDecoderModule.from_config(small_cfg(*cfg), FEATURES, face_decoder_ckpt=path)
    f, m = face.decoder, mask.decoder
    assert torch.equal(m.shared.fc.weight, f.shared.fc.weight)
    assert torch.equal(m.texture.convs[0].weight, f.texture.convs[0].weight)
    assert torch.equal(m.landmarks.fc.weight[:2], f.landmarks.fc.weight[2 * LOWER_POINTS[0]: 2 * LOWER_POINTS[0] + 2])
    grid = f.texture.fc.weight.view(32, 4, 4, -1)
    assert torch.equal(m.texture.fc.weight.view(32, 2, 4, -1), grid[:, 2:])
    # the copied layers draw the face decoder's lower rows (away from the top edge the convs see)
    mask.eval(), face.eval()
    x = torch.randn(3, FEATURES)
    assert torch.allclose(mask.decoder.draw(x)[:, :, 8:], face.decoder.draw(x)[:, :, 40:], atol=1e-6)
    # without a grid-aligned split row the FC is skipped, the rest still copied
    copied = build_module(MaskDecoderModule, FEATURES, 64, 27, shared_dim=64, decoder_channels=32,
                          decoder_upsamplings=2).init_from_face_decoder(face)
    assert "shared.fc.weight" in copied and "texture.fc.weight" not in copied


@pytest.mark.parametrize("override,key", [("model.encoder=resnet18", "model.encoder"),
                                          ("model.shared_dim=-1", "model.shared_dim"),
                                          ("model.decoder_channels=0", "model.decoder_channels")])
def test_config_rejects_bad_model_values(small_cfg, override, key):
    from antimask.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        small_cfg(override)


def test_no_shared_layer_when_shared_dim_is_zero(small_cfg):
    module = build("mask_decoder", small_cfg, "model.shared_dim=0")
    assert module.decoder.shared is None
    assert module.decoder.texture.fc.in_features == FEATURES


@pytest.mark.parametrize("stage", list(MODULES))
def test_constructors_take_every_tunable_from_the_caller(stage):
    """No defaults to drift from the schema: only the stage name (a constant) may be left out."""
    import inspect

    params = inspect.signature(MODULES[stage]).parameters
    assert [n for n, p in params.items() if p.default is not inspect.Parameter.empty] == ["stage"]
    with pytest.raises(TypeError, match="missing"):
        MODULES[stage](FEATURES, 64, 27)


def test_from_config_threads_the_discriminator_perceptual_and_adam_settings(small_cfg):
    module = build("mask_decoder", small_cfg, "model.adversarial_weight=1", "model.discriminator_width=8",
                   "model.discriminator_layers=2", "model.adversarial_betas=[0.4,0.99]", "model.perceptual_stages=2",
                   "stages.mask_decoder.betas=[0.8,0.9]")
    convs = [m for m in module.discriminator.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 1]  # two stride-2 layers of width 8, 16, then the logits
    assert module.hparams.perceptual_stages == 2
    gen, disc = module.configure_optimizers()[0]
    assert gen.defaults["betas"] == disc.defaults["betas"] == (0.4, 0.99)
    plain = build("mask_decoder", small_cfg, "stages.mask_decoder.betas=[0.8,0.9]")
    assert plain.configure_optimizers().defaults["betas"] == (0.8, 0.9)
    assert build("encoder", small_cfg).configure_optimizers().defaults["betas"] == (0.9, 0.999)  # torch's own


def test_direct_construction_breaks_the_same_decoder_rules_as_the_config(small_cfg):
    from antimask.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.decoder.*full_face needs model\.decoder=paper"):
        small_cfg("model.decoder=appearance", "model.full_face=true")
    with pytest.raises(ValueError, match=r"decoder: .*full_face needs model\.decoder=paper"):
        build_module(MaskDecoderModule, FEATURES, 64, 27, decoder="appearance", full_face=True)
    with pytest.raises(ValueError, match="landmark_warp: needs the lower-face landmark head"):
        build_module(MaskDecoderModule, FEATURES, 64, 27, landmark_warp=True, use_landmarks=False)


@pytest.mark.parametrize("stage", list(MODULES))
def test_a_checkpoint_saved_before_the_new_hparams_still_loads(stage, small_cfg, tmp_path):
    """Checkpoints from before beta1/beta2, the discriminator and perceptual keys existed get the schema's defaults."""
    module = build(stage, small_cfg, "model.adversarial_weight=1" if stage == "mask_decoder" else "data.flip=false")
    new = {"beta1", "beta2", "perceptual_stages", "discriminator_width", "discriminator_layers",
           "adversarial_beta1", "adversarial_beta2", "upsample", "fused_adam"}
    old = {k: v for k, v in module.hparams.items() if k not in new}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": old}, path)
    loaded = load_stage(path, stage, FEATURES)
    assert (loaded.hparams.beta1, loaded.hparams.beta2) == (0.9, 0.999)
    assert loaded.hparams.fused_adam is True and loaded.hparams.get("upsample", "transpose") == "transpose"
    if stage == "mask_decoder":
        assert (loaded.hparams.discriminator_width, loaded.hparams.discriminator_layers) == (32, 3)
        assert (loaded.hparams.adversarial_beta1, loaded.hparams.perceptual_stages) == (0.5, 3)
    for name, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


# --- the efficient step: the same learning, other kernels ---------------------------------------------------

VARIANTS = [("face_decoder", []), ("mask_decoder", ["model.decoder=appearance"]), ("encoder", [])]


@pytest.mark.parametrize("stage,extra", VARIANTS)
def test_fused_adam_and_channels_last_take_the_same_step_as_the_plain_ones(stage, extra, small_cfg, synthetic):
    """stages.*.fused_adam and trainer.channels_last change the kernels, not the step: from the same weights on
    the same batch, one step lands on the same loss."""
    batch = next(iter(synthetic()))

    def one_step(fused: bool, channels_last: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        module = build(stage, small_cfg, f"stages.{stage}.fused_adam={fused}", *extra)
        b = dict(batch)
        if channels_last:
            ChannelsLast().setup(None, module, "fit")
            ChannelsLast._images(b)
            convs = [p for p in module.parameters() if p.ndim == 4]
            assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
            assert b["face"].is_contiguous(memory_format=torch.channels_last)
        optimizer = module.configure_optimizers()
        assert bool(optimizer.defaults["fused"]) == fused
        before, _ = module.compute_losses(b)
        optimizer.zero_grad()
        before.backward()
        optimizer.step()
        after, _ = module.compute_losses(b)
        return float(before.detach()), float(after.detach())

    plain = one_step(False, False)
    assert plain[1] < plain[0]
    for fused, channels_last in ((True, False), (False, True), (True, True)):
        assert one_step(fused, channels_last) == pytest.approx(plain, rel=1e-4), (fused, channels_last)


def test_fused_adam_falls_back_where_torch_has_no_fused_kernel():
    assert fused_adam_takes([torch.nn.Parameter(torch.zeros(2))])  # the CPU has one (torch >= 2.4)
    assert not fused_adam_takes([torch.nn.Parameter(torch.zeros(2, device="meta"))])
    assert not fused_adam_takes([])


@pytest.mark.parametrize("upsample", ["transpose", "pixel_shuffle", "resize_conv"])
def test_model_upsample_reaches_the_paper_decoders_and_keeps_their_output(upsample, small_cfg):
    features = torch.randn(2, FEATURES)
    face = build("face_decoder", small_cfg, f"model.upsample={upsample}")
    lower = build("mask_decoder", small_cfg, f"model.upsample={upsample}")
    assert face.hparams.upsample == lower.hparams.upsample == upsample
    assert face(features)[0].shape == (2, 3, 64, 64)
    assert lower(features)[0].shape == (2, 3, 64 - 27, 64)
    transposed = any(isinstance(m, torch.nn.ConvTranspose2d) for m in face.modules())
    assert transposed == (upsample == "transpose")
