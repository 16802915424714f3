"""Plain ``nn.Module`` networks: decoders (texture, landmarks, shared layer) and the upper-face encoder."""

from antimask.models.components.decoder import (
    AppearanceDecoder,
    Decoder,
    LandmarkHead,
    LandmarkWarp,
    MaskAwareDecoder,
    SharedLayer,
    TextureDecoder,
    start_grid,
)
from antimask.models.components.encoder import UpperEncoder, load_weights_file

__all__ = ["AppearanceDecoder", "Decoder", "LandmarkHead", "LandmarkWarp", "MaskAwareDecoder", "SharedLayer",
           "TextureDecoder", "UpperEncoder", "load_weights_file", "start_grid"]
