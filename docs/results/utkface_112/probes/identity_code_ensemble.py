"""Probe: identity code from an average of encoders (the improved run's timm encoder and the paper run's
VGG-style encoder) or from test-time shifts of one encoder, drawn by each run's mask decoder.

    python docs/results/utkface_112/probes/identity_code_ensemble.py IMPROVED_RUN PAPER_RUN
(one-off, run from the repository root; see ../identity_code.md)
"""
import os, sys
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import numpy as np, torch
from antimask.config import split_row_for
from antimask.training import run_config, stage_checkpoint
from antimask.models.modules import load_stage
from antimask.models.antimask import composite
from antimask.data.store import open_store
from antimask.backbones.registry import backbone_from_config
from antimask.backbones.cache import cached_features
from antimask.evaluation.evaluate import faces_at, _keep_real_rows
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
imp, pap = sys.argv[1], sys.argv[2]
c = run_config(imp); store = open_store(c.data.store)
S = int(c.data.image_size); R = split_row_for(S, c.data.split_row)
rows = store.rows("test", morphs=False); real = faces_at(store, rows, S); d_real = dlib_descriptors(real)
teacher = np.asarray(cached_features(store, backbone_from_config(c), progress=False)[rows], np.float32)
t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255
u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
x = t(real); up = x[:, :, :R]
codes = {}
with torch.no_grad():
    for name, run in (("timm", imp), ("vgg", pap)):
        e = load_stage(stage_checkpoint(run, "encoder"), "encoder").encoder.eval()
        codes[name] = e(up).numpy()
        shifts = [e(torch.roll(up, (dy, dx), (2, 3))).numpy() for dy, dx in ((0, 0), (0, 2), (0, -2), (2, 0), (-2, 0))]
        codes[name + "+shifts"] = np.mean(shifts, 0)
codes["timm+vgg"] = 0.5 * (codes["timm"] + codes["vgg"])
codes["all shifts"] = 0.5 * (codes["timm+shifts"] + codes["vgg+shifts"])
for name, code in codes.items():
    print(f"code {name:12s} -> teacher {identity_distance(code, teacher).mean():.4f}")
for label, run in (("improved decoder", imp), ("paper decoder", pap)):
    rc = run_config(run)
    dec = load_stage(stage_checkpoint(run, "mask_decoder"), "mask_decoder").decoder.eval()
    for name, code in codes.items():
        with torch.no_grad():
            out = composite(x, dec.draw(torch.from_numpy(code), up), R, int(rc.model.seam_width), int(rc.model.seam_colour_rows))
        img = _keep_real_rows(u8(out), real, R, int(rc.model.seam_width)); d = dlib_descriptors(img)
        idd = identity_distance(d, d_real)
        print(f"{label} + {name:12s}: identity {idd.mean():.4f} L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
