"""Networks, the three training stages (LightningModules) and the Anti-Mask inference model."""

from antimask.models.antimask import AntiMask, composite, seam_weights
from antimask.models.callbacks import ImageGridCallback, ImageGridLogger, render_grid
from antimask.models.modules import (
    STAGES,
    EncoderDistillModule,
    FaceDecoderModule,
    MaskDecoderModule,
    StageMismatchError,
    load_stage,
)

__all__ = ["AntiMask", "EncoderDistillModule", "FaceDecoderModule", "ImageGridCallback", "ImageGridLogger", "MaskDecoderModule",
           "STAGES", "StageMismatchError", "composite", "load_stage", "render_grid", "seam_weights"]
