"""The evaluation report: one markdown table (methods side by side, mean and 95 % CI per metric),
metrics.json with every per-face value, and the PNG figures. A previous report is never overwritten."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from antimask.config import EvalConfig, split_row_for
from antimask.evaluation import figures
from antimask.evaluation.metrics import bootstrap_ci, random_pair_cosine
from antimask.files import atomic_write_json, atomic_write_text

# name -> (what the table calls it, whether higher is better); unknown metric names are still reported.
METRICS: dict[str, tuple[str, bool]] = {
    "l1_lower": ("L1, lower band", False),
    "l1_face": ("L1, whole face", False),
    "psnr_lower": ("PSNR (dB), lower band", True),
    "psnr_face": ("PSNR (dB), whole face", True),
    "ssim_lower": ("SSIM, lower band", True),
    "ssim_face": ("SSIM, whole face", True),
    "cosine": ("teacher-feature cosine, drawn vs real", True),
    "identity_distance": ("identity distance (dlib descriptors)", False),
    "judge_distance": ("identity distance under the independent judge (1 - cosine)", False),
    "verified": ("verified as the same person (share)", True),
    "landmark_error": ("lower landmark error / inter-ocular", False),
}
RANDOM_PAIR = "cosine_random_pair"
# The first of these that a method has picks its worst cases.
WORST_BY = ("identity_distance", "cosine", "l1_lower")


def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "n/a" if x is None or math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.4g}"


def _cell(stats: dict[str, float]) -> str:
    if math.isnan(stats["low"]):
        return f"{_fmt(stats['mean'])} (n={stats['n']})"
    return f"{_fmt(stats['mean'])} [{_fmt(stats['low'])}, {_fmt(stats['high'])}]"


def _summary(values: np.ndarray, eval_cfg: Any, seed: int) -> dict[str, Any]:
    v = np.asarray(values, np.float64).reshape(-1)
    mean, low, high = bootstrap_ci(v, eval_cfg.bootstrap, seed, method=eval_cfg.ci_method)
    return {"mean": mean, "low": low, "high": high, "n": int(np.isfinite(v).sum()),
            "n_not_finite": int((~np.isfinite(v)).sum()), "values": [float(x) for x in v]}


def _fresh_dir(out_dir: Path, name: Optional[str]) -> Path:
    """out_dir itself when absent or empty; else a sibling named after ``name`` (numbered when that is taken
    too) or the time, never an existing folder (mkdir without exist_ok, so two concurrent reports cannot share
    one)."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir
    if name and out_dir.name.endswith(f"-{name}"):  # already named: the next free number
        stem = out_dir.name
    else:
        stem = f"{out_dir.name}-{name}" if name else f"{out_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1000):
        candidate = out_dir.parent / (stem if k == 0 else f"{stem}-{k}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not find a free report folder beside {out_dir}")


def report_dir(run_dir: Path, folder: str, name: Optional[str]) -> Path:
    """Where a run's report goes: ``RUN/reports/<folder>``, or ``<folder>-<name>`` when it is given a name."""
    return Path(run_dir) / "reports" / (f"{folder}-{name}" if name else folder)


