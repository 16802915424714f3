"""Probe: an encoder made of dlib itself run on the visible face (real upper band + the train split's mean
lower face), mapped to the teacher's features of the whole face by ridge regression fit on the train faces
(optionally beside the run's encoder code); its code drawn by each run's mask decoder.

    python docs/results/utkface_112/probes/identity_visible_ridge.py ENCODER_RUN DECODER_RUN [DECODER_RUN ...]
(one-off, run from the repository root; see ../identity_code.md)
"""
import sys
import numpy as np
from antimask.evaluation.baselines import create_baseline
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
from _identity import Run
enc_run = Run(sys.argv[1]); R = enc_run.R
enc = enc_run.encoder()
mean_face = create_baseline("mean_face").fit(enc_run.faces("train")[1])
data = {}
for split in ("train", "val", "test"):
    rows, faces = enc_run.faces(split)
    data[split] = dict(faces=faces, teacher=enc_run.teacher(rows), code=enc_run.encode(enc, faces),
                       visible=dlib_descriptors(mean_face.complete(faces, R)))
    print(split, len(rows), "faces described", flush=True)
def design(d, with_code):
    X = [d["visible"]] + ([d["code"]] if with_code else [])
    return np.concatenate(X + [np.ones((len(d["visible"]), 1), np.float32)], 1)
results = {}
for with_code in (False, True):
    best = None
    for lam in (0.01, 0.1, 1.0, 10.0):
        X, Y = design(data["train"], with_code), data["train"]["teacher"]
        W = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ Y)
        v = identity_distance(design(data["val"], with_code) @ W, data["val"]["teacher"]).mean()
        if best is None or v < best[0]:
            best = (v, lam, W)
    v, lam, W = best
    name = "ridge(dlib visible" + (" + encoder code)" if with_code else ")")
    results[name] = (design(data["test"], with_code) @ W).astype(np.float32)
    print(f"{name}: lambda {lam} (best on val, val code -> teacher {v:.4f})")
results["encoder"] = data["test"]["code"]
real = data["test"]["faces"]; teacher = data["test"]["teacher"]; d_real = dlib_descriptors(real)
for name, code in results.items():
    print(f"{name}: test code -> teacher {identity_distance(code, teacher).mean():.4f}")
for folder in sys.argv[2:]:
    run = Run(folder); dec = run.decoder()
    for name, code in results.items():
        img = run.draw(dec, real, code)
        print(f"  {folder} decoder + {name}: identity {identity_distance(dlib_descriptors(img), d_real).mean():.4f} "
              f"L1 {l1(img, real, run.R).mean():.4f} SSIM {ssim(img, real, run.R).mean():.4f}", flush=True)
