"""The Anti-Mask model for inference: upper-face encoder + mask decoder, real upper band kept.

``forward`` takes aligned faces (B,3,S,S) in [0,1] and returns them with rows below the split drawn
by the mask decoder, joined to the real upper band by a feathered seam.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from antimask.faces.compositing import composite
from antimask.models.components import UpperEncoder
from antimask.models.modules import EncoderDistillModule, MaskDecoderModule, load_stage


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
