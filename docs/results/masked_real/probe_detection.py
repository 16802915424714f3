"""Predict's face finder on the first N photos of masked_real: the share with a face, the detectors that
found them, and a contact sheet of every accepted aligned face (to judge by eye which are not faces).

python docs/results/masked_real/probe_detection.py [N] [--skip K] [--out runs/masked_real_probe] [--segmenter RUN_DIR]

The contact sheet holds crops of real people: it stays under runs/, out of the repository.

With --segmenter, every aligned crop must also pass that run's segmenter face head (what `antimask predict` does
with predict.verify_faces=true); the faces are then aligned at the segmenter's size. With --no-verify the head only
scores the crops (recorded as face_probability) and rejects none. Either way each tile shows, tinted red, the
mask region the segmenter finds (masks_found.png: the crop beside its tinted copy, to judge the masks by eye).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from antimask.config import load_config, split_row_for
from antimask.faces.finder import find_faces, skin_fraction
from antimask.faces.photos import Rejected, find_images, load_rgb

parser = argparse.ArgumentParser()
parser.add_argument("n", type=int, nargs="?", default=100)
parser.add_argument("--skip", type=int, default=0, help="start after the first K photos (a fresh sample)")
parser.add_argument("--data", default="../shared/data/masked_real")
parser.add_argument("--out", default="runs/masked_real_probe")
parser.add_argument("--segmenter", default=None, help="a run folder with a trained segmenter (its face head)")
parser.add_argument("--no-verify", action="store_true", help="score the crops with the face head, reject none")
parser.add_argument("--threshold", type=float, default=None, help="the face head's threshold (default: the run's "
                    "masks.face_threshold)")
args = parser.parse_args()

cfg = load_config(None, [])
size = 112
verifier = None
if args.segmenter:
    from antimask.inference import face_verifier
    from antimask.models.segmenter import load_segmenter
    from antimask.runs import run_config, stage_checkpoint

    from antimask.faces.compositing import tint_region
    from antimask.models.segmenter import face_probabilities, predict_regions

    segmenter = load_segmenter(stage_checkpoint(args.segmenter, "segmenter"))
    size = int(segmenter.hparams.image_size)
    if not args.no_verify:
        threshold = args.threshold if args.threshold is not None else run_config(args.segmenter).masks.face_threshold
        verifier = face_verifier(segmenter, float(threshold))
pairs = []
split_row = split_row_for(size)
photos = find_images([Path(args.data)])[args.skip: args.skip + args.n]
found, detectors, tiles, rows = 0, Counter(), [], []
started = time.perf_counter()
for path in photos:
    try:
        faces = find_faces(load_rgb(path, int(cfg.prepare.max_pixels)), cfg.predict, size, split_row,
                           verifier=verifier).faces
    except Rejected as err:
        rows.append({"photo": path.name, "faces": 0, "reason": str(err)})
        continue
    found += 1
    detectors.update(f.detector for f in faces)
    rows.append({"photo": path.name, "faces": len(faces), "detectors": [f.detector for f in faces],
                 "tiles": [len(tiles) + i for i in range(len(faces))],
                 "scores": [round(f.score, 3) for f in faces], "residuals": [round(f.residual, 2) for f in faces],
                 "skin": [round(skin_fraction(f.aligned, split_row, cfg.predict), 3) for f in faces],
                 "box_sides": [int(min(f.box[2] - f.box[0], f.box[3] - f.box[1])) for f in faces]})
    if args.segmenter:
        crops = np.stack([f.aligned for f in faces])
        rows[-1]["face_probability"] = [round(float(x), 4) for x in face_probabilities(segmenter, crops)]
        regions = predict_regions(segmenter, crops)
        rows[-1]["mask_share"] = [round(float(r.mean()), 3) for r in regions]
        for i, (crop, region) in enumerate(zip(crops, regions)):
            pair = np.hstack([crop, tint_region(crop, region)])
            pair = cv2.resize(pair, (192, 96), interpolation=cv2.INTER_AREA)
            cv2.putText(pair, f"{len(tiles) + i} {path.stem[-4:]}", (2, 92), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                        (255, 255, 0), 1, cv2.LINE_AA)
            pairs.append(pair)
    for i, face in enumerate(faces):
        tile = cv2.resize(face.aligned, (96, 96), interpolation=cv2.INTER_AREA).copy()
        label = f"{len(tiles)} {face.detector}"
        cv2.putText(tile, label, (2, 92), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
seconds = time.perf_counter() - started
cols = 12
sheet = np.full((((len(tiles) + cols - 1) // cols) * 96, cols * 96, 3), 255, np.uint8)
for i, tile in enumerate(tiles):
    r, c = divmod(i, cols)
    sheet[r * 96:(r + 1) * 96, c * 96:(c + 1) * 96] = tile
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
cv2.imwrite(str(out / "accepted_faces.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
for page in range(0, len(pairs), 30):  # 6 x 5 pairs a page, big enough to judge each mask
    chunk = pairs[page:page + 30] + [np.full_like(pairs[0], 255)] * (-len(pairs[page:page + 30]) % 6)
    grid = np.vstack([np.hstack(chunk[r:r + 6]) for r in range(0, len(chunk), 6)])
    cv2.imwrite(str(out / f"masks_found_{page // 30}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
if args.segmenter:
    probs = [x for r in rows for x in r.get("face_probability", [])]
    shares = [x for r in rows for x in r.get("mask_share", [])]
    extra = {"face_probability_median": round(float(np.median(probs)), 4) if probs else None,
             "faces_with_a_mask_over_5pct": int(sum(x > 0.05 for x in shares))}
else:
    extra = {}
summary = {**extra, "segmenter": args.segmenter, "verify": bool(verifier), "threshold": args.threshold, "photos": len(photos), "with_a_face": found, "share": round(found / max(1, len(photos)), 3),
           "faces": len(tiles), "detectors": dict(detectors), "seconds": round(seconds, 1)}
(out / "detection.json").write_text(json.dumps({"summary": summary, "photos": rows}, indent=1))
print(json.dumps(summary))
