"""One-off probe (not part of the package), run from the repository root with the project venv:
   python docs/results/utkface_112/probes/identity_twin_real.py base 0:2 20:2   then   ... 200:2
Trains a "dlib twin" (timm resnet18, whole 112 px face -> the cached dlib features, 6 epochs) into /tmp/q/twin.pt,
then fine-tunes the improved run's mask decoder 2 epochs with W * (1 - cos(twin(completed), teacher features)) for each
W:EPOCHS argument and scores val/test anti-mask (dlib identity as in `antimask evaluate`). Results: identity_twin.md.
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
from antimask.evaluation.evaluate import _batched, faces_at
from antimask.faces.compositing import keep_real_rows
from antimask.faces.images import to_float, to_uint8
from antimask.evaluation.metrics import dlib_descriptors, identity_distance, l1, ssim

torch.manual_seed(0)
RUN = "runs/q112/utk/improved"
cfg = run_config(RUN)
dm = FaceDataModule(cfg, stage="mask_decoder"); dm.setup("fit"); dm.attach_features(teacher_features(cfg, dm.store))
train = torch.utils.data.DataLoader(dm.dataset("train", train=True), batch_size=32, shuffle=True)
TW = "/tmp/q/twin.pt"
twin = UpperEncoder(dm.feature_dim, "timm:resnet18")
if os.path.exists(TW):
    twin.load_state_dict(torch.load(TW))
else:
    opt = torch.optim.Adam(twin.parameters(), lr=5e-4)
    E = int(os.environ.get("TWIN_EPOCHS", 6))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, E * len(train))
    t0 = time.time()
    for ep in range(E):
        twin.train()
        for b in train:
            loss = F.mse_loss(twin(b["face"]), b["features"])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        twin.eval()
        with torch.no_grad():
            cs = [F.cosine_similarity(twin(b["face"]), b["features"]).mean().item() for b in dm.val_dataloader()]
        print(f"twin epoch {ep} loss {loss.item():.4f} val cos {np.mean(cs):.4f} {time.time()-t0:.0f}s", flush=True)
    torch.save(twin.state_dict(), TW)
twin.eval()
for p in twin.parameters(): p.requires_grad_(False)

enc = load_stage(stage_checkpoint(RUN, "encoder"), "encoder", dm.feature_dim)
split_row = dm.split_row
store = dm.store
def evaluate(dec, split):
    rows = store.rows(split, morphs=False)
    real = faces_at(store, rows, 112)
    model = AntiMask(enc.encoder, dec.decoder, 112, split_row, 4, 4)
    drawn = keep_real_rows(_batched(lambda x: to_uint8(model(x)), real, 32), real, split_row, 4)
    d = identity_distance(dlib_descriptors(drawn), dlib_descriptors(real))
    with torch.no_grad():
        tw_real = twin(to_float(real)); tw_drawn = twin(to_float(drawn))
    return dict(l1=float(l1(drawn, real, split_row).mean()), ssim=float(ssim(drawn, real, split_row).mean()),
                identity=float(d.mean()), twin_cos=float(F.cosine_similarity(tw_real, tw_drawn).mean()))

base = load_stage(stage_checkpoint(RUN, "mask_decoder"), "mask_decoder", dm.feature_dim)
results = {}
if "base" in sys.argv[1:]:
    results["base"] = {s: evaluate(base, s) for s in ("val", "test")}; print("base", results["base"], flush=True)
for arg in sys.argv[1:]:
    if arg == "base": continue
    w, E = float(arg.split(":")[0]), int(arg.split(":")[1])
    dec = load_stage(stage_checkpoint(RUN, "mask_decoder"), "mask_decoder", dm.feature_dim)
    dec.train()
    opt = torch.optim.Adam(dec.decoder.parameters(), lr=float(os.environ.get("FT_LR", 2e-4)))
    t0 = time.time()
    for ep in range(E):
        for b in train:
            loss, _ = dec.compute_losses(b)
            if w > 0:
                image, _ = dec.decoder(b["features"], b["upper"])
                completed = torch.cat([b["upper"], image.float()], 2)
                ident = 1 - F.cosine_similarity(twin(completed), b["features"]).mean()
                loss = loss + w * ident
            opt.zero_grad(); loss.backward(); opt.step()
        print(f"w={w} epoch {ep} loss {loss.item():.3f} {time.time()-t0:.0f}s", flush=True)
    dec.eval()
    results[arg] = {s: evaluate(dec, s) for s in ("val", "test")}
    print(arg, results[arg], flush=True)
json.dump(results, open(f"/tmp/q/probe_{'_'.join(sys.argv[1:])}.json", "w"), indent=1)
