"""model.mask_aware: the U-Net redraws the mask's redraw region of a masked face, the encoder reads the upper rows
with that region blanked, the completed face is real wherever the redraw alpha is 0; off, nothing changes."""

from __future__ import annotations

import json
import pytest
import torch

from antimask.config import ConfigError, load_config
from antimask.faces.compositing import seam_weights
from antimask.models import AntiMask, EncoderDistillModule, MaskAwareAntiMask, MaskDecoderModule, load_stage
from antimask.models.components import AppearanceDecoder, MaskAwareDecoder
from helpers import REPO, adult_utkface, build_module

FEATURES, SIZE, ROW = 16, 64, 27


def _modules(**changes):
    dec = build_module(MaskDecoderModule, FEATURES, SIZE, ROW, decoder="appearance", mask_aware=True, shared_dim=32,
                       decoder_channels=32, decoder_upsamplings=3, **changes)
    enc = build_module(EncoderDistillModule, FEATURES, SIZE, ROW, mask_aware=True, encoder_width=8)
    return dec, enc


def _batch(n: int = 4, seed: int = 0) -> dict:
    """Random faces with a mask-like block on the lower face: a hard region and a feathered redraw alpha."""
    g = torch.Generator().manual_seed(seed)
    face = torch.rand(n, 3, SIZE, SIZE, generator=g)
    region = torch.zeros(n, 1, SIZE, SIZE)
    region[:, :, 34:58, 14:50] = 1
    redraw = torch.zeros(n, 1, SIZE, SIZE)
    redraw[:, :, 30:62, 10:54] = 0.5  # a feathered ring around ...
    redraw[:, :, 32:60, 12:52] = 1.0  # ... the grown region
    masked = face * (1 - region) + 0.8 * region
    return {"face": face, "masked": masked, "region": region, "redraw": redraw, "upper": face[:, :, :ROW],
            "lower": face[:, :, ROW:], "features": torch.randn(n, FEATURES, generator=g),
            "landmarks": torch.rand(n, 68, 2, generator=g), "lower_landmarks": torch.rand(n, 40, 2, generator=g)}


def test_the_decoder_sees_no_pixel_inside_the_redraw_region():
    dec, enc = _modules()
    batch = _batch()
    inside = (batch["redraw"] == 1).expand(-1, 3, -1, -1)
    other = batch["masked"].clone()
    other[inside] = torch.rand(int(inside.sum()))  # another mask, or the real face, under the region
    with torch.no_grad():
        drawn = dec.decoder.draw(batch["features"], batch["masked"], batch["redraw"])
        assert torch.equal(dec.decoder.draw(batch["features"], other, batch["redraw"]), drawn)
        model = MaskAwareAntiMask(enc.encoder, dec.decoder, SIZE, ROW)  # the encoder's input is blanked too
        assert torch.equal(model(other, batch["redraw"]), model(batch["masked"], batch["redraw"]))
        assert drawn.shape == (4, 3, SIZE, SIZE)


def test_the_completed_face_is_the_masked_input_wherever_the_redraw_alpha_is_zero():
    dec, enc = _modules()
    batch = _batch()
    outside = (batch["redraw"] == 0).expand(-1, 3, -1, -1)
    with torch.no_grad():
        for completed in (MaskAwareAntiMask(enc.encoder, dec.decoder, SIZE, ROW)(batch["masked"], batch["redraw"]),
                          dec.predict_step(batch)):
            assert torch.equal(completed[outside], batch["masked"][outside])
            inside = (batch["redraw"] == 1).expand(-1, 3, -1, -1)
            assert not torch.equal(completed[inside], batch["masked"][inside])  # the mask is gone


