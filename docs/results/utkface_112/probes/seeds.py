"""Anti-mask of several runs on the test split of the first run's store: L1 / SSIM of the lower band and dlib identity
distance per face, scored as `antimask evaluate` scores them (without its baselines, landmarks and figures), then
improved - paper paired per face (95 % bootstrap CI over the test faces).

    python docs/results/utkface_112/probes/seeds.py RUN [RUN ...]   (folders named paper*, improved*; -sN = seed N, else seed 0;
    each improved run is paired with the paper run of its seed)
"""
import os, sys, json
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import numpy as np
from antimask.config import split_row_for
from antimask.runs import run_config, stage_checkpoint
from antimask.models.modules import load_stage
from antimask.data.store import open_store
from antimask.evaluation.evaluate import draw_anti_mask, faces_at
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim
runs = sys.argv[1:]
cfg = run_config(runs[0]); store = open_store(cfg.data.store)
rows = store.rows("test", morphs=False); S = int(cfg.data.image_size); R = split_row_for(S, cfg.data.split_row)
real = faces_at(store, rows, S); d_real = dlib_descriptors(real)
out = {}
for run in runs:
    c = run_config(run)
    enc = load_stage(stage_checkpoint(run, "encoder"), "encoder"); dec = load_stage(stage_checkpoint(run, "mask_decoder"), "mask_decoder")
    drawn = draw_anti_mask(enc, dec, real, R, int(c.model.seam_width), 32, int(c.model.seam_colour_rows))
    out[run] = dict(l1=l1(drawn, real, R), ssim=ssim(drawn, real, R), identity=identity_distance(dlib_descriptors(drawn), d_real))
    print(run, {k: round(float(v.mean()), 4) for k, v in out[run].items()}, flush=True)
z = {f"{r}|{k}": v for r, d in out.items() for k, v in d.items()}
runs = list(out)
def boot(d, n=10000, seed=0):
    rng = np.random.default_rng(seed); idx = rng.integers(0, len(d), (n, len(d)))
    m = d[idx].mean(1); return np.percentile(m, [2.5, 97.5])
print("| run | L1 lower | SSIM lower | identity |\n|---|---|---|---|")
for r in runs:
    print(f"| {r} | {z[r+'|l1'].mean():.4f} | {z[r+'|ssim'].mean():.4f} | {z[r+'|identity'].mean():.4f} |")
def seed(run):
    name = os.path.basename(run.rstrip("/")); return int(name.rsplit("-s", 1)[1]) if "-s" in name and name.rsplit("-s", 1)[1].isdigit() else 0
kind = lambda run: os.path.basename(run.rstrip("/")).split("-")[0]
pairs = [(a, b) for a in runs for b in runs if kind(a) == "improved" and kind(b) == "paper" and seed(a) == seed(b)]
print(f"\npaired improved - paper of the same seed (mean [95% bootstrap CI over the {len(rows)} test faces])")
for a, b in pairs:
    out = []
    for m in ("l1", "ssim", "identity"):
        d = z[a+"|"+m] - z[b+"|"+m]; lo, hi = boot(d); out.append(f"{m} {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]")
    print(a, "-", b, ":", "; ".join(out))
imp = [r for r in runs if kind(r) == "improved"]; pap = [r for r in runs if kind(r) == "paper"]
for m in ("l1", "ssim", "identity"):
    I = np.mean([z[r+"|"+m] for r in imp], 0); P = np.mean([z[r+"|"+m] for r in pap], 0)
    lo, hi = boot(I - P)
    print(f"all-run mean {m}: improved {I.mean():.4f} (runs {[round(float(z[r+'|'+m].mean()),4) for r in imp]}) paper {P.mean():.4f} (runs {[round(float(z[r+'|'+m].mean()),4) for r in pap]}); diff {I.mean()-P.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]")
