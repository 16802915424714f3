"""The `antimask` command line: parse and validate, then call the pipeline steps.

Every command takes ``--config FILE`` and ``key=value`` overrides of the one config schema. Each command
imports what it runs when it runs (torch and Lightning take seconds to import): help, a config error
or a missing file answer at once.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

from antimask.config import SEGMENTER, STAGES, ConfigError, load_config
from antimask.errors import AntimaskError
from antimask.runs import run_config

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _config(args, extra: list[str] | None = None):
    return load_config(args.config, list(args.overrides) + list(extra or []))


def cmd_prepare(args) -> int:
    cfg = _config(args)
    from antimask.data.prepare import prepare_store, sample_sources

    if args.sample and args.sources:
        raise ConfigError("prepare: give photo folders or --sample, not both")
    sample = args.sample or not (args.sources or cfg.data.sources)
    sources = sample_sources(args.out.parent / "sample_photos") if sample else (args.sources or list(cfg.data.sources))
    summary = prepare_store(sources, args.out, cfg, progress=not args.quiet)
    print(f"store: {args.out} ({summary['aligned']} faces, {summary['rejected']} rejected; see rejected.csv)")
    return 0


def cmd_augment(args) -> int:
    cfg = _config(args)
    from antimask.data.augment import augment_store

    summary = augment_store(args.store, cfg)
    print(f"store: {args.store} ({summary.get('morphs', 0)} morphs)")
    return 0


def cmd_train(args) -> int:
    cfg = _config(args)
    from antimask.pipeline import train_segmenter, train_stage

    metrics, objects = train_segmenter(cfg) if args.stage == SEGMENTER else train_stage(cfg, args.stage)
    if objects["trainer"].is_global_zero:
        print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return 0


def cmd_train_all(args) -> int:
    cfg = _config(args)
    from antimask.pipeline import train_all

    train_all(cfg, evaluate=not args.no_eval)
    return 0


def cmd_evaluate(args) -> int:
    bad = [item for item in args.with_runs or [] if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        raise ConfigError(f"--with {bad[0]}: give NAME=RUN_DIR (the name its rows get in the report)")
    run_config(args.run_dir, args.overrides)  # a missing run or a bad override says so before torch loads
    extra = dict(item.split("=", 1) for item in args.with_runs or [])
    if args.masked:
        from antimask.evaluation.masked import evaluate_masked

        result = evaluate_masked(args.run_dir, split=args.split, name=args.name, extra_runs=extra,
                                 cfg_overrides=args.overrides)
    else:
        from antimask.evaluation.evaluate import evaluate_run

        result = evaluate_run(args.run_dir, split=args.split, name=args.name, extra_runs=extra,
                              cfg_overrides=args.overrides, progress=True)
    print(f"report: {result['paths']['report']}")
    return 0


def cmd_ablations(args) -> int:
    from antimask.ablations import run_ablations, run_improvements

    if args.improved:
        if args.config is not None:
            raise SystemExit("antimask ablations --improved uses experiments/default.yaml and improved_rows.yaml; "
                             "give changes as key=value overrides instead of --config")
        run_improvements(args.overrides, root=args.root or "runs/improvements")
    else:
        run_ablations(args.config, args.overrides, root=args.root or "runs/ablations")
    return 0


def cmd_predict(args) -> int:
    run_config(args.run_dir, args.overrides)
    from antimask.inference import cmd_predict as run

    return run(args)


def cmd_sweep(args) -> int:
    if not args.file.is_file():
        raise FileNotFoundError(f"{args.file}: sweep file not found")
    from antimask.sweeps import load_sweep, run_local, sweep_points

    if not args.local:
        sweep = load_sweep(args.file)
        print(f"{args.file}: a W&B {sweep['method']} sweep of {len(sweep_points(sweep, args.max_runs, args.seed))} "
              f"points. On W&B: `wandb sweep {args.file}`, then `wandb agent ENTITY/PROJECT/SWEEP_ID` on each "
              f"machine. Here: `antimask sweep {args.file} --local [--max-runs N] [key=value ...]`.")
        return 0
    result = run_local(args.file, base=args.out, overrides=args.overrides, max_runs=args.max_runs, seed=args.seed,
                       evaluate=not args.no_eval)
    print(f"results: {result['paths']['markdown']} and {result['paths']['csv']}")
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (only what differs from the defaults)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="antimask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="detect, landmark and align faces into a store")
    p.add_argument("sources", nargs="*", type=Path, help="photo folders or files (default: the embedded sample)")
    p.add_argument("--out", required=True, type=Path, help="store folder")
    p.add_argument("--sample", action="store_true", help="prepare the embedded sample photos")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--config")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("augment", help="add morphs of each train face with its nearest train faces")
    p.add_argument("store", type=Path)
    _add_config_args(p)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("train", help="train one stage")
    p.add_argument("stage", choices=[*STAGES, SEGMENTER], help="a paper stage, or the mask segmenter")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-all", help="prepare, augment, features, the three stages, then evaluate")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation report at the end")
    _add_config_args(p)
    p.set_defaults(func=cmd_train_all)

    p = sub.add_parser("sweep", help="run a W&B sweep file's points here, one train-all each, into one table")
    p.add_argument("file", type=Path, help="sweep YAML in W&B's format (experiments/sweeps/)")
    p.add_argument("--local", action="store_true", help="train the points on this machine (else: how to on W&B)")
    p.add_argument("--max-runs", type=int, default=None, help="first N grid points / N random draws")
    p.add_argument("--seed", type=int, default=0, help="random/bayes draws: numpy default_rng(seed)")
    p.add_argument("--out", type=Path, default=None, help="base folder of the points (default runs/sweeps/<file>)")
    p.add_argument("--no-eval", action="store_true", help="skip each point's evaluation report")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides for every point")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("evaluate", help="metrics, baselines and figures on a split: RUN_DIR/reports/")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default=None, help="default: eval.split (test)")
    p.add_argument("--name", default=None, help="name of this report (kept beside earlier ones)")
    p.add_argument("--with", dest="with_runs", action="append", metavar="NAME=RUN_DIR",
                   help="an ablation run to put in the same table (repeatable)")
    p.add_argument("--masked", action="store_true",
                   help="score on the split's faces with held-out synthetic masks drawn on (masked region, whole "
                        "face, identity to the same and to other photos); see eval.mask_region")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ablations", help="train the paper's ablations beside the main run, one combined table")
    p.add_argument("--root", default=None, type=Path, help="runs/ablations (runs/improvements with --improved)")
    p.add_argument("--improved", action="store_true",
                   help="instead: each change of the fixed-row improved model "
                        "(experiments/improved_rows.yaml) on its own, beside the paper model")
    _add_config_args(p)
    p.set_defaults(func=cmd_ablations)

    p = sub.add_parser("predict", help="complete the lower face of every face in photos")
    p.add_argument("run_dir", type=Path)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--aligned", action="store_true", help="also write the aligned and completed crops")
    p.set_defaults(func=cmd_predict)
    return parser


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string (of every sub-command) that takes a value, such as --with or --config."""
    found: set[str] = set()
    for action in parser._actions:  # argparse has no public walk over sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _value_options(sub)
        elif action.option_strings and action.nargs != 0:
            found.update(action.option_strings)
    return found


def _split_overrides(argv: list[str], value_options: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """key=value words go to the config, the rest to argparse (they may be interleaved); a word right
    after an option that takes a value (``--with NAME=RUN_DIR``) is that option's value."""
    plain, overrides = [], []
    for i, word in enumerate(argv):
        is_value = i > 0 and argv[i - 1] in value_options
        (overrides if ("=" in word and not word.startswith("-") and not is_value) else plain).append(word)
    return plain, overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    plain, overrides = _split_overrides(argv, frozenset(_value_options(parser)))
    args = parser.parse_args(plain)
    args.overrides = overrides
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"antimask: config error: {err}", file=sys.stderr)
        return 2
    except (AntimaskError, FileNotFoundError, pickle.UnpicklingError) as err:
        print(f"antimask: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
