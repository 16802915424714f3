"""Probe: the teacher (dlib) run on the visible face (real upper band + the mean lower face) as the
identity code, instead of / beside the learned encoder's prediction.

    python docs/results/utkface_112/probes/identity_code_visible.py RUN
(one-off, run from the repository root; see ../identity_code.md)
"""
import sys
from antimask.evaluation.baselines import create_baseline
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
from _identity import Run
run = Run(sys.argv[1]); R = run.R
_, real = run.faces("test"); d_real = dlib_descriptors(real)
meanc = create_baseline("mean_face").fit(run.faces("train")[1]).complete(real, R)
f_enc = run.encode(run.encoder(), real); dec = run.decoder()
def report(name, code):
    img = run.draw(dec, real, code); d = dlib_descriptors(img)
    print(f"{name:28s} code->real {identity_distance(code, d_real).mean():.4f} | identity {identity_distance(d, d_real).mean():.4f} L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
    return d
d_mean = dlib_descriptors(meanc)
print("mean-face composite identity", identity_distance(d_mean, d_real).mean().round(4))
d_e = report("encoder", f_enc)
report("teacher(visible+mean)", d_mean)
for b in (0.25, 0.5, 0.75): report(f"blend {b} teacher", b * d_mean + (1 - b) * f_enc)
report("teacher(own drawing)", d_e)
report("blend .5 enc/own", 0.5 * d_e + 0.5 * f_enc)
code = d_mean
for it in range(3):
    code = report(f"iterate {it}", code)
