"""`make ablations`: train the paper's ablations beside the main run and put them in one table.

The main run and every ablation share one store (same photos, splits, morphs and features); each
ablation is an experiment file in ``experiments/ablations/`` (and each change of the improved model one in
``experiments/improvements/``) that changes one thing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from antimask.backbones import WeightsError
from antimask.config import load_config
from antimask.evaluation.evaluate import combine_tables, evaluate_run
from antimask.pipeline import train_all

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
ABLATIONS = ("no_landmarks", "full_face", "no_morph")


def ablation_change(name: str) -> list[str]:
    """The ``key=value`` overrides an ablation file makes (what it changes; not its base or its run folder)."""
    path = EXPERIMENTS / "ablations" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown ablation '{name}'; one of {', '.join(ABLATIONS)} ({path.parent})")

    def leaves(node: dict, prefix: str = "") -> list[str]:
        return [item for key, value in node.items()
                for item in (leaves(value, f"{prefix}{key}.") if isinstance(value, dict)
                             else [f"{prefix}{key}={json.dumps(value)}"])]

    changes = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return leaves({key: value for key, value in changes.items() if key not in ("defaults", "run")})


def ablation_config(name: str, config_file: Optional[str | Path], overrides: list[str], store: str,
                    folder: Path) -> DictConfig:
    """The main run's config (its experiment file, when given, and the overrides) with the ablation's one change,
    on the main run's store, into ``folder``."""
    return load_config(config_file or EXPERIMENTS / "default.yaml",
                       [f"data.store={store}", f"run.dir={folder}", *overrides, *ablation_change(name)])


def run_ablations(config_file: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
                  root: str | Path = "runs/ablations", names: tuple[str, ...] = ABLATIONS) -> Path:
    """Train (or resume) the main run and each ablation, evaluate them together; returns the table path."""
    root = Path(root)
    overrides = list(overrides or [])
    main = load_config(config_file or EXPERIMENTS / "default.yaml", [f"run.dir={root / 'main'}", *overrides])
    train_all(main, evaluate=False)
    runs = {}
    for name in names:
        cfg = ablation_config(name, config_file, overrides, main.data.store, root / name)
        train_all(cfg, evaluate=False)
        runs[name] = cfg.run.dir
    result = evaluate_run(main.run.dir, name="ablations", extra_runs=runs)
    table = combine_tables({"main": result["dir"]}, root / "ablations.md", methods=list(result["methods"]))
    print(f"[ablations] table: {table} (report with figures: {result['paths']['report']})")
    return table


# Each change of the fixed-row improved model (experiments/improved_rows.yaml; the run the tables call "improved")
# on its own, one file each: added to the paper's model
# ("paper+<change>", based on default.yaml) or taken out of the improved model ("improved-<change>").
# A file's top-level ``reuse_from: {stage: paper | improved}`` names the sibling run each untouched stage
# is reused from (run.reuse), so only what the change touches is trained.
IMPROVEMENTS = EXPERIMENTS / "improvements"
_REUSABLE_RUNS = ("paper", "improved")


def improvement_names() -> list[str]:
    """Additions to the paper's model first, then additions to and removals from the improved one (the table's
    order)."""
    return sorted((p.stem for p in IMPROVEMENTS.glob("*.yaml")),
                  key=lambda name: (name.startswith("improved"), name.startswith("improved-"), name))


def improvement_reuse(name: str) -> dict[str, str]:
    """{stage: "paper" | "improved"} from the improvement file's ``reuse_from``."""
    path = IMPROVEMENTS / f"{name}.yaml"
    reuse = OmegaConf.to_container(OmegaConf.load(path).get("reuse_from") or OmegaConf.create({}))
    for stage, run in reuse.items():
        if run not in _REUSABLE_RUNS:
            raise ValueError(f"{path}: reuse_from.{stage}={run!r} is not one of {', '.join(_REUSABLE_RUNS)}")
    return reuse


def run_improvements(overrides: Optional[list[str]] = None, root: str | Path = "runs/improvements",
                     names: Optional[list[str]] = None) -> Path:
    """`antimask ablations --improved`: the paper run, the fixed-row improved run (improved_rows.yaml; its face
    decoder is the paper run's, reused) and every change in ``experiments/improvements/``, evaluated together on
    the improved run's test split; returns the combined table. A change whose network files are missing (e.g.
    FaceRes before ``make face-networks``) is skipped with the reason; the others go on."""
    root = Path(root)
    overrides = list(overrides or [])
    paper_dir = root / "paper"
    paper = load_config(EXPERIMENTS / "default.yaml", [f"run.dir={paper_dir}", *overrides])
    train_all(paper, evaluate=False)

    improved_dir = root / "improved"
    improved = load_config(EXPERIMENTS / "improved_rows.yaml", [f"run.dir={improved_dir}", *overrides,
                                                            f"run.reuse.face_decoder={paper_dir}"])
    train_all(improved, evaluate=False)
    sources = {"paper": paper_dir, "improved": improved_dir}
    runs = {"paper": paper_dir}
    known = improvement_names()
    for name in names or known:
        if name not in known:
            raise ValueError(f"unknown improvement '{name}'; one of {', '.join(known)} ({IMPROVEMENTS})")
        cfg = load_config(IMPROVEMENTS / f"{name}.yaml", [f"run.dir={root / name}", *overrides,
                                                          *(f"run.reuse.{stage}={sources[run]}"
                                                            for stage, run in improvement_reuse(name).items())])
        try:
            train_all(cfg, evaluate=False)
        except WeightsError as err:
            print(f"[ablations] {name}: skipped, {str(err).splitlines()[0]}")
            continue
        runs[name] = cfg.run.dir
    result = evaluate_run(improved.run.dir, name="improvements", extra_runs=runs)
    table = combine_tables({"improved": result["dir"]}, root / "improvements.md", methods=list(result["methods"]))
    print(f"[ablations] table: {table} (report with figures: {result['paths']['report']})")
    return table
