"""Probe: an encoder made of dlib itself run on the visible face (real upper band + the train split's mean
lower face), mapped to the teacher's features of the whole face by ridge regression fit on the train faces
(optionally beside the run's encoder code); its code drawn by each run's mask decoder.

    python docs/results/utkface_112/probes/identity_visible_ridge.py ENCODER_RUN DECODER_RUN [DECODER_RUN ...]
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
from antimask.evaluation.baselines import create_baseline
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
enc_run, dec_runs = sys.argv[1], sys.argv[2:]
c = run_config(enc_run); store = open_store(c.data.store)
S = int(c.data.image_size); R = split_row_for(S, c.data.split_row)
t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255
u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
feats = cached_features(store, backbone_from_config(c), progress=False)
enc = load_stage(stage_checkpoint(enc_run, "encoder"), "encoder").encoder.eval()
train_faces = faces_at(store, store.rows("train", morphs=False), S)
mean_face = create_baseline("mean_face").fit(train_faces)
data = {}
for split in ("train", "val", "test"):
    rows = store.rows(split, morphs=False); faces = faces_at(store, rows, S)
    with torch.no_grad():
        code = enc(t(faces)[:, :, :R]).numpy()
    data[split] = dict(faces=faces, teacher=np.asarray(feats[rows], np.float32), code=code,
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
x = t(real); up = x[:, :, :R]
for name, code in results.items():
    print(f"{name}: test code -> teacher {identity_distance(code, teacher).mean():.4f}")
for run in dec_runs:
    rc = run_config(run); dec = load_stage(stage_checkpoint(run, "mask_decoder"), "mask_decoder").decoder.eval()
    for name, code in results.items():
        with torch.no_grad():
            out = composite(x, dec.draw(torch.from_numpy(code), up), R, int(rc.model.seam_width), int(rc.model.seam_colour_rows))
        img = _keep_real_rows(u8(out), real, R, int(rc.model.seam_width))
        print(f"  {run} decoder + {name}: identity {identity_distance(dlib_descriptors(img), d_real).mean():.4f} "
              f"L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
