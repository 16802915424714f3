"""Probe: how much identity the mask decoder carries when its code is the teacher's features of the real
whole face (an oracle encoder), against the run's encoder and a code half-way between them.

    python docs/results/utkface_112/probes/identity_code_oracle.py RUN [RUN ...]
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
for run in sys.argv[1:]:
    c = run_config(run); store = open_store(c.data.store)
    S = int(c.data.image_size); R = split_row_for(S, c.data.split_row)
    rows = store.rows("test", morphs=False); real = faces_at(store, rows, S); d_real = dlib_descriptors(real)
    teacher = np.asarray(cached_features(store, backbone_from_config(c), progress=False)[rows], np.float32)
    enc = load_stage(stage_checkpoint(run, "encoder"), "encoder").encoder.eval()
    dec = load_stage(stage_checkpoint(run, "mask_decoder"), "mask_decoder").decoder.eval()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255
    u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    x = t(real); up = x[:, :, :R]
    with torch.no_grad(): f_enc = enc(up).numpy()
    print(run, "teacher(224) -> real(112 desc) distance", identity_distance(teacher, d_real).mean().round(4))
    ids = {}
    for name, code in (("oracle teacher", teacher), ("encoder", f_enc), ("half-way", 0.5 * teacher + 0.5 * f_enc)):
        with torch.no_grad():
            out = composite(x, dec.draw(torch.from_numpy(np.asarray(code, np.float32)), up), R, int(c.model.seam_width), int(c.model.seam_colour_rows))
        img = _keep_real_rows(u8(out), real, R, int(c.model.seam_width)); d = dlib_descriptors(img)
        ids[name] = identity_distance(d, d_real)
        print(f"  {name:16s} code->teacher {identity_distance(code, teacher).mean():.4f} | identity {identity_distance(d, d_real).mean():.4f} L1 {l1(img, real, R).mean():.4f} SSIM {ssim(img, real, R).mean():.4f}", flush=True)
    diff = ids["oracle teacher"] - ids["encoder"]
    boot = np.random.default_rng(0).integers(0, len(diff), (10000, len(diff)))
    lo, hi = np.percentile(diff[boot].mean(1), [2.5, 97.5])
    print(f"  oracle - encoder identity, paired per face: {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] (95 % bootstrap)")
