"""Probe: how far an encoder's code lies from the teacher's features of the real face, against the mean code
of the val faces (a constant), and the identity each run's mask decoder draws from it.

    python docs/results/utkface_112/probes/identity_encoder.py ENCODER_RUN DECODER_RUN [DECODER_RUN ...]
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
enc_run, dec_runs = sys.argv[1], sys.argv[2:]
c = run_config(enc_run); store = open_store(c.data.store)
S = int(c.data.image_size); R = split_row_for(S, c.data.split_row)
t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255
u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
feats = cached_features(store, backbone_from_config(c), progress=False)
rows = store.rows("test", morphs=False); real = faces_at(store, rows, S); teacher = np.asarray(feats[rows], np.float32)
val_rows = store.rows("val", morphs=False)
enc = load_stage(stage_checkpoint(enc_run, "encoder"), "encoder").encoder.eval()
x = t(real); up = x[:, :, :R]
with torch.no_grad():
    code = enc(up).numpy(); val_code = enc(t(faces_at(store, val_rows, S))[:, :, :R]).numpy()
mean = np.repeat(val_code.mean(0, keepdims=True), len(rows), 0)
val_teacher = np.asarray(feats[val_rows], np.float32)
print(f"{enc_run}: test code -> teacher {identity_distance(code, teacher).mean():.4f}; val-mean code -> teacher "
      f"{identity_distance(mean, teacher).mean():.4f}; val code -> teacher {identity_distance(val_code, val_teacher).mean():.4f}; "
      f"val teacher mean -> test teacher {identity_distance(np.repeat(val_teacher.mean(0, keepdims=True), len(rows), 0), teacher).mean():.4f}")
d_real = dlib_descriptors(real)
for run in dec_runs:
    rc = run_config(run); dec = load_stage(stage_checkpoint(run, "mask_decoder"), "mask_decoder").decoder.eval()
    with torch.no_grad():
        out = composite(x, dec.draw(torch.from_numpy(code), up), R, int(rc.model.seam_width), int(rc.model.seam_colour_rows))
    img = _keep_real_rows(u8(out), real, R, int(rc.model.seam_width))
    print(f"  {run} decoder: identity {identity_distance(dlib_descriptors(img), d_real).mean():.4f} "
          f"L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
