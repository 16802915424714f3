"""Networks, the three training stages (LightningModules) and the Anti-Mask inference model."""

from antimask.models.antimask import AntiMask, MaskAwareAntiMask
from antimask.models.callbacks import ImageGridCallback, render_grid
from antimask.models.modules import (
    STAGE_MODULES,
    EncoderDistillModule,
    FaceDecoderModule,
    MaskDecoderModule,
    StageMismatchError,
    load_stage,
)

__all__ = ["AntiMask", "EncoderDistillModule", "FaceDecoderModule", "ImageGridCallback", "MaskAwareAntiMask",
           "MaskDecoderModule", "STAGE_MODULES", "StageMismatchError", "load_stage", "render_grid"]