def test_gradients_reach_every_layer_of_the_decoder_and_the_loss_counts_the_region_and_the_face():
    dec, _ = _modules(ssim_weight=10.0)
    batch = _batch()
    loss, extra = dec.compute_losses(batch)
    loss.backward()
    missing = [n for n, p in dec.decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert set(extra) == {"l1_lower", "l1_redraw"} and 0 < float(extra["l1_redraw"]) < 1
    # the drawn face outside the redraw region never reaches the completed face, but the whole-face term trains it
    no_face, _ = _modules(whole_face_weight=0.0)
    no_face.load_state_dict(dec.state_dict())
    with torch.no_grad():
        assert float(no_face.compute_losses(batch)[0]) < float(loss)


def test_the_encoder_reads_the_upper_rows_of_the_masked_face_with_the_region_blanked():
    _, enc = _modules()
    batch = _batch()
    batch["redraw"][:, :, 20:30] = 1.0  # a mask reaching above the split row
    seen = enc.visible_upper(batch)
    assert seen.shape == (4, 3, ROW, SIZE)
    assert torch.equal(seen[:, :, 20:ROW], torch.zeros_like(seen[:, :, 20:ROW]))
    assert torch.equal(seen[:, :, :20], batch["masked"][:, :, :20])
    loss, _ = enc.compute_losses(batch)
    loss.backward()
    assert all(p.grad is not None for p in enc.encoder.head.parameters())


def test_antimask_on_a_mask_aware_run_redraws_the_lower_band_and_keeps_the_rows_above_the_seam():
    """evaluate and predict build AntiMask: a mask-aware decoder answers the paper's task with the band as its region."""
    dec, enc = _modules()
    face = _batch()["face"]
    with torch.no_grad():
        out = AntiMask(enc.encoder, dec.decoder, SIZE, ROW, seam_width=4, seam_colour_rows=4)(face)
    real_rows = seam_weights(SIZE, ROW, 4) == 0
    assert torch.equal(out[:, :, real_rows], face[:, :, real_rows])
    assert not torch.equal(out[:, :, ROW + 2:], face[:, :, ROW + 2:])


def test_mask_aware_antimask_exports_with_torch_export_and_matches_eager():
    dec, enc = _modules()
    batch = _batch(3)
    model = MaskAwareAntiMask(enc.encoder, dec.decoder, SIZE, ROW)
    b = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (batch["masked"], batch["redraw"]), dynamic_shapes=({0: b}, {0: b}))
    with torch.no_grad():
        expected = model(batch["masked"], batch["redraw"])
    assert torch.allclose(exported.module()(batch["masked"], batch["redraw"]), expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs a mask-aware decoder"):
        MaskAwareAntiMask(enc.encoder, AppearanceDecoder(FEATURES, SIZE, ROW, 0, 32, 32, 3, False), SIZE, ROW)


def test_mask_aware_checkpoints_round_trip_and_older_ones_load_without_the_new_hparams(tmp_path):
    dec, enc = _modules()
    for module, stage in ((dec, "mask_decoder"), (enc, "encoder")):
        path = tmp_path / f"{stage}.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
        assert load_stage(path, stage, FEATURES).hparams.mask_aware is True
    assert isinstance(load_stage(tmp_path / "mask_decoder.ckpt", "mask_decoder", FEATURES).decoder, MaskAwareDecoder)
    model = MaskAwareAntiMask.from_checkpoints(tmp_path / "encoder.ckpt", tmp_path / "mask_decoder.ckpt")
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(model(batch["masked"], batch["redraw"]),
                           MaskAwareAntiMask(enc.encoder, dec.decoder, SIZE, ROW)(batch["masked"], batch["redraw"]))

    for stage, cls, new in (("mask_decoder", MaskDecoderModule, {"mask_aware", "whole_face_weight"}),
                            ("encoder", EncoderDistillModule, {"mask_aware"})):
        old = build_module(cls, FEATURES, SIZE, ROW, decoder_channels=32) if stage == "mask_decoder" else \
            build_module(cls, FEATURES, SIZE, ROW, encoder_width=8)
        hparams = {k: v for k, v in old.hparams.items() if k not in new}
        path = tmp_path / f"old_{stage}.ckpt"
        torch.save({"state_dict": old.state_dict(), "hyper_parameters": hparams}, path)
        loaded = load_stage(path, stage, FEATURES)
        assert loaded.hparams.mask_aware is False
        for name, value in old.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], value), name
    with pytest.raises(ValueError, match="was not trained with model.mask_aware=true"):
        MaskAwareAntiMask.from_checkpoints(tmp_path / "old_encoder.ckpt", tmp_path / "old_mask_decoder.ckpt")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"'model\.mask_aware'.*needs model\.decoder=appearance"):
        load_config(None, ["model.mask_aware=true"])
    with pytest.raises(ConfigError, match=r"'model\.landmark_warp'.*mask_aware"):
        load_config(REPO / "experiments" / "mask_aware.yaml", ["model.landmark_warp=true"])
    with pytest.raises(ConfigError, match=r"'model\.whole_face_weight'"):
        load_config(REPO / "experiments" / "mask_aware.yaml", ["model.whole_face_weight=-0.5"])
    with pytest.raises(ConfigError, match=r"did you mean 'model\.mask_aware'"):
        load_config(None, ["model.mask_awre=true"])
    with pytest.raises(ValueError, match="mask_aware: .*needs model.decoder=appearance"):
        build_module(MaskDecoderModule, FEATURES, SIZE, ROW, mask_aware=True)


