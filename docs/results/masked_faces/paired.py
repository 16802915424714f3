"""Paired bootstrap of two methods of one `evaluate --masked` report: per face, A minus B, mean [95 % CI].

    python docs/results/masked_faces/paired.py RUN/reports/masked_test-NAME anti_mask improved_rows
"""

import sys

import numpy as np

report, a, b = sys.argv[1:4]
scores = np.load(f"{report}/per_face.npz")
rng = np.random.default_rng(0)
for metric in ("region_l1", "ssim", "identity_distance", "other_photo_distance"):
    if f"{a}/{metric}" not in scores:
        continue
    diff = scores[f"{a}/{metric}"] - scores[f"{b}/{metric}"]
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        continue
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    print(f"{metric}: {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] ({len(diff)} faces)")
