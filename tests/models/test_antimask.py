"""The Anti-Mask inference model: real upper band kept exactly, seam, checkpoints, export."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from antimask.models import AntiMask, EncoderDistillModule, MaskDecoderModule, StageMismatchError
from helpers import build_module

SIZE, ROW = 64, 27


def _model(full_face: bool = False, seam: int = 4, features: int = 16) -> AntiMask:
    torch.manual_seed(0)
    enc = build_module(EncoderDistillModule, features, SIZE, ROW, encoder_width=8)
    dec = build_module(MaskDecoderModule, features, SIZE, ROW, shared_dim=32, decoder_channels=32,
                       decoder_upsamplings=3, full_face=full_face)
    return AntiMask(enc.encoder, dec.decoder, SIZE, ROW, seam)


@pytest.mark.parametrize("full_face", [False, True])
def test_upper_band_is_the_input(full_face):
    model = _model(full_face)
    face = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(face)
        drawn = model.decoder.draw(model.encoder(face[:, :, :ROW]))
    assert out.shape == face.shape
    assert torch.equal(out[:, :, : ROW - 2], face[:, :, : ROW - 2])
    assert not torch.equal(out[:, :, ROW + 2:], face[:, :, ROW + 2:])
    low = drawn[:, :, ROW + 2:] if full_face else drawn[:, :, 2:]
    assert torch.allclose(out[:, :, ROW + 2:], low)
    # batched == one at a time
    with torch.no_grad():
        single = torch.cat([model(face[i:i + 1]) for i in range(3)])
    assert torch.allclose(single, out, atol=1e-6)


def test_export_matches_eager():
    model = _model()
    face = torch.rand(2, 3, SIZE, SIZE)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (face,), dynamic_shapes={"face": {0: batch}})
    other = torch.rand(5, 3, SIZE, SIZE)
    with torch.no_grad():
        for x in (face, other):
            assert torch.allclose(program.module()(x), model(x), atol=1e-5)
    scripted = torch.jit.trace(model, face)
    with torch.no_grad():
        assert torch.allclose(scripted(other), model(other), atol=1e-5)


def _ckpt(module, path, tmp_path):
    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def test_from_checkpoints(tmp_path):
    ref = _model(seam=2)
    enc = build_module(EncoderDistillModule, 16, SIZE, ROW, encoder_width=8)
    enc.encoder.load_state_dict(ref.encoder.state_dict())
    dec = build_module(MaskDecoderModule, 16, SIZE, ROW, shared_dim=32, decoder_channels=32, decoder_upsamplings=3)
    dec.decoder.load_state_dict(ref.decoder.state_dict())
    e, d = _ckpt(enc, tmp_path / "enc.ckpt", tmp_path), _ckpt(dec, tmp_path / "dec.ckpt", tmp_path)
    model = AntiMask.from_checkpoints(e, d, seam_width=2)
    face = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model(face), ref(face), atol=1e-6)
    with pytest.raises(StageMismatchError, match="is a mask_decoder checkpoint, expected encoder"):
        AntiMask.from_checkpoints(d, e)
    other = _ckpt(build_module(MaskDecoderModule, 32, SIZE, ROW, shared_dim=32, decoder_channels=32,
                               decoder_upsamplings=3), tmp_path / "dec32.ckpt", tmp_path)
    with pytest.raises(StageMismatchError, match="feature size 32, the backbone gives 16"):
        AntiMask.from_checkpoints(e, other)