def test_the_experiment_changes_only_the_switch_and_its_run_folder():
    rows = load_config(REPO / "experiments" / "improved_rows.yaml")
    mask_aware = load_config(REPO / "experiments" / "mask_aware.yaml")
    assert mask_aware.model.mask_aware and not rows.model.mask_aware
    mask_aware.model.mask_aware, mask_aware.run.dir = False, rows.run.dir
    assert mask_aware == rows


def test_improved_is_the_fixed_row_model_made_mask_aware_with_the_chosen_budget_and_identity_loss():
    rows = load_config(REPO / "experiments" / "improved_rows.yaml")
    improved = load_config(REPO / "experiments" / "improved.yaml")
    assert improved.model.mask_aware and improved.model.identity_net == "faceres"
    assert improved.model.identity_weight == 10.0 and improved.stages.mask_decoder.max_epochs == 2
    assert (improved.run.dir, rows.run.dir) == ("runs/improved", "runs/improved_rows")
    improved.model.mask_aware, improved.model.identity_weight, improved.model.identity_net = False, 0.0, None
    improved.stages.mask_decoder.max_epochs, improved.run.dir = rows.stages.mask_decoder.max_epochs, rows.run.dir
    assert improved == rows


# ------------------------------------------------------------------------------------------------ on real faces
@pytest.fixture(scope="module")
def small_store(utkface_dir, tmp_path_factory):
    """A 30-face store (21 train, 3 val, 6 test) written straight from aligned UTKFace photos."""
    from real_faces import align_photos, write_store

    images, landmarks, names = align_photos(adult_utkface(utkface_dir, 32, start=7))
    return write_store(tmp_path_factory.mktemp("mask_aware_store"), images[:30], landmarks[:30], names[:30])


@pytest.mark.parametrize("stage", ["mask_decoder", "encoder"])
def test_fast_dev_run_of_each_mask_aware_stage_through_train_stage(stage, small_store, tmp_path):
    from antimask.pipeline import train_stage

    cfg = load_config(REPO / "experiments" / "mask_aware.yaml", [
        f"data.store={small_store}", f"run.dir={tmp_path}", "augment.enabled=false", "data.batch_size=4",
        "trainer.fast_dev_run=true", "trainer.accelerator=cpu", "model.decoder_channels=32"])
    metrics, objects = train_stage(cfg, stage)
    assert objects["trainer"].global_step == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert objects["module"].hparams.mask_aware is True
    batch = next(iter(objects["datamodule"].train_dataloader()))
    assert {"masked", "region", "redraw"} <= set(batch) and batch["redraw"].shape == (4, 1, SIZE, SIZE)
    if stage == "mask_decoder":
        assert isinstance(objects["module"].decoder, MaskAwareDecoder)
        assert (tmp_path / stage / "images" / "epoch_000.png").exists()  # real | masked | completed


