"""Probe: how far an encoder's code lies from the teacher's features of the real face, against the mean code
of the val faces (a constant), and the identity each run's mask decoder draws from it.

    python docs/results/utkface_112/probes/identity_encoder.py ENCODER_RUN DECODER_RUN [DECODER_RUN ...]
(one-off, run from the repository root; see ../identity_code.md)
"""
import sys
import numpy as np
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
from _identity import Run
enc_run = Run(sys.argv[1])
rows, real = enc_run.faces("test"); teacher = enc_run.teacher(rows)
val_rows, val = enc_run.faces("val"); val_teacher = enc_run.teacher(val_rows)
enc = enc_run.encoder(); code = enc_run.encode(enc, real); val_code = enc_run.encode(enc, val)
constant = lambda c: np.repeat(c.mean(0, keepdims=True), len(rows), 0)
print(f"{sys.argv[1]}: test code -> teacher {identity_distance(code, teacher).mean():.4f}; val-mean code -> teacher "
      f"{identity_distance(constant(val_code), teacher).mean():.4f}; val code -> teacher {identity_distance(val_code, val_teacher).mean():.4f}; "
      f"val teacher mean -> test teacher {identity_distance(constant(val_teacher), teacher).mean():.4f}")
d_real = dlib_descriptors(real)
for folder in sys.argv[2:]:
    run = Run(folder); img = run.draw(run.decoder(), real, code)
    print(f"  {folder} decoder: identity {identity_distance(dlib_descriptors(img), d_real).mean():.4f} "
          f"L1 {l1(img, real, run.R).mean():.4f} SSIM {ssim(img, real, run.R).mean():.4f}", flush=True)
