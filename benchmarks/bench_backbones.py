"""Backbone throughput on CPU (features/s at batch 32) and what the feature cache saves per batch.

``run(quick)`` returns rows {name, value, unit, note}; ``python benchmarks/bench_backbones.py [--quick]``
prints them as JSON lines.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from antimask.backbones import WeightsError, cached_features, create_backbone
from antimask.data.store import Table, open_store, write_group

BATCH = 32


def _faces(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 28, 28, generator=gen)
    return torch.nn.functional.interpolate(small, size=224, mode="bilinear").clamp(0, 1)


def _rate(backbone, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        backbone(x[:2])  # warm-up (allocations, lazy model load)
        start = time.perf_counter()
        for _ in range(repeats):
            backbone(x)
        return repeats * len(x) / (time.perf_counter() - start)


def _backward_rate(backbone, x: torch.Tensor, repeats: int) -> float:
    """Faces/s through forward and backward to the faces, as an identity loss runs the network."""
    backbone(x[:2].clone().requires_grad_(True)).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        backbone(x.clone().requires_grad_(True)).sum().backward()
    return repeats * len(x) / (time.perf_counter() - start)


def _store(folder: Path, n: int) -> object:
    images = (_faces(n, seed=1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    table = Table.from_records([{"row": i, "kind": "photo", "split": "train", "identity": str(i)} for i in range(n)])
    write_group(folder, images, np.zeros((n, 68, 2), np.float32), table, {})
    return open_store(folder)


def run(quick: bool = False) -> list[dict]:
    threads = torch.get_num_threads()
    batch = 8 if quick else BATCH
    repeats = 1 if quick else 2
    x = _faces(batch)
    rows = []
    specs = [("dlib", None, {}), ("vggface", "random", {}), ("timm:resnet18", "random", {})]
    backbones = {}
    for name, weights, kwargs in specs:
        backbone = backbones[name] = create_backbone(name, weights=weights, **kwargs)
        rows.append({"name": f"features_per_s/{name}", "value": round(_rate(backbone, x, repeats), 2),
                     "unit": "faces/s", "note": f"CPU, batch {batch}, {threads} threads, 224x224 input"
                                                f"{', random weights' if weights == 'random' else ''}"})
    try:  # the identity judge and loss network, when `make face-networks` has fetched it
        faceres = create_backbone("faceres")
    except WeightsError as err:
        print(f"bench_backbones: faceres skipped: {str(err).splitlines()[0]}", file=sys.stderr)
    else:
        note = f"CPU, batch {batch}, {threads} threads, 224x224 input (its 1.4x face box crop)"
        rows.append({"name": "features_per_s/faceres", "value": round(_rate(faceres, x, repeats), 2),
                     "unit": "faces/s", "note": note})
        rows.append({"name": "identity_loss_per_s/faceres", "value": round(_backward_rate(faceres, x, repeats), 2),
                     "unit": "faces/s", "note": note + ", forward + backward to the faces"})

    # A training step needs one batch of features: read them from the cache or run the backbone.
    n = 4 * batch
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp) / "store", n)
        backbone = backbones["dlib"]
        features = cached_features(store, backbone, batch_size=batch, progress=False)
        rng = np.random.default_rng(0)
        batches = [np.sort(rng.choice(n, batch, replace=False)) for _ in range(20)]
        start = time.perf_counter()
        for idx in batches:
            torch.from_numpy(np.ascontiguousarray(features[idx]))
        cached_s = (time.perf_counter() - start) / len(batches)
        idx = batches[0]
        start = time.perf_counter()
        with torch.no_grad():
            backbone(torch.from_numpy(store.images[idx]).permute(0, 3, 1, 2).float() / 255)
        online_s = time.perf_counter() - start
    rows.append({"name": "cached_batch_read/dlib", "value": round(cached_s * 1e3, 4), "unit": "ms/batch",
                 "note": f"batch {batch} random rows from the memory-mapped .npy"})
    rows.append({"name": "online_batch/dlib", "value": round(online_s * 1e3, 2), "unit": "ms/batch",
                 "note": f"batch {batch}: store rows -> dlib descriptor"})
    rows.append({"name": "cache_speedup/dlib", "value": round(online_s / max(cached_s, 1e-9), 1), "unit": "x",
                 "note": "running the backbone per batch / reading cached features per batch"})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
