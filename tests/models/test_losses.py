"""SSIM, identity and perceptual losses: zero on a match, gradients to the drawn face only, weights files checked."""

from __future__ import annotations

import pytest
import timm
import torch

from antimask.backbones import create_backbone
from antimask.models.losses import IdentityLoss, PerceptualLoss, ssim_loss


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """A full resnet18 (classifier included, as published) with random weights, saved as a state dict."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path_factory.mktemp("losses") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def faces(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_ssim_loss_zero_on_identical_and_differentiable():
    img = torch.linspace(0, 1, 32).expand(2, 3, 32, 32).contiguous()
    assert ssim_loss(img, img).item() == pytest.approx(0.0, abs=1e-5)
    noise = faces(seed=1).requires_grad_()
    loss = ssim_loss(noise, img)
    assert loss.item() > 0.1
    loss.backward()
    assert noise.grad is not None and noise.grad.abs().sum() > 0


def test_identity_loss_gradients_reach_faces_not_backbone(resnet18):
    backbone = create_backbone("timm:resnet18", weights=resnet18[1])
    loss = IdentityLoss(backbone)
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    x = faces()
    with torch.no_grad():
        target = backbone(x)
    assert loss(x, target).item() == pytest.approx(0.0, abs=1e-5)
    drawn = faces(seed=1).requires_grad_()
    value = loss(drawn, target)
    assert value.item() > 1e-3
    value.backward()
    assert drawn.grad is not None and drawn.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    loss.train()
    assert not backbone.training


def test_identity_loss_moves_its_backbone(resnet18):
    loss = IdentityLoss(create_backbone("timm:resnet18", weights=resnet18[1])).double()
    assert all(p.dtype == torch.float64 for p in loss.backbone.parameters())


def test_identity_loss_refuses_dlib():
    with pytest.raises(ValueError, match=r"differentiable backbone \(vggface or timm:<model>\); 'dlib' runs outside torch"):
        IdentityLoss(create_backbone("dlib"))


def test_perceptual_loss_loads_weights_and_is_frozen(resnet18):
    model, path = resnet18
    loss = PerceptualLoss("resnet18", weights=path, stages=3)
    torch.testing.assert_close(loss.net.conv1.weight, model.conv1.weight)
    assert list(loss.parameters()) == [] and not any(p.requires_grad for p in loss.net.parameters())
    loss.train()
    assert not loss.net.training
    target = faces()
    assert loss(target, target).item() == 0.0
    pred = faces(seed=1).requires_grad_()
    value = loss(pred, target)
    assert value.item() > 0
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.net.parameters())


def test_perceptual_loss_maps_flattened_module_names(tmp_path):
    """features_only renames ``stages.0`` to ``stages_0``; the published names must still load."""
    model = timm.create_model("convnext_atto", pretrained=False)
    path = tmp_path / "convnext_atto.pth"
    torch.save(model.state_dict(), path)
    loss = PerceptualLoss("convnext_atto", weights=path, stages=2)
    torch.testing.assert_close(loss.net.stages_0.blocks[0].conv_dw.weight, model.stages[0].blocks[0].conv_dw.weight)


def test_perceptual_loss_needs_a_weights_file(tmp_path):
    with pytest.raises(ValueError, match=r"model\.perceptual_weights .* local weights file"):
        PerceptualLoss("resnet18", weights=None, stages=3)
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        PerceptualLoss("resnet18", weights=missing, stages=3)


def test_perceptual_loss_names_the_file_and_first_mismatching_key(resnet18, tmp_path):
    with pytest.raises(ValueError) as err:
        PerceptualLoss("resnet34", weights=resnet18[1], stages=3)
    assert str(resnet18[1]) in str(err.value) and "missing key layer1.2.conv1.weight" in str(err.value)
    state = resnet18[0].state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=rf"{bad}: .*layer1\.0\.conv1\.weight is \(1,\), expected \(64, 64, 3, 3\)"):
        PerceptualLoss("resnet18", weights=bad, stages=3)
