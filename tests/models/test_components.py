"""The plain networks: decoder output sizes for every training size, encoder output dims, weights."""

from __future__ import annotations

import pytest
import torch

from antimask.config import split_row_for
from antimask.models.components import Decoder, TextureDecoder, UpperEncoder, start_grid
from antimask.models.components.decoder import UPSAMPLES


@pytest.mark.parametrize("upsample", UPSAMPLES)
@pytest.mark.parametrize("size", [64, 112, 224])
@pytest.mark.parametrize("part", ["face", "lower"])
def test_decoder_output_shapes(size, part, upsample):
    row = split_row_for(size)
    height = size if part == "face" else size - row
    dec = Decoder(128, height, size, num_landmarks=40, shared_dim=1000, channels=256, upsamplings=4,
                  upsample=upsample)
    image, points = dec(torch.randn(2, 128))
    assert image.shape == (2, 3, height, size)
    assert points.shape == (2, 40, 2)
    assert 0 <= image.min() and image.max() <= 1
    assert dec.draw(torch.randn(3, 128)).shape == (3, 3, height, size)


@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_every_upsample_doubles_the_grid_at_each_layer(upsample):
    dec = TextureDecoder(16, 56, 56, channels=64, upsamplings=3, upsample=upsample)
    x, shapes = torch.randn(2, 64, 7, 7), []
    for layer in dec.convs:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    # every third layer is an upsampling one (then batch norm, ReLU): 64 -> 32 -> 16 -> 3 channels, 7 -> 56 px
    assert shapes[::3] == [(32, 14, 14), (16, 28, 28), (3, 56, 56)]
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.modules()) == (upsample == "transpose")


def test_an_unknown_upsample_is_refused():
    with pytest.raises(ValueError, match="upsample must be one of transpose, pixel_shuffle, resize_conv"):
        TextureDecoder(16, 56, 56, channels=64, upsamplings=3, upsample="bilinear")


def test_paper_grid_sizes():
    # the paper's 14x14x256 grid for the whole 224 face; the 128-row lower band starts at 8x14
    assert TextureDecoder(1000, 224, 224, channels=256, upsamplings=4, upsample="transpose").grid == (14, 14)
    assert TextureDecoder(1000, 128, 224, channels=256, upsamplings=4, upsample="transpose").grid == (8, 14)
    assert start_grid(37, 64, 4) == (3, 4)


def test_no_landmark_head_without_points():
    dec = Decoder(16, 37, 64, num_landmarks=0, shared_dim=0, channels=32, upsamplings=3, upsample="transpose")
    image, points = dec(torch.randn(2, 16))
    assert points is None and dec.landmarks is None and dec.shared is None
    assert image.shape == (2, 3, 37, 64)


@pytest.mark.parametrize("arch", ["vgg", "timm:resnet18"])
@pytest.mark.parametrize("size", [64, 112])
def test_encoder_output_dims(arch, size):
    enc = UpperEncoder(128, arch, width=8).eval()
    out = enc(torch.rand(2, 3, split_row_for(size), size))
    assert out.shape == (2, 128)


def test_encoder_rejects_unknown_arch():
    with pytest.raises(ValueError, match="unknown encoder"):
        UpperEncoder(128, "resnet", width=8)


def test_encoder_local_weights(tmp_path):
    from safetensors.torch import save_file

    src = UpperEncoder(32, "vgg", width=8)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    dst = UpperEncoder(32, "vgg", width=8, weights=str(path))
    assert torch.equal(dst.backbone[0].weight, src.backbone[0].weight)
    torch.save({"state_dict": src.backbone.state_dict()}, tmp_path / "w.pt")
    assert len(UpperEncoder(32, "vgg", width=8).load_backbone_weights(tmp_path / "w.pt")) > 0
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="none of its 1 tensors match"):
        UpperEncoder(32, "vgg", width=8, weights=str(tmp_path / "bad.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        UpperEncoder(32, "vgg", width=8, weights=str(tmp_path / "missing.pt"))
