"""The improved model's parts (experiments/improved_rows.yaml, which experiments/improved.yaml builds on): U-Net
decoder, seam colour, landmark warp, extra losses, cosine schedule and the adversarial game; each switch off leaves
the paper's model."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from antimask.config import ConfigError
from antimask.faces.align import LOWER_POINTS, TEMPLATE_224
from antimask.models import MaskDecoderModule, load_stage
from antimask.models.antimask import AntiMask
from antimask.models.components import AppearanceDecoder, Decoder, LandmarkWarp, UpperEncoder
from helpers import build_module, require_face_networks

FEATURES = 16


def test_appearance_decoder_draws_the_lower_band_at_any_size():
    for size, row in ((64, 27), (72, 31)):  # 72 is not a multiple of 2**4: padded to 80 and cropped
        dec = AppearanceDecoder(FEATURES, size, row, num_landmarks=40, shared_dim=32, channels=32, levels=4,
                                code_every_level=False)
        image, points = dec(torch.randn(2, FEATURES), torch.rand(2, 3, row, size))
        assert image.shape == (2, 3, size - row, size) and points.shape == (2, 40, 2)
        assert 0 <= float(image.detach().min()) and float(image.detach().max()) <= 1
    with pytest.raises(ValueError, match="upper crop is 20x72"):
        dec(torch.randn(2, FEATURES), torch.rand(2, 3, 20, 72))
    with pytest.raises(ValueError, match="pass upper="):
        dec.draw(torch.randn(2, FEATURES))


def test_only_the_appearance_decoder_can_carry_the_visible_colour_across_the_seam():
    """Faces whose lower band has the colour of the upper band, features that say nothing about it: the
    U-Net learns to carry the colour over to faces it never saw, the features-only decoder cannot."""
    torch.manual_seed(0)
    size, row, n, seen = 32, 14, 80, 64
    colour = torch.rand(n, 3, 1, 1)
    faces = colour.expand(n, 3, size, size).clone()
    features = torch.randn(n, FEATURES)
    errors = {}
    for name, dec in (("paper", Decoder(FEATURES, size - row, size, 0, 32, 32, 2, "transpose")),
                      ("appearance", AppearanceDecoder(FEATURES, size, row, 0, 32, 32, 2, False))):
        opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
        for _ in range(150):
            drawn = dec(features[:seen], faces[:seen, :, :row])[0]
            loss = torch.nn.functional.l1_loss(drawn, faces[:seen, :, row:])
            opt.zero_grad()
            loss.backward()
            opt.step()
        dec.eval()
        with torch.no_grad():
            drawn = dec.draw(features[seen:], faces[seen:, :, :row])
            errors[name] = float(torch.nn.functional.l1_loss(drawn, faces[seen:, :, row:]))
    assert errors["appearance"] < 0.08 and errors["appearance"] < 0.5 * errors["paper"], errors


def test_code_every_level_starts_as_the_plain_u_net_and_learns_to_follow_the_code():
    """FiLM layers start at the identity; trained on faces whose lower band is what the code says (the
    upper band is noise), the drawn band of unseen faces follows their code."""
    torch.manual_seed(0)
    size, row, n, seen = 32, 14, 96, 80
    dec = AppearanceDecoder(FEATURES, size, row, 0, 32, 32, 2, code_every_level=True)
    features, upper = torch.randn(n, FEATURES), torch.rand(n, 3, row, size)
    with torch.no_grad():
        film, dec.film = dec.film, None
        plain = dec.draw(features, upper)
        dec.film = film
        assert torch.equal(dec.draw(features, upper), plain)
    colour = torch.sigmoid(features[:, :3] * 2)[:, :, None, None].expand(n, 3, size - row, size)
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.l1_loss(dec.draw(features[:seen], upper[:seen]), colour[:seen])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        drawn = dec.draw(features[seen:], upper[seen:])
    error = float(torch.nn.functional.l1_loss(drawn, colour[seen:]))
    spread = float((colour[seen:] - colour[:seen].mean(0)).abs().mean())  # drawing the mean colour
    assert error < 0.5 * spread, (error, spread)
    assert any(float(layer.weight.abs().sum()) > 0 for layer in dec.film)


def test_anti_mask_with_seam_colour_keeps_the_upper_rows_and_draws_from_the_upper_crop():
    size, row = 64, 27
    dec = AppearanceDecoder(FEATURES, size, row, 40, 32, 32, 4, False).eval()
    model = AntiMask(UpperEncoder(FEATURES, "vgg", width=8), dec, size, row, seam_width=4, seam_colour_rows=4)
    face = torch.rand(2, 3, size, size)
    with torch.no_grad():
        out = model(face)
        plain = AntiMask(model.encoder, dec, size, row, 4, 0)(face)
    assert torch.equal(out[:, :, :row - 2], face[:, :, :row - 2])
    assert not torch.allclose(out[:, :, row + 4:], plain[:, :, row + 4:])  # the colour shift acts below the seam


def test_landmark_warp_is_the_identity_at_the_template_and_moves_texture_otherwise():
    size, row = 64, 27
    template = torch.from_numpy(TEMPLATE_224[LOWER_POINTS] / 224.0)
    warp = LandmarkWarp(size, row, template)
    band = torch.rand(2, 3, size - row, size)
    same = warp(band, template[None].expand(2, -1, -1).float())
    assert float((same - band).abs().max()) < 1e-4
    moved = warp(band, (template[None] + torch.tensor([0.05, 0.0])).expand(2, -1, -1).float())
    # a shift right by 0.05 of the width moves column c to column c + 3.2
    assert float((moved[:, :, :, 10:50] - band[:, :, :, 7:47]).abs().mean()) < \
        float((moved - band).abs().mean()) * 0.6
    with pytest.raises(ValueError, match="needs 40 predicted points"):
        warp(band, None)


@pytest.mark.parametrize("overrides", [
    ["model.decoder=appearance"],
    ["model.decoder=appearance", "model.landmark_warp=true", "model.ssim_weight=10"],
    ["model.decoder=appearance", "model.code_every_level=true"],
    ["model.landmark_warp=true", "model.adversarial_weight=1.0"],
    ["model.decoder=appearance", "model.adversarial_weight=1.0", "stages.mask_decoder.scheduler=cosine"],
])
def test_variants_train_save_and_load(overrides, small_cfg, synthetic, trainer_kwargs, tmp_path):
    module = MaskDecoderModule.from_config(small_cfg(*overrides), FEATURES)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, **trainer_kwargs)
    trainer.fit(module, synthetic(32), synthetic(16))
    after = module.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("decoder.") for k in changed)
    if "model.adversarial_weight=1.0" in overrides:
        assert any(k.startswith("discriminator.") for k in changed)  # both players moved
        assert "train/discriminator_loss" in trainer.callback_metrics
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = load_stage(tmp_path / "m.ckpt", "mask_decoder", FEATURES)
    batch = next(iter(synthetic(4)))
    module.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.predict_step(batch), module.predict_step(batch), atol=1e-6)


def test_cosine_schedule_lowers_the_learning_rate_each_epoch(small_cfg, synthetic, trainer_kwargs):
    module = MaskDecoderModule.from_config(small_cfg("stages.mask_decoder.scheduler=cosine",
                                                     "stages.mask_decoder.lr=0.01"), FEATURES)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, **trainer_kwargs)
    trainer.fit(module, synthetic(16), synthetic(16))
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.0, abs=1e-9)  # cosine from 0.01 to 0 over max_epochs=2


def test_cosine_schedule_resumed_with_more_epochs_follows_the_longer_schedule(small_cfg, synthetic, tmp_path):
    def fit(max_epochs: int, ckpt_path=None):
        module = MaskDecoderModule.from_config(small_cfg("stages.mask_decoder.scheduler=cosine",
                                                         "stages.mask_decoder.lr=0.01"), FEATURES)
        lrs = []

        class Record(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

        trainer = pl.Trainer(max_epochs=max_epochs, limit_train_batches=1, limit_val_batches=1, accelerator="cpu",
                             devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[Record()])
        trainer.fit(module, synthetic(16), synthetic(16), ckpt_path=ckpt_path, weights_only=True)
        return trainer, lrs

    first, _ = fit(2)
    first.save_checkpoint(tmp_path / "two.ckpt")
    _, resumed = fit(5, str(tmp_path / "two.ckpt"))
    _, fresh = fit(5)
    # epochs 2-4 of a 5-epoch schedule, not a 2-epoch schedule's climb back from 0
    assert resumed == pytest.approx(fresh[2:], rel=1e-6)
    assert resumed[0] > 0 and resumed[0] > resumed[1] > resumed[2]


def test_ssim_term_adds_to_the_loss(small_cfg, synthetic):
    batch = next(iter(synthetic(8)))
    torch.manual_seed(0)
    plain = MaskDecoderModule.from_config(small_cfg(), FEATURES)
    torch.manual_seed(0)
    with_ssim = MaskDecoderModule.from_config(small_cfg("model.ssim_weight=10"), FEATURES)
    assert float(with_ssim.compute_losses(batch)[0]) > float(plain.compute_losses(batch)[0]) + 0.5


def test_identity_loss_runs_through_a_differentiable_backbone(small_cfg, synthetic, tmp_path):
    import timm

    from antimask.backbones import create_backbone

    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), weights)
    backbone = create_backbone("timm:resnet18", weights=weights)
    module = build_module(MaskDecoderModule, backbone.feature_dim, 64, 27, shared_dim=32, decoder_channels=32,
                          decoder_upsamplings=3, identity_weight=1.0)
    module.attach_identity_backbone(backbone)
    assert not any(n.startswith("_frozen") for n in module.state_dict())
    batch = next(iter(synthetic(4)))
    batch["features"] = backbone(batch["face"]).detach()
    loss, _ = module.compute_losses(batch)
    loss.backward()
    assert module.decoder.texture.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_identity_loss_through_faceres_when_the_teacher_is_dlib(small_cfg, synthetic):
    """model.identity_net=faceres: the loss runs the drawn and the real face through FaceRes (the real face's
    features computed on the fly, not the teacher's cached ones) and its gradient reaches the decoder."""
    require_face_networks()
    batch = next(iter(synthetic(4)))
    torch.manual_seed(0)
    plain = MaskDecoderModule.from_config(small_cfg(), FEATURES)
    torch.manual_seed(0)
    module = MaskDecoderModule.from_config(small_cfg("model.identity_weight=10", "model.identity_net=faceres"),
                                           FEATURES)
    assert module.hparams.identity_net == "faceres" and module._loss_net("identity").backbone.name == "faceres"
    target = module._identity_target(batch)
    assert target.shape == (4, 1024) and not target.requires_grad
    loss, _ = module.compute_losses(batch)
    assert float(loss) > float(plain.compute_losses(batch)[0])
    loss.backward()
    assert module.decoder.texture.fc.weight.grad.abs().sum() > 0
    assert not any("_frozen" in k for k in module.state_dict())
    # The identity network named as the teacher itself uses the teacher's cached features, as before.
    same = MaskDecoderModule.from_config(small_cfg("backbone.name=faceres", "model.identity_weight=1",
                                                   "model.identity_net=faceres"), 1024)
    assert same.hparams.identity_net is None


def test_perceptual_term_uses_the_weights_file(small_cfg, synthetic, tmp_path):
    import timm

    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights)
    batch = next(iter(synthetic(4)))
    torch.manual_seed(0)
    plain = MaskDecoderModule.from_config(small_cfg(), FEATURES)
    torch.manual_seed(0)
    module = MaskDecoderModule.from_config(small_cfg("model.perceptual_weight=1", "model.perceptual_net=resnet18",
                                                     f"model.perceptual_weights={weights}"), FEATURES)
    loss, _ = module.compute_losses(batch)
    assert float(loss) > float(plain.compute_losses(batch)[0])
    loss.backward()
    assert module.decoder.texture.fc.weight.grad.abs().sum() > 0
    assert not any("perceptual" in k or "_frozen" in k for k in module.state_dict())
    missing = MaskDecoderModule.from_config(small_cfg("model.perceptual_weight=1",
                                                      f"model.perceptual_weights={tmp_path / 'none.pth'}"), FEATURES)
    with pytest.raises(FileNotFoundError, match="none.pth"):
        missing.compute_losses(batch)


