"""One-off probe (not part of the package), run after identity_twin_real.py (it starts from /tmp/q/twin.pt):
   python docs/results/utkface_112/probes/identity_twin_composites.py 0:2 10:2
Builds composites of every train face (real upper + another person's lower band; real upper + the improved decoder's
band), describes them with dlib (the judge), fine-tunes the twin 4 epochs on real + composites, then fine-tunes the
improved mask decoder 2 epochs with W * ||twin(completed) - dlib(real)|| per W:EPOCHS argument. Results: identity_twin.md.
"""
import os, sys, time, json
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import numpy as np, torch, torch.nn.functional as F
from antimask.backbones import teacher_features
from antimask.runs import run_config, stage_checkpoint
from antimask.data.datamodule import FaceDataModule
from antimask.models.components import UpperEncoder
from antimask.models.modules import load_stage
from antimask.models.antimask import AntiMask
from antimask.evaluation.evaluate import _batched
from antimask.faces.compositing import composite, keep_real_rows
from antimask.faces.images import to_float, to_uint8
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim

torch.manual_seed(0); rng = np.random.default_rng(0)
RUN = "runs/q112/utk/improved"
cfg = run_config(RUN)
dm = FaceDataModule(cfg, stage="mask_decoder"); dm.setup("fit"); dm.attach_features(teacher_features(cfg, dm.store))
S, R = 112, dm.split_row
base = load_stage(stage_checkpoint(RUN, "mask_decoder"), "mask_decoder", dm.feature_dim).eval()
enc = load_stage(stage_checkpoint(RUN, "encoder"), "encoder", dm.feature_dim).eval()

def make_pool(split, train):
    P = f"/tmp/q/pool_{split}.npz"
    if os.path.exists(P):
        z = np.load(P); return {k: z[k] for k in z.files}
    t0 = time.time()
    ds = dm.dataset(split, train=train)
    real = np.stack([np.asarray(ds.images[int(r)]) for r in ds.rows])
    feats = np.stack([np.asarray(ds.features[int(r)], np.float32) for r in ds.rows])
    ids = ds.identities[ds.rows]
    partner = rng.permutation(len(real))
    for _ in range(5):  # different identity
        same = ids[partner] == ids
        partner[same] = rng.integers(0, len(real), same.sum())
    swap = _batched(lambda x, p: to_uint8(composite(x, to_float(p)[:, :, R:], R, 4, 4)), real, 64, real[partner])
    model_dec = base.decoder
    def drawn_fn(x, f):
        band = model_dec.draw(torch.from_numpy(f), x[:, :, :R])
        return to_uint8(composite(x, band, R, 4, 4))
    drawn = _batched(drawn_fn, real, 64, feats)
    print(f"{split}: composites {time.time()-t0:.0f}s", flush=True)
    d_real, d_swap, d_drawn = (dlib_descriptors(a) for a in (real, swap, drawn))
    print(f"{split}: descriptors {time.time()-t0:.0f}s", flush=True)
    out = dict(real=real, swap=swap, drawn=drawn, feats=feats, d_real=d_real, d_swap=d_swap, d_drawn=d_drawn, ids=ids)
    np.savez(P, **out)
    return out

tr = make_pool("train", True); va = make_pool("val", False)
print("val true distance swap", identity_distance(va["d_swap"], va["d_real"]).mean(),
      "drawn", identity_distance(va["d_drawn"], va["d_real"]).mean(), flush=True)

twin = UpperEncoder(dm.feature_dim, "timm:resnet18"); twin.load_state_dict(torch.load("/tmp/q/twin.pt"))
def t(x): return to_float(x)