def write_report(out_dir: str | Path, results: dict[str, dict[str, Any]], context: dict[str, Any],
                 eval_cfg: Any = None) -> dict[str, Path]:
    """Write report.md, metrics.json and the figures; return {what: path} of every file written.

    ``results`` maps a method name (the model first, e.g. "antimask", then "telea", "mean_face", ...)
    to a dict:

    - ``"metrics"``: {metric name: per-face values (N,)}; known names are those of ``METRICS``
      (l1_lower, l1_face, psnr_lower, psnr_face, ssim_lower, ssim_face, cosine, identity_distance,
      verified (0/1 per face), landmark_error); other names are reported under their own name.
    - ``"drawn"`` (optional): the method's faces uint8 (N, S, S, 3), for the grid and worst cases.
    - ``"features"`` (optional): teacher features of its drawn faces (N, D), for the feature figure.

    ``context`` (every key optional):

    - ``backbone`` (str): the teacher network giving the features; ``identity_network`` (str,
      default "dlib"): the network measuring identity. When they are the same, the report says so.
    - ``split`` (str), ``n_faces`` (int; default the length of the first metric), ``name`` (str: the
      folder suffix used when ``out_dir`` already holds a report), ``seed`` (int, default 0).
    - ``split_row`` (int; default from the face size), ``real`` (N, S, S, 3) real faces, ``masked``
      (N, S, S, 3; default the real faces with rows >= split_row blacked out), ``yaw`` (N,) degrees.
    - ``identities`` (N,) identity labels and ``real_features`` (N, D) teacher features of the real
      faces: together they give the random-pair cosine (two different identities), or pass
      ``random_pair_cosine`` (P,) precomputed. ``drawn_features`` {method: (N, D)} is an alternative
      to results[method]["features"].
    - ``loss_csv`` {stage: path of a Lightning CSVLogger metrics.csv} (columns epoch,
      train/loss_epoch or train/loss, val/loss): the loss-per-epoch figure.
    - ``worst_method`` / ``worst_metric``: whose faces and which metric the worst-case figure shows
      (default: the first method with drawn faces; the first of identity_distance, cosine, l1_lower).
    - ``config`` (dict): the resolved run config, stored in metrics.json.

    ``eval_cfg`` is the ``eval`` config section (bootstrap, ci_method, random_pairs, grid_faces,
    worst_faces, verify_threshold); schema defaults when None.

    If ``out_dir`` exists and is not empty, the report goes to ``<out_dir>-<name or timestamp>``
    beside it; the returned ``"dir"`` says where.
    """
    eval_cfg = eval_cfg if eval_cfg is not None else EvalConfig()
    seed = int(context.get("seed", 0))
    out = _fresh_dir(Path(out_dir), context.get("name"))
    paths: dict[str, Path] = {"dir": out}
    methods = list(results)

    summaries: dict[str, dict[str, dict[str, Any]]] = {
        m: {k: _summary(v, eval_cfg, seed) for k, v in results[m].get("metrics", {}).items()} for m in methods}
    metric_names = [k for k in METRICS if any(k in summaries[m] for m in methods)]
    metric_names += sorted({k for m in methods for k in summaries[m]} - set(metric_names))

    random_pair = context.get("random_pair_cosine")
    if random_pair is None and context.get("real_features") is not None and context.get("identities") is not None:
        random_pair = random_pair_cosine(context["real_features"], context["identities"], eval_cfg.random_pairs, seed)
    random_summary = _summary(random_pair, eval_cfg, seed) if random_pair is not None and len(random_pair) else None

    backbone = context.get("backbone")
    identity_network = context.get("identity_network", "dlib")
    same_network = backbone is not None and str(backbone).split(":")[0] == str(identity_network)
    first = next((v for m in methods for v in results[m].get("metrics", {}).values()), np.zeros(0))
    n_faces = int(context.get("n_faces", len(first)))

    # ---- figures
    real = context.get("real")
    drawn = {m: results[m]["drawn"] for m in methods if results[m].get("drawn") is not None}
    if real is not None:
        real = np.asarray(real)
        split_row = int(context.get("split_row") or split_row_for(real.shape[1]))
        masked = context.get("masked")
        masked = figures.masked_faces(real, split_row) if masked is None else np.asarray(masked)
        shown = list(eval_cfg.get("grid_methods") or [])
        unknown = [m for m in shown if m not in drawn]
        if unknown:
            raise ValueError(f"eval.grid_methods names {unknown}, not methods of this report ({', '.join(drawn)})")
        grid = {m: drawn[m] for m in shown} if shown else drawn
        paths["faces_grid"] = figures.face_grid(out / "faces_grid.png", real, masked, grid, eval_cfg.grid_faces)
    if context.get("loss_csv"):
        paths["loss_curves"] = figures.loss_curves(out / "loss_per_epoch.png", context["loss_csv"])
    drawn_features = dict(context.get("drawn_features") or {})
    drawn_features.update({m: results[m]["features"] for m in methods if results[m].get("features") is not None})
    if context.get("real_features") is not None and drawn_features:
        paths["features"] = figures.feature_values(out / "features_drawn_vs_real.png",
                                                   np.asarray(context["real_features"]), drawn_features)
    worst_method = context.get("worst_method") or next(iter(drawn), None)
    if real is not None and worst_method in drawn:
        have = results[worst_method].get("metrics", {})
        worst_metric = context.get("worst_metric") or next((k for k in WORST_BY if k in have), None)
        if worst_metric in have:
            higher = METRICS.get(worst_metric, (worst_metric, False))[1]
            paths["worst_cases"] = figures.worst_cases(
                out / "worst_cases.png", real, drawn[worst_method], have[worst_metric], worst_metric,
                eval_cfg.worst_faces, higher, context.get("yaw"))

    # ---- report.md
    lines = [f"# Anti-Mask evaluation{': ' + str(context['name']) if context.get('name') else ''}", ""]
    judge = context.get("judge")
    info = [("backbone", backbone), ("identity network", identity_network),
            ("independent identity judge", f"{judge} (not the teacher; judge_distance)" if judge else None),
            ("split", context.get("split")),
            ("faces", n_faces), ("split row", context.get("split_row"))]
    lines += [f"- {k}: {v}" for k, v in info if v is not None]
    trained, evaluated = context.get("trained_on_store"), context.get("evaluated_on_store")
    if trained and evaluated and Path(trained).resolve() != Path(evaluated).resolve():
        lines.append(f"- cross-dataset: the models were trained on {trained} and are evaluated on the "
                     f"'{context.get('split')}' split of {evaluated}; the baselines are fit on its train split")
    lines += [f"- 95 % confidence intervals: {eval_cfg.ci_method} bootstrap, {eval_cfg.bootstrap} resamples, "
              f"seed {seed}", f"- verified: dlib descriptor distance < {eval_cfg.verify_threshold}", ""]
    if same_network:
        lines += ["> Note: identity is measured with the same network that gives the features "
                  f"({identity_network}), so identity metrics favour methods trained on those features"
                  + (f"; the independent judge {judge} does not." if judge else "."), ""]
    if context.get("judge_note"):
        lines += [f"> {context['judge_note']}", ""]
    header = "| metric | " + " | ".join(methods) + " |"
    lines += [header, "|---" * (len(methods) + 1) + "|"]
    for k in metric_names:
        label, higher = METRICS.get(k, (k, None))
        if k == "judge_distance" and judge:
            label = f"identity distance, {judge} (independent judge: 1 - cosine)"
        arrow = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
        cells = [_cell(summaries[m][k]) if k in summaries[m] else "-" for m in methods]
        lines.append(f"| {label}{arrow} | " + " | ".join(cells) + " |")
        if k == "cosine" and random_summary is not None:
            lines.append("| cosine, random pair of different identities (chance level) | "
                         + " | ".join(_cell(random_summary) for _ in methods) + " |")
    if "cosine" not in metric_names and random_summary is not None:
        lines.append("| cosine, random pair of different identities (chance level) | "
                     + " | ".join(_cell(random_summary) for _ in methods) + " |")
    skipped = {k: s["n_not_finite"] for m in methods for k, s in summaries[m].items() if s["n_not_finite"]}
    if skipped:
        lines += ["", "Non-finite per-face values (e.g. PSNR of an exact copy) are left out of the means: "
                  + ", ".join(f"{k}" for k in sorted(skipped)) + "."]
    figure_names = {"faces_grid": "Test faces: real | masked | each method",
                    "loss_curves": "Loss per epoch per stage",
                    "features": "Teacher features of one face, drawn vs real",
                    "worst_cases": "Worst cases, with their yaw"}
    shown = [k for k in figure_names if k in paths]
    if shown:
        lines += ["", "## Figures", ""]
        for k in shown:
            lines += [f"### {figure_names[k]}", "", f"![{figure_names[k]}]({paths[k].name})", ""]
    paths["report"] = atomic_write_text(out / "report.md", "\n".join(lines).rstrip() + "\n")

    # ---- metrics.json
    scalars = {k: v for k, v in context.items() if isinstance(v, (str, int, float, bool)) or v is None}
    data = {"context": {**scalars, "n_faces": n_faces, "identity_network": identity_network,
                        "same_network_for_identity_and_features": same_network},
            "eval": {k: getattr(eval_cfg, k) for k in ("bootstrap", "ci_method", "verify_threshold", "random_pairs")},
            "methods": summaries, RANDOM_PAIR: random_summary,
            "figures": {k: str(p.name) for k, p in paths.items() if k in figure_names}}
    if context.get("config") is not None:
        data["config"] = context["config"]
    paths["metrics"] = atomic_write_json(out / "metrics.json", _json_safe(data))
    return paths


def _json_safe(value: Any) -> Any:
    """NaN and inf are not JSON; they become null (NaN) or the strings "inf" / "-inf"."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        x = float(value)
        return None if math.isnan(x) else (("inf" if x > 0 else "-inf") if math.isinf(x) else x)
    if isinstance(value, np.integer):
        return int(value)
    return value
