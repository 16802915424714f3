"""Without a segmenter, predict judges its last resort, the tight-crop box, by skin colour alone
(predict.crop_min_skin). This probe counts how often seeded uniform colour noise passes, and compares each accepted
tight crop's skin statistics with those of the real tight crops of the first N masked_real photos.

python docs/results/masked_real/probe_noise_crops.py [N] [--out docs/results/masked_real/noise_crops.json]

Per accepted tight crop: skin fraction, and the spread (std) of the skin-coloured pixels' Cr and Cb in the band
where skin is counted; the JSON keeps the quantiles and every accepted noise image's seed and size.
"""

from __future__ import annotations

import argparse
import json
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from antimask.config import Config, split_row_for
from antimask.faces import finder
from antimask.faces.photos import Rejected, load_rgb

CFG = OmegaConf.structured(Config)
OPTS = OmegaConf.to_container(CFG.predict, resolve=True)
SIZE = 224
SPLIT = split_row_for(SIZE)
SIDES = (24, 32, 48, 64, 100, 200)


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
        return _crops(load_rgb(path, int(CFG.prepare.max_pixels), int(OPTS["min_face"])))
    except Rejected:
        return []


def _noise(item: tuple[int, int]) -> list[dict]:
    seed, side = item
    crops = _crops(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))
    return [{"seed": seed, "side": side, **c} for c in crops]


def _quantiles(rows: list[dict], key: str) -> dict:
    values = np.array([r[key] for r in rows])
    qs = (0, 0.05, 0.5, 0.95, 1)
    return {f"q{int(q * 100)}": round(float(np.quantile(values, q)), 3) for q in qs} if len(values) else {}


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
        fake = [c for crops in pool.map(_noise, noise) for c in crops]
    out = {"photos": len(photos), "noise_images": len(noise), "noise_sides": SIDES,
           "real_tight_crops": len(real), "noise_accepted": len(fake),
           "real": {k: _quantiles(real, k) for k in ("skin", "chroma_spread")},
           "noise": {k: _quantiles(fake, k) for k in ("skin", "chroma_spread")}, "noise_crops": fake}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "noise_crops"}, indent=1))


if __name__ == "__main__":
    main()
