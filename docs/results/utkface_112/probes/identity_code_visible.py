"""Probe: the teacher (dlib) run on the visible face (real upper band + the mean lower face) as the
identity code, instead of / beside the learned encoder's prediction.

    python docs/results/utkface_112/probes/identity_code_visible.py RUN
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
from antimask.evaluation.evaluate import faces_at, _keep_real_rows
from antimask.evaluation.baselines import create_baseline
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
run = sys.argv[1]
c = run_config(run); store = open_store(c.data.store)
S = int(c.data.image_size); R = split_row_for(S, c.data.split_row)
rows = store.rows("test", morphs=False); real = faces_at(store, rows, S); d_real = dlib_descriptors(real)
train = faces_at(store, store.rows("train", morphs=False), S)
meanc = create_baseline("mean_face").fit(train).complete(real, R); del train
enc = load_stage(stage_checkpoint(run, "encoder"), "encoder").encoder.eval()
dec = load_stage(stage_checkpoint(run, "mask_decoder"), "mask_decoder").decoder.eval()
t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255
u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
x = t(real); up = x[:, :, :R]
with torch.no_grad(): f_enc = enc(up).numpy()
def draw(code):
    with torch.no_grad():
        out = composite(x, dec.draw(torch.from_numpy(np.asarray(code, np.float32)), up), R, int(c.model.seam_width), int(c.model.seam_colour_rows))
    return _keep_real_rows(u8(out), real, R, int(c.model.seam_width))
def report(name, code, img=None):
    img = draw(code) if img is None else img; d = dlib_descriptors(img)
    print(f"{name:28s} code->real {identity_distance(code, d_real).mean():.4f} | identity {identity_distance(d, d_real).mean():.4f} L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
    return img, d
d_mean = dlib_descriptors(meanc)
print("mean-face composite identity", identity_distance(d_mean, d_real).mean().round(4))
img_e, d_e = report("encoder", f_enc)
report("teacher(visible+mean)", d_mean)
for b in (0.25, 0.5, 0.75): report(f"blend {b} teacher", b * d_mean + (1 - b) * f_enc)
report("teacher(own drawing)", d_e)
report("blend .5 enc/own", 0.5 * d_e + 0.5 * f_enc)
code = d_mean
for it in range(3):
    img, d = report(f"iterate {it}", code); code = d