def test_train_all_of_a_mask_aware_run_trains_its_segmenter_too_and_skips_it_the_second_time(small_store, tmp_path,
                                                                                            capsys):
    from antimask.pipeline import train_all

    epochs = [f"stages.{s}.{k}" for s in ("face_decoder", "mask_decoder", "encoder", "segmenter")
              for k in ("max_epochs=1", "limit_train_batches=2")]
    cfg = load_config(REPO / "experiments" / "mask_aware.yaml", [
        f"data.store={small_store}", f"run.dir={tmp_path}", "augment.enabled=false", "data.batch_size=4",
        "trainer.accelerator=cpu", "model.decoder_channels=32", "masks.segmenter_width=8", "masks.segmenter_depth=3",
        *epochs])
    manifest = train_all(cfg, evaluate=False)
    entry = manifest["stages"]["segmenter"]
    assert entry["status"] == "done" and (tmp_path / entry["best_checkpoint"]).exists()
    assert "segmenter: training" in capsys.readouterr().out
    train_all(cfg, evaluate=False)
    assert "segmenter: done before, skipped" in capsys.readouterr().out
    # a segmenter stopped after its last checkpoint (no manifest entry yet): train-all resumes it there, so with
    # its one epoch done nothing is trained again and last.ckpt is not rewritten (a fresh fit would rewrite it)
    last = tmp_path / "segmenter" / "checkpoints" / "last.ckpt"
    before = (last.stat().st_mtime_ns, last.read_bytes())
    recorded = json.loads((tmp_path / "manifest.json").read_text())
    del recorded["stages"]["segmenter"]
    (tmp_path / "manifest.json").write_text(json.dumps(recorded))
    again = train_all(cfg, evaluate=False)["stages"]["segmenter"]
    assert "segmenter: training" in capsys.readouterr().out and again["status"] == "done"
    assert (last.stat().st_mtime_ns, last.read_bytes()) == before and again["global_step"] == entry["global_step"]
    # a second run that reuses all four (run.reuse.segmenter too) trains nothing and copies each checkpoint
    second = tmp_path / "reuser"
    reuse = [f"run.reuse.{s}={tmp_path}" for s in ("face_decoder", "mask_decoder", "encoder", "segmenter")]
    cfg2 = load_config(REPO / "experiments" / "mask_aware.yaml", [
        f"data.store={small_store}", f"run.dir={second}", "augment.enabled=false", "data.batch_size=4",
        "trainer.accelerator=cpu", "model.decoder_channels=32", "masks.segmenter_width=8", "masks.segmenter_depth=3",
        *epochs, *reuse])
    reused = train_all(cfg2, evaluate=False)
    out = capsys.readouterr().out
    assert "training" not in out and "segmenter: reused from" in out
    entry = reused["stages"]["segmenter"]
    assert entry["reused_from"] == str(tmp_path) and (second / entry["best_checkpoint"]).exists()
    assert (second / entry["best_checkpoint"]).read_bytes() == (tmp_path / manifest["stages"]["segmenter"]
                                                               ["best_checkpoint"]).read_bytes()
    # the segmenter (masks drawn on faces) can come from a run on another store of the same face size; a stage cannot
    from omegaconf import OmegaConf

    from antimask.runs import ManifestError, reuse_stage

    elsewhere = load_config(REPO / "experiments" / "mask_aware.yaml", [
        f"data.store={tmp_path / 'another-store'}", f"run.dir={tmp_path / 'other'}", "model.decoder_channels=32"])
    entry = reuse_stage(elsewhere, "segmenter", tmp_path)["stages"]["segmenter"]
    assert entry["reused_from"] == str(tmp_path) and (tmp_path / "other" / entry["best_checkpoint"]).exists()
    with pytest.raises(ManifestError, match="data.store"):
        reuse_stage(elsewhere, "encoder", tmp_path)
    with pytest.raises(ManifestError, match="data.image_size"):
        size = int(elsewhere.data.image_size)
        reuse_stage(OmegaConf.merge(elsewhere, {"data": {"image_size": size // 2}}), "segmenter", tmp_path)


def test_train_all_of_the_improved_model_without_its_face_network_stops_before_training_anything(small_store, tmp_path,
                                                                                                 monkeypatch):
    from antimask.backbones import face_networks
    from antimask.backbones.base import WeightsError
    from antimask.pipeline import train_all

    monkeypatch.setenv(face_networks.ENV, str(tmp_path / "no-networks-here"))
    cfg = load_config(REPO / "experiments" / "improved.yaml", [
        f"data.store={small_store}", f"run.dir={tmp_path / 'run'}", "augment.enabled=false", "trainer.accelerator=cpu"])
    with pytest.raises(WeightsError, match="make face-networks"):
        train_all(cfg, evaluate=False)
    assert not (tmp_path / "run" / "face_decoder").exists()
