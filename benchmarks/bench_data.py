"""Data-step benchmarks: neighbour search time and memory, morphs per second, loader samples per second.

``run(quick)`` returns rows {"name", "value", "unit", "note"}; ``python benchmarks/bench_data.py
[--quick]`` prints them. The scale points of the neighbour search use synthetic arrays of the real
shapes (uint8 pixels at augment.feature_size, float landmarks): the search's cost does not depend on
what the pixels show. Morphs and loaders use real UTKFace faces when ANTIMASK_DATA has them.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]


def _peak_rss_during(fn) -> tuple[float, float, object]:
    """(seconds, peak RSS growth in MiB above the start, result) of fn(), RSS sampled every 20 ms."""
    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    peak = [start_rss]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    return seconds, (peak[0] - start_rss) / 2 ** 20, result


def bench_neighbors(sizes: list[int], feature_size: int = 64, k: int = 10, chunk_mb: int = 256) -> list[dict]:
    from antimask.data.neighbors import neighbors_from_features
    from antimask.faces.align import template

    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        pixels = rng.integers(0, 256, (n, 3 * feature_size ** 2), dtype=np.uint8)
        lmk = (template(224)[None] + rng.normal(0, 3, (n, 68, 2))).reshape(n, 136)
        seconds, peak_mb, _ = _peak_rss_during(lambda: neighbors_from_features(lmk, pixels, k, 10.0, chunk_mb))
        note = f"synthetic arrays of real shapes, feature_size={feature_size}, k={k}, chunk_mb={chunk_mb}"
        rows.append({"name": f"neighbors_{n}_seconds", "value": round(seconds, 2), "unit": "s", "note": note})
        rows.append({"name": f"neighbors_{n}_peak_mb", "value": round(peak_mb + pixels.nbytes / 2 ** 20, 1),
                     "unit": "MiB", "note": "RSS growth during the search plus the uint8 pixel array"})
    return rows


def _real_faces(n: int):
    sys.path[:0] = [str(REPO / "tests")]
    from real_faces import align_photos

    data = Path(os.environ.get("ANTIMASK_DATA", REPO.parent / "shared" / "data")) / "utkface"
    files = sorted(p for p in data.iterdir() if p.name.split("_")[0].isdigit() and int(p.name.split("_")[0]) >= 18)
    return align_photos(files[::20][:n])


def bench_morph(images: np.ndarray, landmarks: np.ndarray, count: int) -> list[dict]:
    from antimask.data.morph import morph

    n = len(images)
    t0 = time.perf_counter()
    for i in range(count):
        morph(images[i % n], landmarks[i % n], images[(i + 1) % n], landmarks[(i + 1) % n], 0.5)
    rate = count / (time.perf_counter() - t0)
    return [{"name": "morphs_per_second", "value": round(rate, 1), "unit": "morph/s",
             "note": f"one process, 224 px real faces, {count} morphs"}]


def bench_loader(store_root: Path, sizes: list[int], workers: list[int], batches: int) -> list[dict]:
    from antimask.config import load_config
    from antimask.data.datamodule import FaceDataModule, unpack_batch
    from antimask.pipeline import prepare_data

    rows = []
    for size in sizes:
        for w in workers:
            cfg = load_config(overrides=[f"data.store={store_root}", f"data.image_size={size}",
                                         f"data.num_workers={w}", "data.batch_size=32", "augment.enabled=false"])
            prepare_data(cfg)
            dm = FaceDataModule(cfg)
            dm.setup("fit")
            loader = dm.train_dataloader()
            seen, t0 = 0, None
            for epoch in range(100):
                for batch in loader:
                    batch = unpack_batch(batch, dm.split_row)  # the device's share (on_after_batch_transfer)
                    if t0 is None:  # the first batch pays for worker start-up
                        t0 = time.perf_counter()
                        continue
                    seen += len(batch["row"])
                    if seen >= batches * 32:
                        break
                if seen >= batches * 32:
                    break
            rate = seen / (time.perf_counter() - t0)
            rows.append({"name": f"loader_{size}px_{w}workers", "value": round(rate, 1), "unit": "samples/s",
                         "note": "train loader + unpack_batch on the CPU, batch 32, after the first batch"})
    return rows


def run(quick: bool = False) -> list[dict]:
    rows = bench_neighbors([1000] if quick else [1000, 5000, 23708])
    images, landmarks, names = _real_faces(40 if quick else 120)
    rows += bench_morph(images, landmarks, 50 if quick else 300)
    with tempfile.TemporaryDirectory() as tmp:
        from real_faces import write_store  # importable once _real_faces has set the path

        root = write_store(Path(tmp) / "store", images, landmarks, names, ["train"] * len(images))
        rows += bench_loader(root, [112, 224], [0, 2], 5 if quick else 30)
    rows.append({"name": "max_rss_mb", "value": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                 "unit": "MiB", "note": "whole benchmark process"})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['name']:32s} {row['value']:>10} {row['unit']:10s} {row['note']}")