def twin_check(tag):
    twin.eval()
    with torch.no_grad():
        out = {}
        for kind in ("real", "swap", "drawn"):
            pred = torch.cat([twin(t(va[kind][i:i+64])) for i in range(0, len(va[kind]), 64)]).numpy()
            true_d = identity_distance(va[f"d_{kind}"], va["d_real"])
            pred_d = np.linalg.norm(pred - va["d_real"], axis=1)
            err = np.linalg.norm(pred - va[f"d_{kind}"], axis=1).mean()
            out[kind] = (round(float(err), 4), round(float(np.corrcoef(true_d, pred_d)[0, 1]) if true_d.std() > 0 else 0, 3),
                         round(float(pred_d.mean()), 3), round(float(true_d.mean()), 3))
    print(tag, "(err to own dlib, corr pred/true dist to real, pred dist, true dist)", out, flush=True)

TW2 = "/tmp/q/twin2.pt"
twin_check("twin1")
if os.path.exists(TW2):
    twin.load_state_dict(torch.load(TW2))
else:
    E = int(os.environ.get("TWIN_EPOCHS", 4)); n = len(tr["real"]); B = 32
    opt = torch.optim.Adam(twin.parameters(), lr=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, E * (n // B))
    t0 = time.time()
    for ep in range(E):
        twin.train()
        kind = rng.integers(0, 3, n); order = rng.permutation(n)
        for s in range(0, n - B + 1, B):
            idx = order[s:s + B]; k = kind[idx]
            x = np.where((k == 0)[:, None, None, None], tr["real"][idx], np.where((k == 1)[:, None, None, None], tr["swap"][idx], tr["drawn"][idx]))
            y = np.where((k == 0)[:, None], tr["d_real"][idx], np.where((k == 1)[:, None], tr["d_swap"][idx], tr["d_drawn"][idx]))
            loss = F.mse_loss(twin(t(x)), torch.from_numpy(y))
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        print(f"twin2 epoch {ep} loss {loss.item():.5f} {time.time()-t0:.0f}s", flush=True)
        twin_check(f"twin2 ep{ep}")
    torch.save(twin.state_dict(), TW2)
twin.eval()
for p in twin.parameters(): p.requires_grad_(False)

def evaluate(dec, split):
    P = va if split == "val" else None
    from antimask.evaluation.evaluate import faces_at
    rows = dm.store.rows(split, morphs=False)
    real = faces_at(dm.store, rows, S)
    model = AntiMask(enc.encoder, dec.decoder, S, R, 4, 4)
    drawn = keep_real_rows(_batched(lambda x: to_uint8(model(x)), real, 32), real, R, 4)
    d = identity_distance(dlib_descriptors(drawn), dlib_descriptors(real))
    return dict(l1=round(float(l1(drawn, real, R).mean()), 4), ssim=round(float(ssim(drawn, real, R).mean()), 4),
                identity=round(float(d.mean()), 4))

train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(len(tr["real"]))), batch_size=32, shuffle=True)
ds = dm.dataset("train", train=True)
for arg in sys.argv[1:]:
    w, E = float(arg.split(":")[0]), int(arg.split(":")[1])
    dec = load_stage(stage_checkpoint(RUN, "mask_decoder"), "mask_decoder", dm.feature_dim); dec.train()
    opt = torch.optim.Adam(dec.decoder.parameters(), lr=2e-4)
    t0 = time.time()
    for ep in range(E):
        for (idx,) in train:
            idx = idx.numpy()
            batch = torch.utils.data.default_collate([ds[i] for i in idx])
            image, points = dec.decoder(batch["features"], batch["upper"])
            image = image.float()
            loss = 100 * F.l1_loss(image, batch["lower"]) + 10 * F.mse_loss(points.float(), batch["lower_landmarks"])
            from antimask.models.losses import ssim_loss
            loss = loss + 10 * ssim_loss(image, batch["lower"])
            if w > 0:
                comp = composite(batch["face"], image, R, 4, 4)
                idl = (twin(comp) - torch.from_numpy(tr["d_real"][idx])).norm(dim=1).mean()
                loss = loss + w * idl
            opt.zero_grad(); loss.backward(); opt.step()
        print(f"w={w} epoch {ep} loss {loss.item():.3f} {time.time()-t0:.0f}s", flush=True)
    dec.eval()
    res = {s: evaluate(dec, s) for s in ("val", "test")}
    print(arg, res, flush=True)
