"""Shared by the identity_* probes: a run's config and test faces, its trained stages, and its mask decoder
drawn from a given identity code, composited as `antimask evaluate` composites the anti-mask."""
import os
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import numpy as np, torch
from antimask.config import split_row_for
from antimask.runs import run_config, stage_checkpoint
from antimask.models.modules import load_stage
from antimask.data.store import open_store
from antimask.backbones.registry import backbone_from_config
from antimask.backbones.cache import cached_features
from antimask.evaluation.evaluate import faces_at
from antimask.faces.compositing import composite, keep_real_rows
from antimask.faces.images import to_float, to_uint8


class Run:
    """A run folder: its config, store, face size S and split row R; ``faces(split)`` -> (rows, uint8 faces)."""

    def __init__(self, folder):
        self.folder, self.cfg = folder, run_config(folder)
        self.store = open_store(self.cfg.data.store)
        self.S = int(self.cfg.data.image_size); self.R = split_row_for(self.S, self.cfg.data.split_row)

    def faces(self, split):
        rows = self.store.rows(split, morphs=False)
        return rows, faces_at(self.store, rows, self.S)

    def teacher(self, rows):
        """The cached teacher features (of the stored whole faces) of ``rows``."""
        return np.asarray(cached_features(self.store, backbone_from_config(self.cfg), progress=False)[rows], np.float32)

    def encoder(self):
        return load_stage(stage_checkpoint(self.folder, "encoder"), "encoder").encoder.eval()

    def decoder(self):
        return load_stage(stage_checkpoint(self.folder, "mask_decoder"), "mask_decoder").decoder.eval()

    def encode(self, encoder, faces):
        with torch.no_grad():
            return encoder(upper(faces, self.R)).numpy()

    def draw(self, decoder, real, code):
        """The run's mask decoder's lower band from ``code`` (N, D) and the visible rows of ``real``, composited."""
        x = to_float(real); seam = int(self.cfg.model.seam_width)
        with torch.no_grad():
            band = decoder.draw(torch.from_numpy(np.asarray(code, np.float32)), x[:, :, :self.R])
            out = composite(x, band, self.R, seam, int(self.cfg.model.seam_colour_rows))
        return keep_real_rows(to_uint8(out), real, self.R, seam)


def upper(faces, R):
    return to_float(faces)[:, :, :R]
