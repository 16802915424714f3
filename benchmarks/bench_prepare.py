"""Prepare throughput: photos/s with 1 and 2 workers, a re-run over the same photos, peak memory."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from antimask.config import load_config
from antimask.data.prepare import prepare_store


def _photos(n: int) -> list[Path]:
    root = Path(os.environ.get("ANTIMASK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    files = sorted((root / "utkface").iterdir())
    return files[:: max(1, len(files) // n)][:n]


def _peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def run(quick: bool = False) -> list[dict]:
    n = 200 if quick else 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for p in _photos(n):
            (photos / p.name).symlink_to(p)
        seconds = {}
        for workers in (1, 2):
            out = Path(tmp) / f"store{workers}"
            cfg = load_config(None, [f"prepare.workers={workers}"])
            start = time.perf_counter()
            prepare_store([photos], out, cfg, progress=False)
            seconds[workers] = time.perf_counter() - start
            rows.append({"name": f"prepare, {n} UTKFace photos, {workers} worker(s)", "value": round(n / seconds[workers], 1),
                         "unit": "photos/s", "note": f"{seconds[workers]:.1f} s"})
        rows.append({"name": "prepare speed-up, 2 workers vs 1", "value": round(seconds[1] / seconds[2], 2), "unit": "x",
                     "note": "target >= 1.7"})
        start = time.perf_counter()
        prepare_store([photos], Path(tmp) / "store2", load_config(None, ["prepare.workers=2"]), progress=False)
        rerun = time.perf_counter() - start
        rows.append({"name": "prepare re-run over the same photos", "value": round(seconds[2] / rerun, 1), "unit": "x faster",
                     "note": f"{rerun:.2f} s; target >= 20x"})
        rows.append({"name": "prepare peak memory (largest process)", "value": round(_peak_mib()), "unit": "MiB", "note": ""})
        shutil.rmtree(photos)
    return rows
