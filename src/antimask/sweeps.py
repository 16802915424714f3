"""Sweeps: W&B sweep files (experiments/sweeps/*.yaml) run by `wandb agent`, or here by `antimask sweep --local`.

A sweep file is in W&B's own format; its ``command`` runs ``antimask train-all --config FILE ${args_no_hyphens}``,
so each point is a list of ``key=value`` overrides of the one config schema. Locally each point is one
train-all in ``<base>/<point name>``, and the points are gathered into one results table (markdown + CSV).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from antimask.config import STAGES, ConfigError, load_config
from antimask.evaluation.evaluate import combine_tables
from antimask.files import atomic_write_csv, atomic_write_text
from antimask.pipeline import train_all
from antimask.runs import read_manifest

SEARCHES = ("grid", "random", "bayes")
DEFAULT_RANDOM_RUNS = 8  # points a random/bayes sweep draws locally without --max-runs or run_cap


class SweepError(ConfigError):
    """A sweep file that cannot be run: unknown method, a parameter without values, no train-all command."""


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sweep file not found")
    sweep = yaml.safe_load(path.read_text()) or {}
    if sweep.get("method") not in SEARCHES:
        raise SweepError(f"{path}: method '{sweep.get('method')}' is not one of {', '.join(SEARCHES)}")
    if not sweep.get("parameters"):
        raise SweepError(f"{path}: no parameters")
    for key, spec in sweep["parameters"].items():
        if not isinstance(spec, dict) or not ({"values", "value", "min"} & set(spec)):
            raise SweepError(f"{path}: parameter '{key}' needs values, value, or min/max (W&B's sweep format)")
        if sweep["method"] == "grid" and "min" in spec:
            raise SweepError(f"{path}: grid parameter '{key}' needs a list of values, not a distribution")
    return sweep


def command_config(sweep: dict, root: str | Path) -> tuple[Optional[Path], list[str]]:
    """The ``--config FILE`` and fixed ``key=value`` words of the sweep's train-all command."""
    words = [str(w) for w in sweep.get("command", [])]
    if "train-all" not in words:
        raise SweepError("the sweep's command must run `antimask train-all ... ${args_no_hyphens}`")
    config = None
    if "--config" in words:
        name = words[words.index("--config") + 1]
        # Relative to where the agent runs (the repository root); else to the repository holding the file.
        config = Path(name) if Path(name).is_file() else Path(root) / name
    # run.dir in the command names the agent's run (${oc.env:WANDB_RUN_ID}); locally the point name does.
    fixed = [w for w in words if "=" in w and not w.startswith(("$", "-", "run.dir="))]
    return config, fixed


def _sample(spec: dict, rng) -> Any:
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][int(rng.integers(len(spec["values"])))]
    low, high = spec["min"], spec["max"]
    dist = spec.get("distribution", "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform")
    if dist == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if dist == "log_uniform":  # W&B: min/max are natural logs
        return float(math.exp(rng.uniform(low, high)))
    if dist == "int_uniform":
        return int(rng.integers(low, high + 1))
    if dist == "uniform":
        return float(rng.uniform(low, high))
    raise SweepError(f"distribution '{dist}' is not supported locally (log_uniform_values, log_uniform, "
                     "int_uniform, uniform, values)")


def sweep_points(sweep: dict, max_runs: Optional[int] = None, seed: int = 0) -> list[dict[str, Any]]:
    """The points a local sweep trains, in order.

    grid: every combination, first parameter slowest. random and bayes: ``max_runs`` (else the file's
    ``run_cap``, else 8) independent draws from numpy's ``default_rng(seed)``; locally a bayes sweep is a
    seeded random search, since its surrogate model lives on the W&B server.
    """
    params = sweep["parameters"]
    if sweep["method"] == "grid":
        grid = [[spec["value"]] if "value" in spec else list(spec["values"]) for spec in params.values()]
        points = [dict(zip(params, combo)) for combo in itertools.product(*grid)]
        return points[:max_runs] if max_runs else points
    rng = np.random.default_rng(seed)
    n = max_runs or sweep.get("run_cap") or DEFAULT_RANDOM_RUNS
    return [{key: _sample(spec, rng) for key, spec in params.items()} for _ in range(n)]


