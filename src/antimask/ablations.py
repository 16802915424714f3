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


# Each change of experiments/improved.yaml on its own: added to the paper's model (experiments/default.yaml),
# or taken out of the improved model ("improved-<change>"). {stage: "paper" | "improved"} names the run each
# untouched stage is reused from (run.reuse), so only what the change touches is trained.
_PAPER_FACE_ENCODER = {"face_decoder": "paper", "encoder": "paper"}
IMPROVEMENTS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "paper+seam_colour": ("default", ["model.seam_colour_rows=4"],
                          {"face_decoder": "paper", "mask_decoder": "paper", "encoder": "paper"}),
    "paper+ssim_loss": ("default", ["model.ssim_weight=10.0"], _PAPER_FACE_ENCODER),
    "paper+cosine_lr": ("default", ["stages.mask_decoder.scheduler=cosine"], _PAPER_FACE_ENCODER),
    "paper+landmark_warp": ("default", ["model.landmark_warp=true"], _PAPER_FACE_ENCODER),
    "paper+adversarial": ("default", ["model.adversarial_weight=1.0"], _PAPER_FACE_ENCODER),
    "paper+timm_encoder": ("default", ["model.encoder=timm:resnet18", "data.photometric=true"],
                           {"face_decoder": "paper", "mask_decoder": "paper", "encoder": "improved"}),
    "improved-unet": ("improved", ["model.decoder=paper"], {"face_decoder": "improved", "encoder": "improved"}),
    "improved-timm_encoder": ("improved", ["model.encoder=vgg", "data.photometric=false"],
                              {"face_decoder": "improved", "mask_decoder": "improved", "encoder": "paper"}),
}


def run_improvements(overrides: Optional[list[str]] = None, root: str | Path = "runs/improvements",
                     names: Optional[list[str]] = None) -> Path:
    """`antimask ablations --improved`: the paper run, the improved run (its face decoder is the paper
    run's, reused) and every change of ``IMPROVEMENTS``, evaluated together on the improved run's test
    split; returns the combined table."""
    from antimask.evaluation.evaluate import combine_tables, evaluate_run
    from antimask.training import train_all

    root = Path(root)
    overrides = list(overrides or [])
    paper_dir = root / "paper"
    paper = load_config(EXPERIMENTS / "default.yaml", [f"run.dir={paper_dir}", *overrides])
    train_all(paper, evaluate=False)

    improved_dir = root / "improved"
    improved = load_config(EXPERIMENTS / "improved.yaml", [f"run.dir={improved_dir}", *overrides,
                                                            f"run.reuse.face_decoder={paper_dir}"])
    train_all(improved, evaluate=False)
    sources = {"paper": paper_dir, "improved": improved_dir}
    runs = {"paper": paper_dir}
    for name in names or list(IMPROVEMENTS):
        if name not in IMPROVEMENTS:
            raise ValueError(f"unknown improvement '{name}'; one of {', '.join(IMPROVEMENTS)}")
        base, change, reused = IMPROVEMENTS[name]
        cfg = load_config(EXPERIMENTS / f"{base}.yaml", [f"run.dir={root / name}", *overrides, *change,
                                                         *(f"run.reuse.{stage}={sources[run]}"
                                                           for stage, run in reused.items())])
        train_all(cfg, evaluate=False)
        runs[name] = cfg.run.dir
    result = evaluate_run(improved.run.dir, name="improvements", extra_runs=runs)
    table = combine_tables({"improved": result["dir"]}, root / "improvements.md", methods=list(result["methods"]))
    print(f"[ablations] table: {table} (report with figures: {result['paths']['report']})")
    return table
