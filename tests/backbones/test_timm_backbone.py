"""timm models as frozen extractors: local weights file or local hub cache, ImageNet normalisation, gradients to the input."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
from safetensors.torch import save_file

from antimask.backbones import WeightsError, create_backbone

MODEL = "resnet18"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A full resnet18 (classifier included, as published) with random weights, saved as safetensors."""
    torch.manual_seed(3)
    model = timm.create_model(MODEL, pretrained=False)
    with torch.no_grad():
        for name, buf in model.named_buffers():  # non-trivial batch-norm statistics, so loading them shows
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("timm") / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval(), path


def test_local_safetensors_loads_without_the_classifier(trained):
    model, path = trained
    backbone = create_backbone(f"timm:{MODEL}", weights=path)
    assert backbone.name == "timm:resnet18" and backbone.feature_dim == 512 and backbone.input_size == 224
    assert backbone.weights_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(backbone.preprocess(x)), pre_logits=True)
    torch.testing.assert_close(backbone(x), want)


def test_frozen_but_differentiable_wrt_the_input(trained):
    backbone = create_backbone(f"timm:{MODEL}", weights=trained[1])
    assert backbone.differentiable and not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.model.training
    x = torch.rand(2, 3, 112, 112, requires_grad=True)
    out = backbone(x)
    assert out.shape == (2, 512)
    out.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_imagenet_normalisation_from_the_pretrained_cfg(trained):
    backbone = create_backbone(f"timm:{MODEL}", weights=trained[1])
    y = backbone.preprocess(torch.full((1, 3, 64, 64), 0.5))
    assert y.shape == (1, 3, 224, 224)
    torch.testing.assert_close(y[0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


def test_state_dict_pth_is_read_weights_only(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    backbone = create_backbone(f"timm:{MODEL}", weights=path)
    torch.testing.assert_close(backbone.model.conv1.weight, model.conv1.weight)
    bad = tmp_path / "module.pth"
    torch.save(model, bad)
    with pytest.raises(WeightsError, match="cannot read weights"):
        create_backbone(f"timm:{MODEL}", weights=bad)


def test_mismatched_weights_name_the_file_and_keys(trained):
    with pytest.raises(WeightsError) as err:
        create_backbone("timm:resnet34", weights=trained[1])
    msg = str(err.value)
    assert str(trained[1]) in msg and "resnet34" in msg and "layer1.2.conv1.weight" in msg


def test_pretrained_from_the_local_hub_cache_only(trained, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as err:
        create_backbone(f"timm:{MODEL}")
    assert "timm/resnet18.a1_in1k" in str(err.value) and str(tmp_path / "hub") in str(err.value)
    assert str(tmp_path / "torch" / "checkpoints") in str(err.value)
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snapshot / "model.safetensors").write_bytes(trained[1].read_bytes())
    backbone = create_backbone(f"timm:{MODEL}")
    torch.testing.assert_close(backbone.model.conv1.weight, trained[0].conv1.weight)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="nothing.safetensors"):
        create_backbone(f"timm:{MODEL}", weights=tmp_path / "nothing.safetensors")