def override_value(value: Any) -> str:
    if value is None:  # a sweep's null: the schema's None (data.split_row=null), not the text "None"
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix naming each key uniquely: model.landmark_weight -> landmark_weight."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(k == suffix or k.endswith("." + suffix) for k in keys) == 1:
                out[key] = suffix
                break
    return out


def point_name(index: int, point: dict[str, Any]) -> str:
    short = _short_keys(list(point))
    parts = []
    for key, value in point.items():
        text = f"{value:.3g}" if isinstance(value, float) else override_value(value)
        parts.append(f"{short[key]}-{text}")
    return f"{index:03d}_" + "_".join(parts)


def point_overrides(point: dict[str, Any]) -> list[str]:
    return [f"{key}={override_value(value)}" for key, value in point.items()]


def _row(name: str, point: dict, folder: Path, split: str) -> dict[str, Any]:
    row: dict[str, Any] = {"point": name, **{k: override_value(v) for k, v in point.items()}}
    stages = read_manifest(folder).get("stages", {})
    for stage in STAGES:
        for metric, value in sorted(stages.get(stage, {}).get("metrics", {}).items()):
            if metric.startswith("val/"):
                row[f"{stage}:{metric}"] = value
    report = folder / "reports" / split / "metrics.json"
    if report.is_file():
        methods = json.loads(report.read_text()).get("methods", {})
        if methods:
            for metric, stats in next(iter(methods.values())).items():
                if isinstance(stats, dict) and "mean" in stats:
                    row[f"eval:{metric}"] = stats["mean"]
    return row


def write_table(rows: list[dict[str, Any]], out_md: Path, out_csv: Path, title: str) -> None:
    atomic_write_csv(out_csv, rows)
    fields = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    note = "One train-all per point; val metrics are each stage's last validation, eval:* the evaluation report's means."
    lines = [f"# Sweep {title}", "", note, "",
             "| " + " | ".join(fields) + " |", "|---" * len(fields) + "|"]
    lines += ["| " + " | ".join(cell(r.get(f)) for f in fields) + " |" for r in rows]
    atomic_write_text(out_md, "\n".join(lines) + "\n")


def run_local(sweep_file: str | Path, base: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
              max_runs: Optional[int] = None, seed: int = 0, evaluate: bool = True) -> dict[str, Any]:
    """Train every point of a sweep here, one train-all each in ``base/<point name>``; returns the table paths.

    Points already trained are skipped by train-all itself (their manifest says done), so a stopped
    sweep restarts where it stopped.
    """
    sweep_file = Path(sweep_file)
    sweep = load_sweep(sweep_file)
    config, fixed = command_config(sweep, sweep_file.resolve().parents[2])
    base = Path(base) if base is not None else Path("runs") / "sweeps" / sweep_file.stem
    rows, reports = [], {}
    points = sweep_points(sweep, max_runs, seed)
    for i, point in enumerate(points):
        name = point_name(i, point)
        folder = base / name
        print(f"[sweep] {i + 1}/{len(points)} {name}")
        cfg = load_config(config, fixed + list(overrides or []) + point_overrides(point) + [f"run.dir={folder}"])
        train_all(cfg, evaluate=evaluate)
        rows.append(_row(name, point, folder, cfg.eval.split))
        report = folder / "reports" / cfg.eval.split / "metrics.json"
        if report.is_file():
            reports[name] = report
    base.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": base / "results.md", "csv": base / "results.csv"}
    write_table(rows, paths["markdown"], paths["csv"], sweep_file.stem)
    if reports:
        paths["evaluation"] = combine_tables(reports, base / "evaluation.md")
    return {"paths": paths, "rows": rows}
