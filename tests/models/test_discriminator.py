"""The PatchGAN discriminator: patch map sizes, hinge losses, and that it learns real from fake."""

from __future__ import annotations

import pytest
import torch

from antimask.models.components.discriminator import (
    PatchDiscriminator,
    discriminator_loss,
    generator_loss,
)


@pytest.mark.parametrize("size, patches", [((64, 112), (8, 14)), ((28, 64), (3, 8)), ((8, 8), (1, 1))])
def test_patch_map_shape(size, patches):
    disc = PatchDiscriminator(width=8, layers=3)
    assert disc(torch.rand(2, 3, *size)).shape == (2, 1, *patches)


def test_width_capped_and_too_small_input_raises():
    disc = PatchDiscriminator(width=4, layers=5)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 32, 1]
    with pytest.raises(ValueError, match="H, W >= 32"):
        disc(torch.rand(1, 3, 31, 64))


def test_hinge_losses_by_hand():
    real = torch.tensor([[0.5, 2.0], [-1.0, 0.0]])
    fake = torch.tensor([[-2.0, 0.5], [-0.5, 1.0]])
    # real: relu(1 - r) = [0.5, 0, 2, 1] -> 0.875; fake: relu(1 + f) = [0, 1.5, 0.5, 2] -> 1.0
    assert discriminator_loss(real, fake).item() == pytest.approx(1.875)
    assert generator_loss(fake).item() == pytest.approx(0.25)


def test_learns_constant_faces_from_noise():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8, layers=2)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(40):
        real = torch.rand(8, 3, 1, 1).expand(-1, -1, 16, 16)
        fake = torch.rand(8, 3, 16, 16)
        loss = discriminator_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.75 * sum(losses[:5])
    with torch.no_grad():
        assert disc(real).mean() > disc(fake).mean()
