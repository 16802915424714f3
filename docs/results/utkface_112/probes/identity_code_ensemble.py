"""Probe: identity code from an average of encoders (the improved run's timm encoder and the paper run's
VGG-style encoder) or from test-time shifts of one encoder, drawn by each run's mask decoder.

    python docs/results/utkface_112/probes/identity_code_ensemble.py IMPROVED_RUN PAPER_RUN
(one-off, run from the repository root; see ../identity_code.md)
"""
import sys
import numpy as np, torch
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
from _identity import Run, upper
imp, pap = Run(sys.argv[1]), Run(sys.argv[2]); R = imp.R
rows, real = imp.faces("test"); d_real = dlib_descriptors(real); teacher = imp.teacher(rows)
up = upper(real, R)
codes = {}
with torch.no_grad():
    for name, run in (("timm", imp), ("vgg", pap)):
        e = run.encoder()
        codes[name] = e(up).numpy()
        shifts = [e(torch.roll(up, (dy, dx), (2, 3))).numpy() for dy, dx in ((0, 0), (0, 2), (0, -2), (2, 0), (-2, 0))]
        codes[name + "+shifts"] = np.mean(shifts, 0)
codes["timm+vgg"] = 0.5 * (codes["timm"] + codes["vgg"])
codes["all shifts"] = 0.5 * (codes["timm+shifts"] + codes["vgg+shifts"])
for name, code in codes.items():
    print(f"code {name:12s} -> teacher {identity_distance(code, teacher).mean():.4f}")
for label, run in (("improved decoder", imp), ("paper decoder", pap)):
    dec = run.decoder()
    for name, code in codes.items():
        img = run.draw(dec, real, code)
        print(f"{label} + {name:12s}: identity {identity_distance(dlib_descriptors(img), d_real).mean():.4f} L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
