"""Predict's face finder on the first N photos of masked_real: the share with a face, the detectors that
found them, and a contact sheet of every accepted aligned face (to judge by eye which are not faces).

python docs/results/masked_real/probe_detection.py [N] [--out runs/masked_real_probe] [--segmenter RUN_DIR]

The contact sheet holds crops of real people: it stays under runs/, out of the repository.

With --segmenter, every aligned crop must also pass that run's segmenter face head (what `antimask predict` does
with predict.verify_faces=true); the faces are then aligned at the segmenter's size.
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
parser.add_argument("--data", default="../shared/data/masked_real")
parser.add_argument("--out", default="runs/masked_real_probe")
parser.add_argument("--segmenter", default=None, help="a run folder with a trained segmenter (its face head)")
args = parser.parse_args()

cfg = load_config(None, [])
size = 112
verifier = None
if args.segmenter:
    from antimask.inference import face_verifier
    from antimask.models.segmenter import load_segmenter
    from antimask.runs import run_config, stage_checkpoint

    segmenter = load_segmenter(stage_checkpoint(args.segmenter, "segmenter"))
    size = int(segmenter.hparams.image_size)
    verifier = face_verifier(segmenter, float(run_config(args.segmenter).masks.face_threshold))
split_row = split_row_for(size)
photos = find_images([Path(args.data)])[: args.n]
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
summary = {"segmenter": args.segmenter, "photos": len(photos), "with_a_face": found, "share": round(found / max(1, len(photos)), 3),
           "faces": len(tiles), "detectors": dict(detectors), "seconds": round(seconds, 1)}
(out / "detection.json").write_text(json.dumps({"summary": summary, "photos": rows}, indent=1))
print(json.dumps(summary))
