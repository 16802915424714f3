"""The run folder: its saved config, its manifest of finished stages, and whether a stage may be reused.

A run folder holds every stage of one experiment::

    RUN/config.yaml  RUN/manifest.json
    RUN/<stage>/checkpoints/{best,last}.ckpt  RUN/<stage>/metrics.csv  RUN/<stage>/images/

Stages hand over through ``manifest.json`` (checkpoint paths, store digest, config hash, metrics),
never through an implicit "latest" lookup. Training writes it (rank 0 only); evaluation and inference
read it from here, so this module sits below all three.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from antimask.config import SEGMENTER, STAGES, apply_overrides, config_hash, load_config, save_config, schema
from antimask.errors import AntimaskError
from antimask.files import atomic_path, atomic_write_json, read_json


class ManifestError(AntimaskError, RuntimeError):
    """A run folder whose manifest lacks a stage another stage needs, or points outside the run."""


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.dir)


def stage_dir(cfg: DictConfig, stage: str) -> Path:
    return run_dir(cfg) / stage


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    return read_json(path) if path.exists() else {"stages": {}}


def safe_path(folder: str | Path, relative: str) -> Path:
    """A path from a manifest, resolved inside the run folder; anything pointing outside is refused."""
    root = Path(folder).resolve()
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise ManifestError(f"{Path(folder) / 'manifest.json'}: path '{relative}' points outside the run folder {root}")
    return path


def launch_dir(folder: str | Path, cfg: DictConfig) -> Path:
    """The folder training was started in: the relative paths of a run's config are relative to it.

    A run folder records ``run.dir`` as it was given; when the folder's real path ends with it (the usual
    case, also after moving a project with its ``runs/``), what precedes it is where training ran. Otherwise
    the manifest's record of the training folder, and failing that the current folder.
    """
    recorded = Path(os.path.normpath(str(cfg.run.dir)))
    real = Path(folder).resolve()
    if not recorded.is_absolute() and recorded.parts and real.parts[-len(recorded.parts):] == recorded.parts:
        return Path(*real.parts[:-len(recorded.parts)])
    workdir = read_manifest(folder).get("workdir")
    return Path(workdir) if workdir and Path(workdir).is_dir() else Path.cwd()


def resolve_from(base: Path, path: Optional[str]) -> Optional[str]:
    """``path`` made absolute against ``base`` when it is relative (None stays None)."""
    if path is None or Path(path).is_absolute():
        return path
    return str(base / path)


# Paths in a run's config that evaluation and inference open (training resolves nothing: it runs where it was started).
_RUN_PATHS = ("data.store", "backbone.weights", "model.perceptual_weights")


def run_config(folder: str | Path, overrides: Optional[list[str]] = None) -> DictConfig:
    """The resolved config a run was trained with (RUN/config.yaml), with ``key=value`` overrides.

    Relative paths the run opens (its store, weights files) are resolved against the folder training ran
    in, so ``antimask evaluate /elsewhere/runs/default`` finds ``runs/store`` beside it from any folder.
    An override of such a path is taken as given (relative to the current folder).
    """
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {folder} is not a trained run folder "
                                "(train it with `antimask train-all run.dir=...`)")
    saved = load_config(path)
    base = launch_dir(folder, saved)
    overridden = {text.split("=", 1)[0].strip() for text in overrides or []}
    resolved = [f"{key}={resolve_from(base, OmegaConf.select(saved, key))}" for key in _RUN_PATHS
                if key not in overridden and OmegaConf.select(saved, key) is not None]
    return apply_overrides(saved, resolved + list(overrides or []))


def trained_store(folder: str | Path, cfg: DictConfig) -> Optional[Path]:
    """The store the manifest says the run was trained on, resolved like ``run_config``'s paths."""
    store = read_manifest(folder).get("store")
    return None if store is None else Path(resolve_from(launch_dir(folder, load_config(Path(folder) / "config.yaml")),
                                                        store)).resolve()


def stage_checkpoint(folder: str | Path, stage: str, which: str = "best") -> Path:
    """The checkpoint a finished stage recorded in the manifest."""
    manifest = read_manifest(folder)
    entry = manifest.get("stages", {}).get(stage)
    if not entry or entry.get("status") != "done":
        raise ManifestError(
            f"{Path(folder) / 'manifest.json'}: stage '{stage}' has not finished in this run; "
            f"train it first with `antimask train {stage} run.dir={folder}`")
    path = safe_path(folder, entry[f"{which}_checkpoint"])
    if not path.exists():
        raise ManifestError(f"{path}: checkpoint of stage '{stage}' listed in the manifest is missing")
    return path


