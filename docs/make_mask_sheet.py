"""Draw docs/synthetic_masks.png: code-drawn masks (antimask.faces.masks) on 24 real aligned UTKFace faces.

Every family once, then more draws; a title under each face names its family, and (held out) marks the
families evaluation keeps apart. The dashed line is the paper's split row. Needs the photos under
ANTIMASK_DATA (../shared/data by default).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import adult_utkface, data_root
from real_faces import align_photos

from antimask.faces.masks import FAMILIES, HELD_OUT_STYLES, draw_mask, sample_style

SIZE, N, COLUMNS = 224, 24, 6


def main(out: Path = Path(__file__).with_name("synthetic_masks.png"), seed: int = 0) -> None:
    faces, landmarks, _ = align_photos(adult_utkface(data_root() / "utkface", N + 6, start=3), SIZE)
    families = list(FAMILIES)
    rng = np.random.default_rng(seed)
    order = families + [families[int(i)] for i in rng.permutation(len(families))[: N - len(families)]]
    tiles = []
    for i, family in enumerate(order[:N]):
        style = sample_style(rng, (family,))
        masked, _ = draw_mask(faces[i], landmarks[i], style)
        tile = cv2.cvtColor(masked, cv2.COLOR_RGB2BGR)
        row = round(96 * SIZE / 224)
        for x in range(0, SIZE, 8):
            cv2.line(tile, (x, row), (x + 3, row), (0, 255, 255), 1)
        label = np.full((22, SIZE, 3), 255, np.uint8)
        name = family + (" (held out)" if family in HELD_OUT_STYLES else "")
        cv2.putText(label, name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([tile, label]))
    rows = [np.hstack(tiles[r * COLUMNS:(r + 1) * COLUMNS]) for r in range(len(tiles) // COLUMNS)]
    cv2.imwrite(str(out), np.vstack(rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
