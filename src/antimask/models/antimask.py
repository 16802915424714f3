"""The Anti-Mask model for inference: upper-face encoder + mask decoder, real upper band kept.

``forward`` takes aligned faces (B,3,S,S) in [0,1] and returns them with rows below the split drawn
by the mask decoder, joined to the real upper band by a feathered seam. ``MaskAwareAntiMask`` (model.mask_aware)
takes a masked face and its redraw alpha and redraws only that region.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from antimask.faces.compositing import blend_region, composite, hide_region, seam_weights
from antimask.models.components import MaskAwareDecoder, UpperEncoder
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
        enc, dec = _load_stages(encoder_ckpt, mask_decoder_ckpt)
        return cls(enc.encoder, dec.decoder, int(dec.hparams.image_size), int(dec.hparams.split_row), seam_width,
                   seam_colour_rows)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        upper = face[:, :, : self.split_row, :]
        if isinstance(self.decoder, MaskAwareDecoder):
            # a mask-aware run asked for the paper's task (evaluate, predict without a segmenter): the rows
            # the seam gives the drawn face are its redraw region
            size = self.image_size
            alpha = seam_weights(size, self.split_row, self.seam_width, face.device, face.dtype)
            alpha = alpha.view(1, 1, size, 1).expand(face.shape[0], 1, size, size)
            drawn = self.decoder.draw(self.encoder(hide_region(face, alpha)[:, :, : self.split_row]), face, alpha)
        else:
            drawn = self.decoder.draw(self.encoder(upper), upper)
        return composite(face, drawn, self.split_row, self.seam_width, self.seam_colour_rows)


class MaskAwareAntiMask(nn.Module):
    """model.mask_aware: (face with a mask on (B,3,S,S), redraw alpha (B,1,S,S)) -> the completed face.

    The alpha is ``faces.masks.redraw_region`` of the mask's region (drawn, or found by the segmenter). The
    encoder reads the upper rows with the region blanked, the decoder the whole face so blanked; the result
    is the input bit for bit wherever alpha is 0, the drawn face where it is 1, feathered in between.
    """

    def __init__(self, encoder: UpperEncoder, decoder: MaskAwareDecoder, image_size: int, split_row: int):
        super().__init__()
        if not isinstance(decoder, MaskAwareDecoder):
            raise ValueError(f"MaskAwareAntiMask needs a mask-aware decoder (model.mask_aware=true), got "
                             f"{type(decoder).__name__}; use AntiMask for a fixed-row run")
        if not 0 < split_row < image_size:
            raise ValueError(f"split_row {split_row} lies outside the {image_size}-px face")
        self.encoder, self.decoder = encoder, decoder
        self.image_size, self.split_row = image_size, split_row
        self.eval()

    @classmethod
    def from_checkpoints(cls, encoder_ckpt: str | Path, mask_decoder_ckpt: str | Path) -> "MaskAwareAntiMask":
        enc, dec = _load_stages(encoder_ckpt, mask_decoder_ckpt)
        if not dec.hparams.get("mask_aware", False):
            raise ValueError(f"mask decoder checkpoint {mask_decoder_ckpt} was not trained with model.mask_aware=true; "
                             "use AntiMask.from_checkpoints")
        return cls(enc.encoder, dec.decoder, int(dec.hparams.image_size), int(dec.hparams.split_row))

    def forward(self, face: torch.Tensor, redraw: torch.Tensor) -> torch.Tensor:
        features = self.encoder(hide_region(face, redraw)[:, :, : self.split_row])
        return blend_region(face, self.decoder.draw(features, face, redraw), redraw)


def _load_stages(encoder_ckpt: str | Path, mask_decoder_ckpt: str | Path):
    """The encoder and mask decoder stage modules, checked to share the face size and split row."""
    enc = load_stage(encoder_ckpt, EncoderDistillModule.STAGE)
    dec = load_stage(mask_decoder_ckpt, MaskDecoderModule.STAGE, enc.hparams.feature_dim)
    for key in ("image_size", "split_row"):
        if enc.hparams[key] != dec.hparams[key]:
            raise ValueError(f"{key} differs: encoder checkpoint {encoder_ckpt} has {enc.hparams[key]}, "
                             f"mask decoder checkpoint {mask_decoder_ckpt} has {dec.hparams[key]}")
    return enc, dec
