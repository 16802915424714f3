"""`make bench`: run every benchmark, write docs/benchmarks.md and docs/benchmarks.json.

Benchmarks measure and record; they are not tests. ``python -m benchmarks.run [--quick] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

SUITES = ("prepare", "data", "backbones", "models", "predict", "gpu")
DOCS = Path(__file__).resolve().parents[1] / "docs"
# Between the page's title and this line: hand-written sections (comparisons across code versions, notes),
# which a rerun keeps; below it, the suites, written anew from docs/benchmarks.json.
GENERATED = "<!-- Below: written by `make bench` from docs/benchmarks.json. Hand-written sections go above. -->"
TITLE = ["# Benchmarks", "", "Written by `make bench` (`python -m benchmarks.run`); each suite says when, on which "
         "machine and at which size it last ran.", ""]


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "load_average_at_start": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (minutes, not an hour)")
    parser.add_argument("--only", nargs="*", choices=SUITES, default=list(SUITES))
    args = parser.parse_args(argv)
    info = machine()
    results: dict[str, list[dict]] = {}
    for suite in args.only:
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{suite}")
        print(f"[bench] {suite} ...", flush=True)
        results[suite] = module.run(quick=args.quick)
        print(f"[bench] {suite}: {len(results[suite])} figures in {time.perf_counter() - start:.0f} s", flush=True)
    write_docs(merge(DOCS / "benchmarks.json", results, info, args.quick))
    print(f"[bench] wrote {DOCS / 'benchmarks.md'}")
    return 0


def write_docs(record: dict, docs: Path = DOCS) -> None:
    """docs/benchmarks.json and .md from ``record``, each replaced atomically; the .md keeps its hand-written
    sections."""
    from antimask.files import atomic_write_text

    docs.mkdir(exist_ok=True)
    md = docs / "benchmarks.md"
    kept = hand_written(md.read_text()) if md.exists() else ""
    atomic_write_text(docs / "benchmarks.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(md, render(record, kept))


def hand_written(page: str) -> str:
    """The hand-written text of a benchmarks page: what lies between its title and the generated suites
    (the ``GENERATED`` line, or on a page written before it, the first suite's heading)."""
    lines = page.splitlines()
    end = next((i for i, line in enumerate(lines) if line == GENERATED or
                (line.startswith("## ") and line[3:].strip() in SUITES)), len(lines))
    start = len(TITLE) if lines[:len(TITLE)] == TITLE else 0
    return "\n".join(lines[start:end]).strip("\n")


def merge(previous_json: Path, results: dict[str, list[dict]], info: dict, quick: bool) -> dict:
    """The new record: suites run now replace their earlier figures, unless they measured nothing (the gpu
    suite on a machine without a GPU), so a CPU run never erases figures another machine recorded."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    previous = json.loads(previous_json.read_text()) if previous_json.exists() else {}
    suites = dict(previous.get("suites", {}))
    for suite, rows in results.items():
        if not rows and suites.get(suite, {}).get("rows"):
            print(f"[bench] {suite}: nothing measured on this machine; keeping the figures of "
                  f"{suites[suite]['date']} ({suites[suite]['machine'].get('gpu', '?')})")
            continue
        also = suites.get(suite, {}).get("also", [])  # figures recorded on other machines stay
        suites[suite] = {"date": now, "quick": quick, "machine": info, "rows": rows, **({"also": also} if also else {})}
    return {"date": now, "suites": {k: suites[k] for k in SUITES if k in suites}}


def render(record: dict, kept: str = "") -> str:
    """The page: title, the ``kept`` hand-written sections, then one section per suite of ``record``."""
    lines = list(TITLE) + ([kept, ""] if kept.strip() else []) + [GENERATED, ""]
    for suite, entry in record["suites"].items():
        m, rows = entry["machine"], entry["rows"]
        lines += [f"## {suite}", "",
                  f"{entry['date']}{', --quick sizes' if entry['quick'] else ''}. Machine: {m['cores']} cores, {m['cpu']}, "
                  f"GPU: {m['gpu']}; Python {m['python']}, torch {m['torch']}; load average at start "
                  f"{m['load_average_at_start']}.{' ' + entry['note'] if entry.get('note') else ''}", ""]
        lines += _table(rows) or _table([{"name": "(nothing measured on this machine)", "value": "", "unit": ""}])
        for block in entry.get("also", []):  # {"text", "rows"}: the same suite measured on another machine
            lines += [block["text"], ""] + _table(block["rows"])
    return "\n".join(lines)


def _table(rows: list[dict]) -> list[str]:
    """Markdown lines of one table of figures and a blank line; [] when there are none."""
    if not rows:
        return []
    return (["| measure | value | unit | note |", "|---|---|---|---|"]
            + [f"| {r['name']} | {r['value']} | {r['unit']} | {r.get('note', '')} |" for r in rows] + [""])


if __name__ == "__main__":
    raise SystemExit(main())
