"""Probe: how much identity the mask decoder carries when its code is the teacher's features of the real
whole face (an oracle encoder), against the run's encoder and a code half-way between them.

    python docs/results/utkface_112/probes/identity_code_oracle.py RUN [RUN ...]
(one-off, run from the repository root; see ../identity_code.md)
"""
import sys
import numpy as np
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
from _identity import Run
for folder in sys.argv[1:]:
    run = Run(folder); R = run.R
    rows, real = run.faces("test"); d_real = dlib_descriptors(real); teacher = run.teacher(rows)
    f_enc = run.encode(run.encoder(), real); dec = run.decoder()
    print(folder, "teacher(224) -> real(112 desc) distance", identity_distance(teacher, d_real).mean().round(4))
    ids = {}
    for name, code in (("oracle teacher", teacher), ("encoder", f_enc), ("half-way", 0.5 * teacher + 0.5 * f_enc)):
        img = run.draw(dec, real, code); d = dlib_descriptors(img)
        ids[name] = identity_distance(d, d_real)
        print(f"  {name:16s} code->teacher {identity_distance(code, teacher).mean():.4f} | identity {ids[name].mean():.4f} L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
    diff = ids["oracle teacher"] - ids["encoder"]
    boot = np.random.default_rng(0).integers(0, len(diff), (10000, len(diff)))
    lo, hi = np.percentile(diff[boot].mean(1), [2.5, 97.5])
    print(f"  oracle - encoder identity, paired per face: {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] (95 % bootstrap)")
