"""Probe: does choosing among several drawn lower faces by dlib proximity to the encoder's predicted
descriptor lower the identity distance? Candidates: the run's mask decoder with its identity code pushed
away from the mean code by a factor alpha (alpha=1 is the model as it is).

    python docs/results/utkface_112/probes/identity_rerank.py RUN
(one-off, run from the repository root; see ../identity_code.md)
"""
import sys
import numpy as np
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
from _identity import Run
run = Run(sys.argv[1]); R = run.R
_, real = run.faces("test"); d_real = dlib_descriptors(real)
enc, dec = run.encoder(), run.decoder()
mean = run.encode(enc, run.faces("val")[1]).mean(0, keepdims=True); f = run.encode(enc, real)
print("encoder predicted descriptor -> real descriptor distance:", identity_distance(f, d_real).mean().round(4))
print("val-mean code -> real:", identity_distance(np.repeat(mean, len(real), 0), d_real).mean().round(4))
alphas = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
cands = {}
for a in alphas:
    img = run.draw(dec, real, mean + a * (f - mean)); d = dlib_descriptors(img)
    cands[a] = dict(id=identity_distance(d, d_real), toenc=identity_distance(d, f), l1=l1(img, real, R), ssim=ssim(img, real, R))
    print(f"alpha {a}: identity {cands[a]['id'].mean():.4f} to-pred {cands[a]['toenc'].mean():.4f} L1 {cands[a]['l1'].mean():.4f} SSIM {cands[a]['ssim'].mean():.4f}", flush=True)
def pick(keys, by):
    j = np.stack([cands[k][by] for k in keys]).argmin(0); n = np.arange(len(j))
    return {m: np.stack([cands[k][m] for k in keys])[j, n].mean().round(4) for m in ("id", "l1", "ssim")}, np.bincount(j, minlength=len(keys))
for keys in ([0.5, 1.0, 1.5], [1.0, 1.5, 2.0], alphas):
    print("select by pred", keys, *pick(keys, "toenc"))
    print("  oracle      ", keys, *pick(keys, "id"))
