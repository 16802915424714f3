"""The Anti-Mask model for inference: upper-face encoder + mask decoder, real upper band kept.

``forward`` takes aligned faces (B,3,S,S) in [0,1] and returns them with rows below the split drawn
by the mask decoder, joined to the real upper band by a feathered seam.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from antimask.models.components import UpperEncoder


def seam_weights(size: int, split_row: int, seam_width: int, device=None, dtype=None) -> torch.Tensor:
    """Per-row weight (S,) of the drawn face: 0 above the seam, 1 below, a linear ramp of seam_width
    rows centred at split_row (a hard cut at split_row when seam_width is 0)."""
    rows = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    if seam_width <= 0:
        w = (rows > split_row).float()
    else:
        w = ((rows - (split_row - seam_width / 2)) / seam_width).clamp(0, 1)
    return w.to(dtype or torch.float32)


def match_seam_colour(face: torch.Tensor, band: torch.Tensor, split_row: int, rows: int) -> torch.Tensor:
    """Shift a drawn lower band (B,3,S-R,S) per face and channel so that the mean colour of its first
    ``rows`` rows equals that of the real rows just above the seam (the torch twin of
    ``evaluation.baselines.match_seam_colour``); rows=0 returns the band unchanged."""
    rows = min(rows, split_row, band.shape[-2])
    if rows <= 0:
        return band
    target = face[:, :, split_row - rows:split_row].float().mean((2, 3), keepdim=True)
    current = band[:, :, :rows].float().mean((2, 3), keepdim=True)
    return (band.float() + target - current).clamp(0, 1).to(band.dtype)


def composite(face: torch.Tensor, drawn: torch.Tensor, split_row: int, seam_width: int = 0,
              colour_rows: int = 0) -> torch.Tensor:
    """Join the real face's upper band with a drawn face (B,3,S,S) or drawn lower band (B,3,S-R,S).

    ``colour_rows`` > 0 first shifts the drawn band's colour to the real rows above the seam. A lower
    band is extended upwards by repeating its first row so the seam has something to blend.
    Rows whose weight is 0 are exactly the input.
    """
    size = face.shape[-2]
    if colour_rows > 0:
        band = drawn[:, :, split_row:] if drawn.shape[-2] == size else drawn
        band = match_seam_colour(face, band, split_row, colour_rows)
        drawn = torch.cat([drawn[:, :, :split_row], band], 2) if drawn.shape[-2] == size else band
    if drawn.shape[-2] != size:
        top = drawn[:, :, :1, :].expand(-1, -1, size - drawn.shape[-2], -1)
        drawn = torch.cat([top, drawn], dim=2)
    w = seam_weights(size, split_row, seam_width, face.device, face.dtype).view(1, 1, size, 1)
    return face + w * (drawn.to(face.dtype) - face)


class AntiMask(nn.Module):
    """Encoder (upper rows -> teacher features) then mask decoder (features [+ upper rows] -> lower face),
    composited; ``seam_colour_rows`` > 0 matches the drawn band's colour to the rows above the seam."""

    def __init__(self, encoder: UpperEncoder, decoder: nn.Module, image_size: int, split_row: int,
                 seam_width: int = 4, seam_colour_rows: int = 0):
        super().__init__()
        if not 0 < split_row < image_size:
            raise ValueError(f"split_row {split_row} lies outside the {image_size}-px face")
        if seam_width < 0 or seam_colour_rows < 0:
            raise ValueError(f"seam_width and seam_colour_rows must be >= 0, got {seam_width}, {seam_colour_rows}")
        self.encoder, self.decoder = encoder, decoder
        self.image_size, self.split_row, self.seam_width = image_size, split_row, seam_width
        self.seam_colour_rows = seam_colour_rows
        self.eval()

    @classmethod
    def from_checkpoints(cls, encoder_ckpt: str | Path, mask_decoder_ckpt: str | Path,
                         seam_width: int = 4, seam_colour_rows: int = 0) -> "AntiMask":
        from antimask.models.modules import EncoderDistillModule, MaskDecoderModule, load_stage

        enc = load_stage(encoder_ckpt, EncoderDistillModule.STAGE)
        dec = load_stage(mask_decoder_ckpt, MaskDecoderModule.STAGE, enc.hparams.feature_dim)
        for key in ("image_size", "split_row"):
            if enc.hparams[key] != dec.hparams[key]:
                raise ValueError(f"{key} differs: encoder checkpoint {encoder_ckpt} has {enc.hparams[key]}, "
                                 f"mask decoder checkpoint {mask_decoder_ckpt} has {dec.hparams[key]}")
        return cls(enc.encoder, dec.decoder, int(dec.hparams.image_size), int(dec.hparams.split_row), seam_width,
                   seam_colour_rows)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        upper = face[:, :, : self.split_row, :]
        drawn = self.decoder.draw(self.encoder(upper), upper)
        return composite(face, drawn, self.split_row, self.seam_width, self.seam_colour_rows)
