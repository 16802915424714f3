"""Without a segmenter, predict judges its last resort, the tight-crop box, by skin colour alone
(predict.crop_min_skin). This probe counts how often seeded uniform colour noise passes, and compares each accepted
tight crop's skin statistics with those of the real tight crops of the first N masked_real photos. Each noise image
takes predict's own path (a PNG read by load_rgb), so those under predict.min_face a side are refused unread.

python docs/results/masked_real/probe_noise_crops.py [N] [--out docs/results/masked_real/noise_crops.json]

Per accepted tight crop: skin fraction, and the spread (std) of the skin-coloured pixels' Cr and Cb in the band
where skin is counted. The JSON keeps the quantiles, every accepted noise image's seed and size, every real tight
crop's photo name, skin fraction and spread, and the spread's quantiles over the real crops whose skin fraction is
as low as noise's (below LOW_SKIN).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from antimask.config import Config, split_row_for
from antimask.faces import finder
from antimask.faces.photos import Rejected, load_rgb

CFG = OmegaConf.structured(Config)
OPTS = OmegaConf.to_container(CFG.predict, resolve=True)
SIZE = 224
SPLIT = split_row_for(SIZE)
SIDES = (24, 32, 48, 64, 100, 200)
LOW_SKIN = 0.4  # the accepted noise crops have skin fractions of 0.250-0.375 (600 images, 100 seeds a side)


def _chroma_spread(aligned: np.ndarray) -> float:
    cr, cb, skin = finder.skin_chroma(aligned, SPLIT, OPTS)
    return float(np.hypot(cr[skin].std(), cb[skin].std())) if skin.any() else 0.0


def _crops(image: np.ndarray) -> list[dict]:
    try:
        found = finder.find_faces(image, OPTS, SIZE, SPLIT, detectors=OPTS["detectors"], section="predict")
    except Exception:  # noqa: BLE001 - rejected or unreadable: no face
        return []
    return [{"skin": finder.skin_fraction(f.aligned, SPLIT, OPTS), "chroma_spread": _chroma_spread(f.aligned)}
            for f in found.faces if f.detector == "crop"]


def _photo(path: Path) -> list[dict]:
    try:
        crops = _crops(load_rgb(path, int(CFG.prepare.max_pixels), int(OPTS["min_face"])))
    except Rejected:
        return []
    return [{"photo": path.name, **c} for c in crops]


def _noise(item: tuple[int, int]) -> list[dict] | None:
    """A seeded noise photo through predict's own path: saved as PNG and read by load_rgb, which refuses a photo
    whose short side is under predict.min_face (None) before any detector sees it."""
    seed, side = item
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"noise_{seed}_{side}.png"
        Image.fromarray(pixels).save(path)
        try:
            image = load_rgb(path, int(CFG.prepare.max_pixels), int(OPTS["min_face"]))
        except Rejected:
            return None
    return [{"seed": seed, "side": side, **c} for c in _crops(image)]


def _quantiles(rows: list[dict], key: str) -> dict:
    values = np.array([r[key] for r in rows])
    qs = (0, 0.05, 0.5, 0.95, 1)
    return {f"q{int(q * 100)}": round(float(np.quantile(values, q)), 3) for q in qs} if len(values) else {}


def _spread_rule(real: list[dict], fake: list[dict]) -> dict:
    """What the loosest spread rule that turns away every accepted noise crop would cost: the real tight crops it
    also turns away, all of them and those whose skin fraction is as low as noise's."""
    if not fake:
        return {}
    cut = min(c["chroma_spread"] for c in fake)
    hit = [c for c in real if c["chroma_spread"] >= cut]
    return {"reject_spread_at_least": round(cut, 3), "real_rejected": len(hit),
            "real_rejected_low_skin": sum(c["skin"] < LOW_SKIN for c in hit)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=300)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--out", default="docs/results/masked_real/noise_crops.json")
    args = parser.parse_args()
    data = Path(os.environ.get("ANTIMASK_DATA", "../shared/data")) / "masked_real"
    photos = sorted(data.glob("*.jpg"))[:args.n]
    noise = [(seed, side) for seed in range(args.seeds) for side in SIDES]
    with Pool(os.cpu_count()) as pool:
        real = [c for crops in pool.map(_photo, photos, chunksize=4) for c in crops]
        judged = pool.map(_noise, noise)
    fake = [c for crops in judged if crops for c in crops]
    low = [c for c in real if c["skin"] < LOW_SKIN]
    out = {"photos": len(photos), "noise_images": len(noise), "noise_sides": SIDES,
           "noise_refused_too_small": sum(crops is None for crops in judged),
           "real_tight_crops": len(real), "noise_accepted": len(fake),
           "real": {k: _quantiles(real, k) for k in ("skin", "chroma_spread")},
           "noise": {k: _quantiles(fake, k) for k in ("skin", "chroma_spread")},
           # the joint view: real tight crops whose skin fraction is as low as noise's (below LOW_SKIN)
           "real_low_skin": {"below": LOW_SKIN, "count": len(low), "chroma_spread": _quantiles(low, "chroma_spread")},
           "spread_rule": _spread_rule(real, fake), "noise_crops": fake, "real_crops": real}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k not in ("noise_crops", "real_crops")}, indent=1))


if __name__ == "__main__":
    main()