@pytest.mark.parametrize("override,key", [
    ("model.decoder=unet", "model.decoder"),
    ("model.identity_weight=1", "model.identity_weight"),  # the default backbone is dlib
    ("model.seam_colour_rows=-1", "model.seam_colour_rows"),
    ("model.code_every_level=true", "model.code_every_level"),
    ("stages.mask_decoder.scheduler=step", "stages.mask_decoder.scheduler"),
    ("run.reuse.decoder=runs/x", "run.reuse.decoder"),
])
def test_config_rejects_bad_improvement_values(override, key, small_cfg):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        small_cfg(override)
    with pytest.raises(ConfigError, match="full_face needs model.decoder=paper"):
        small_cfg("model.decoder=appearance", "model.full_face=true")
    with pytest.raises(ConfigError, match="model.init_from_face_decoder"):
        small_cfg("model.decoder=appearance", "model.init_from_face_decoder=true")


def test_improved_anti_mask_exports_with_torch_export():
    dec = AppearanceDecoder(FEATURES, 64, 27, 40, 32, 32, 4, False).eval()
    model = AntiMask(UpperEncoder(FEATURES, "vgg", width=8), dec, 64, 27, seam_width=4, seam_colour_rows=4).eval()
    face = torch.rand(2, 3, 64, 64)
    exported = torch.export.export(model, (face,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(face), model(face), atol=1e-5)
