"""`make ablations`: train the paper's ablations beside the main run and put them in one table.

The main run and every ablation share one store (same photos, splits, morphs and features); each
ablation is an experiment file in ``experiments/ablations/`` that changes one thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from antimask.config import load_config

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
ABLATIONS = ("no_landmarks", "full_face", "no_morph")


def run_ablations(config_file: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
                  root: str | Path = "runs/ablations", names: tuple[str, ...] = ABLATIONS) -> Path:
    """Train (or resume) the main run and each ablation, evaluate them together; returns the table path."""
    from antimask.evaluation.evaluate import combine_tables, evaluate_run
    from antimask.training import train_all

    root = Path(root)
    overrides = list(overrides or [])
    main = load_config(config_file or EXPERIMENTS / "default.yaml", [f"run.dir={root / 'main'}", *overrides])
    train_all(main, evaluate=False)
    runs = {}
    for name in names:
        cfg = load_config(EXPERIMENTS / "ablations" / f"{name}.yaml",
                          [f"data.store={main.data.store}", f"run.dir={root / name}", *overrides])
        train_all(cfg, evaluate=False)
        runs[name] = cfg.run.dir
    result = evaluate_run(main.run.dir, name="ablations", extra_runs=runs)
    table = combine_tables({"main": result["dir"]}, root / "ablations.md", methods=list(result["methods"]))
    print(f"[ablations] table: {table} (report with figures: {result['paths']['report']})")
    return table