def update_manifest(cfg: DictConfig, stage: str, entry: dict, store_digest: str,
                    split_digest: Optional[str] = None) -> dict:
    folder = run_dir(cfg)
    manifest = read_manifest(folder)
    manifest.update({"config_hash": config_hash(cfg), "store": str(Path(cfg.data.store)), "store_digest": store_digest,
                     "workdir": os.getcwd()})
    if split_digest:
        manifest["split_digest"] = split_digest
    manifest.setdefault("stages", {})[stage] = entry
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


# ------------------------------------------------------------------------------- resuming a stage

def resume_path(cfg: DictConfig, stage: str, under_slurm: bool = False) -> Optional[str]:
    """trainer.ckpt_path: None, "last" (the newer of last.ckpt and a SLURM hpc_ckpt_N.ckpt), "hpc" or a file."""
    wanted = cfg.trainer.ckpt_path
    folder = stage_dir(cfg, stage)
    hpc = sorted(folder.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if wanted is None:
        # Lightning restores hpc_ckpt_N.ckpt itself when ckpt_path is None under SLURM; say so explicitly.
        return str(hpc[-1]) if hpc and under_slurm else None
    if wanted == "last":
        # last-v1.ckpt, ...: Lightning's name for the last checkpoint of a fit started afresh in a folder that
        # already held one; a requeued job's hpc checkpoint is written mid-epoch, after the last epoch-end one.
        found = hpc[-1:] + sorted((folder / "checkpoints").glob("last*.ckpt"))
        return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None
    if wanted == "hpc":
        return str(hpc[-1]) if hpc else None
    return str(wanted)


def read_metrics(path: Path) -> list[dict]:
    """A stage's metrics.csv as rows (none when it does not exist)."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------- was it trained with this?

# Keys that do not change what a stage learns; a finished stage is reused when only these differ.
_NOT_RESULTS = ("trainer.ckpt_path", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.accelerator",
                "trainer.requeue_max_wait_s", "trainer.log_every_n_steps", "trainer.image_log_every_n_epochs",
                "data.num_workers", "data.pin_memory", "data.persistent_workers", "data.device_resident",
                "data.device_memory_fraction", "prepare.workers", "augment.workers", "wandb", "run.name",
                "run.reuse", "run.dir", "eval", "backbone.workers", "trainer.cudnn_benchmark", "trainer.channels_last",
                "trainer.compile", "trainer.compile_mode", "predict", "masks.face_threshold",
                # memory and batching of steps whose outputs are cached and checked by their own digests
                "augment.chunk_mb", "prepare.chunk", "backbone.batch_size",
                *(f"stages.{stage}.fused_adam" for stage in (*STAGES, SEGMENTER)))
# Keys of _NOT_RESULTS that counted in earlier versions, newest change first: the hash of era N (1, 2, ...) counts
# the keys of the first N groups. Stages finished then carry such a hash; they still count as trained with a
# config that differs only in keys that no longer count.
_COUNTED_BEFORE = (("augment.chunk_mb", "prepare.chunk", "backbone.batch_size"),  # until 2026-11-30, 7th session
                   ("predict", "masks.face_threshold"))  # until 2026-11-30, 4th session
HASH_ERAS = len(_COUNTED_BEFORE) + 1


def results_hash(cfg: DictConfig, era: int = 0) -> str:
    """The hash of the keys that change what a stage learns; ``era`` N > 0: as stages finished before the N newest
    changes of _NOT_RESULTS computed it (the keys of _COUNTED_BEFORE's first N groups counted then)."""
    counted = {key for group in _COUNTED_BEFORE[:era] for key in group}
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_RESULTS:
        if key in counted:
            continue
        *parents, leaf = key.split(".")
        holder = plain
        for part in parents:
            holder = holder.get(part, {})
        holder.pop(leaf, None)
    return config_hash(OmegaConf.create(plain))


def _trained_before_new_keys(cfg: DictConfig, folder: Path, trained_hash: str) -> bool:
    """A stage finished before keys were added to the schema has a hash over fewer keys (or, in an earlier era
    of _NOT_RESULTS, over keys that no longer count). It still counts as trained with ``cfg`` when the run's saved
    config is the one it was trained with (same hash, either way), ``cfg`` agrees with it on every
    results key it has, and leaves each key it lacks at the schema's default."""
    path = folder / "config.yaml"
    saved = OmegaConf.load(path) if path.is_file() else None
    if saved is None or trained_hash not in {results_hash(saved, era) for era in range(HASH_ERAS)}:
        return False

    def restrict(mine: dict, theirs: dict, default: dict) -> Optional[dict]:
        """``mine`` on the keys of ``theirs``; None if a key ``theirs`` lacks is away from its default."""
        kept = {}
        for key, value in mine.items():
            if key not in theirs:
                if default.get(key, object()) != value:
                    return None
            elif isinstance(value, dict) and isinstance(theirs[key], dict):
                kept[key] = restrict(value, theirs[key], default.get(key) or {})
                if kept[key] is None:
                    return None
            else:
                kept[key] = value
        return kept

    kept = restrict(OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_container(saved, resolve=True),
                    OmegaConf.to_container(schema(), resolve=True))
    return kept is not None and results_hash(OmegaConf.create(kept)) == results_hash(saved)


def trained_with(cfg: DictConfig, folder: Path, trained_hash: Optional[str]) -> bool:
    """Whether a stage (or checkpoint) with ``trained_hash`` counts as trained with ``cfg``."""
    return trained_hash == results_hash(cfg) or _trained_before_new_keys(cfg, folder, trained_hash)


def finished_stage(cfg: DictConfig, stage: str) -> Optional[dict]:
    """The manifest entry of ``stage`` when it finished with this config (None when it has not finished);
    a ManifestError when it finished with another config."""
    folder = run_dir(cfg)
    entry = read_manifest(folder).get("stages", {}).get(stage, {})
    if entry.get("status") != "done":
        return None
    if not trained_with(cfg, folder, entry.get("config_hash")):
        raise ManifestError(f"{folder / 'manifest.json'}: stage '{stage}' was trained with another config; use a new "
                            f"run.dir, or delete {folder / stage} to retrain it")
    return entry


# -------------------------------------------------------------------------------------------- reuse

_REUSE_MUST_MATCH = ("data.store", "data.image_size", "data.split_row", "backbone.name", "backbone.weights",
                     "backbone.layer")


def reuse_stage(cfg: DictConfig, stage: str, source: Path) -> dict:
    """Copy another run's finished stage (checkpoint, loss history, manifest entry) into this run."""
    if stage not in (*STAGES, SEGMENTER):
        raise ValueError(f"unknown stage '{stage}'; one of {', '.join((*STAGES, SEGMENTER))}")
    folder = run_dir(cfg)
    theirs = run_config(source)
    # the segmenter learns masks drawn on faces, not the store's people or the backbone: any store of the face size
    for key in ("data.image_size",) if stage == SEGMENTER else _REUSE_MUST_MATCH:
        a, b = OmegaConf.select(cfg, key), OmegaConf.select(theirs, key)
        if key == "data.store":
            a, b = Path(a).resolve(), Path(b).resolve()
        if a != b:
            raise ManifestError(f"run.reuse.{stage}={source}: that run has {key}={b}, this run {a}; "
                                "a stage can only be reused on the same store, face size and backbone (the "
                                "segmenter: the same face size)")
    best = stage_checkpoint(source, stage)
    entry = dict(read_manifest(source)["stages"][stage])
    target = stage_dir(cfg, stage)
    (target / "checkpoints").mkdir(parents=True, exist_ok=True)
    copied = target / "checkpoints" / "best.ckpt"
    with atomic_path(copied) as tmp:
        shutil.copy2(best, tmp)
    if (source / stage / "metrics.csv").is_file():
        with atomic_path(target / "metrics.csv") as tmp:
            shutil.copy2(source / stage / "metrics.csv", tmp)
    entry.update(best_checkpoint=os.path.relpath(copied, folder), last_checkpoint=os.path.relpath(copied, folder),
                 reused_from=str(source), config_hash=results_hash(cfg))
    save_config(cfg, folder)
    print(f"[train-all] {stage}: reused from {source} ({entry['best_checkpoint']})")
    manifest = read_manifest(source)
    return update_manifest(cfg, stage, entry, manifest.get("store_digest", ""), manifest.get("split_digest"))
