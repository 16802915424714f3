"""Probe: does choosing among several drawn lower faces by dlib proximity to the encoder's predicted
descriptor lower the identity distance? Candidates: the run's mask decoder with its identity code pushed
away from the mean code by a factor alpha (alpha=1 is the model as it is).

    [CENTRE=mean|zero] python docs/results/utkface_112/probes/identity_rerank.py RUN
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
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
run = sys.argv[1]; paper = sys.argv[2] if len(sys.argv) > 2 else None
c = run_config(run); store = open_store(c.data.store)
S = int(c.data.image_size); R = split_row_for(S, c.data.split_row)
rows = store.rows("test", morphs=False); real = faces_at(store, rows, S); d_real = dlib_descriptors(real)
vrows = store.rows("val", morphs=False); val = faces_at(store, vrows, S)
enc = load_stage(stage_checkpoint(run, "encoder"), "encoder").encoder.eval()
dec = load_stage(stage_checkpoint(run, "mask_decoder"), "mask_decoder").decoder.eval()
t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255
u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
with torch.no_grad():
    f_val = enc(t(val)[:, :, :R]); mean = f_val.mean(0, keepdim=True)
    x = t(real); up = x[:, :, :R]; f = enc(up)
print("encoder predicted descriptor -> real descriptor distance:", identity_distance(f.numpy(), d_real).mean().round(4))
print("val-mean code -> real:", identity_distance(np.repeat(mean.numpy(), len(real), 0), d_real).mean().round(4))
alphas = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
CENTRE = os.environ.get("CENTRE", "mean")
if CENTRE == "zero": mean = torch.zeros_like(mean); alphas = [0.8, 1.0, 1.2, 1.5]
cands = {}
for a in alphas:
    with torch.no_grad():
        fa = mean + a * (f - mean)
        drawn = composite(x, dec.draw(fa, up), R, int(c.model.seam_width), int(c.model.seam_colour_rows))
    img = _keep_real_rows(u8(drawn), real, R, int(c.model.seam_width))
    d = dlib_descriptors(img)
    cands[a] = dict(img=img, d=d, id=identity_distance(d, d_real), toenc=identity_distance(d, f.numpy()),
                    l1=l1(img, real, R), ssim=ssim(img, real, R))
    print(f"alpha {a}: identity {cands[a]['id'].mean():.4f} to-pred {cands[a]['toenc'].mean():.4f} L1 {cands[a]['l1'].mean():.4f} SSIM {cands[a]['ssim'].mean():.4f}", flush=True)
def pick(keys, by):
    M = np.stack([cands[k][by] for k in keys]); j = M.argmin(0); n = np.arange(len(j))
    return {m: np.stack([cands[k][m] for k in keys])[j, n].mean().round(4) for m in ("id", "l1", "ssim")}, np.bincount(j, minlength=len(keys))
for keys in ([0.5, 1.0, 1.5], [1.0, 1.5, 2.0], alphas) if CENTRE == "mean" else ([1.0, 1.2], [1.0, 1.2, 1.5], alphas):
    print("select by pred", keys, *pick(keys, "toenc"))
    print("  oracle      ", keys, *pick(keys, "id"))
