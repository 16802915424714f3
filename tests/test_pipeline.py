"""`antimask train-all` end to end on the embedded sample, then `predict` with the model it made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from antimask.data.sample import write_sample
from antimask.data.store import open_store
from antimask.inference import predict
from antimask.config import STAGES
from antimask.runs import read_manifest, run_config
from helpers import REPO

FAST = ["stages.face_decoder.max_epochs=1", "stages.mask_decoder.max_epochs=1", "stages.encoder.max_epochs=1",
        "eval.bootstrap=20", "augment.neighbors=2"]


def _train_all(run: Path, store: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "antimask", "train-all", "--config", str(REPO / "experiments" / "default.yaml"),
           f"run.dir={run}", f"data.store={store}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    """train-all on the embedded sample (one epoch per stage), evaluation included."""
    root = tmp_path_factory.mktemp("pipeline")
    proc = _train_all(root / "main", root / "store", *FAST)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "report:" in proc.stdout and "antimask predict" in proc.stdout
    return root / "main"


def test_train_all_runs_every_stage_and_reports(sample_run):
    manifest = read_manifest(sample_run)
    assert all(manifest["stages"][s]["status"] == "done" for s in STAGES)
    for stage in STAGES:
        assert (sample_run / manifest["stages"][stage]["best_checkpoint"]).exists()
    assert manifest["split_digest"] == open_store(manifest["store"]).split_digest  # evaluate checks it
    reports = list((sample_run / "reports").glob("*/report.md"))
    assert reports and "anti_mask" in reports[0].read_text()


def test_rerun_skips_finished_stages(sample_run):
    before = {s: (sample_run / s / "checkpoints" / "last.ckpt").stat().st_mtime_ns for s in STAGES}
    proc = _train_all(sample_run, Path(read_manifest(sample_run)["store"]), *FAST, "--no-eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done before, skipped") == 3
    assert before == {s: (sample_run / s / "checkpoints" / "last.ckpt").stat().st_mtime_ns for s in STAGES}


def test_rerun_after_the_schema_grew_skips_only_when_the_new_keys_keep_their_defaults(sample_run, tmp_path):
    """A run folder finished before a key was added to the schema (simulated: its saved config lacks
    model.seam_colour_rows and its stages carry that config's hash) is still done for a rerun that leaves
    the new key at its default, and trained with another config for one that sets it."""
    import json
    import shutil

    from omegaconf import OmegaConf

    from antimask.runs import results_hash

    run = tmp_path / "older"
    shutil.copytree(sample_run, run)
    saved = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    del saved["model"]["seam_colour_rows"]
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    manifest = json.loads((run / "manifest.json").read_text())
    older_hash = results_hash(OmegaConf.create(saved))
    assert older_hash != manifest["stages"]["encoder"]["config_hash"]
    for entry in manifest["stages"].values():
        entry["config_hash"] = older_hash
    (run / "manifest.json").write_text(json.dumps(manifest))
    store = Path(read_manifest(sample_run)["store"])
    proc = _train_all(run, store, *FAST, "--no-eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done before, skipped") == 3
    for changed in ("model.seam_colour_rows=4", "stages.encoder.lr=0.5"):
        proc = _train_all(run, store, *FAST, "--no-eval", changed)
        assert proc.returncode != 0 and "trained with another config" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("era, changed", [
    (2, ("predict.verify_faces=true", "masks.face_threshold=0.2")),
    (1, ("augment.chunk_mb=64", "prepare.chunk=16", "backbone.batch_size=8")),
], ids=["predict_keys", "memory_keys"])
def test_keys_that_stopped_counting_do_not_count_even_for_stages_hashed_with_them(sample_run, tmp_path, era, changed):
    """Stages finished before a key left the training config carry a hash over it (predict.* and
    masks.face_threshold until the 4th session of 2026-11-30; the memory and batching keys until the 7th): such a
    run is still done for a rerun that changes only those, and not for one that changes a stage."""
    import json
    import shutil

    from omegaconf import OmegaConf

    from antimask.runs import results_hash

    run = tmp_path / f"hashed_in_era_{era}"
    shutil.copytree(sample_run, run)
    saved = OmegaConf.load(run / "config.yaml")
    before = results_hash(saved, era)
    assert before != results_hash(saved)
    for word in changed:
        assert results_hash(OmegaConf.merge(saved, OmegaConf.from_dotlist([word]))) == results_hash(saved), word
    manifest = json.loads((run / "manifest.json").read_text())
    for entry in manifest["stages"].values():
        entry["config_hash"] = before
    (run / "manifest.json").write_text(json.dumps(manifest))
    store = Path(read_manifest(sample_run)["store"])
    proc = _train_all(run, store, *FAST, "--no-eval", *changed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done before, skipped") == 3
    proc = _train_all(run, store, *FAST, "--no-eval", "stages.encoder.lr=0.5")
    assert proc.returncode != 0 and "trained with another config" in proc.stderr, proc.stderr[-3000:]


def test_predict_loads_the_trained_model(sample_run, tmp_path):
    photos = write_sample(tmp_path / "photos", variants=2)
    results = predict(sample_run, [photos / "astronaut_original.png"], tmp_path / "out")
    assert results and all(r["status"] == "ok" for r in results.values())
    assert (tmp_path / "out" / "astronaut_original_unmasked.png").exists()


def test_train_all_killed_mid_stage_finishes_every_stage_once(tmp_path):
    run, store = tmp_path / "run", tmp_path / "store"
    epochs = ["stages.face_decoder.max_epochs=1", "stages.mask_decoder.max_epochs=4", "stages.encoder.max_epochs=1",
              "augment.neighbors=2", "--no-eval"]
    cmd = [sys.executable, "-m", "antimask", "train-all", "--config", str(REPO / "experiments" / "default.yaml"),
           f"run.dir={run}", f"data.store={store}", *epochs]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = run / "mask_decoder" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists(), "train-all never reached the mask decoder"
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 3, "the kill came after the stage had finished"
    face_ckpt = run / "face_decoder" / "checkpoints" / "last.ckpt"
    face_mtime = face_ckpt.stat().st_mtime_ns

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = read_manifest(run)
    assert all(manifest["stages"][s]["status"] == "done" for s in STAGES)
    assert face_ckpt.stat().st_mtime_ns == face_mtime, "the finished face decoder was trained again"
    assert "face_decoder: done before, skipped" in again.stdout
    final = torch.load(last, weights_only=True)
    steps_per_epoch = manifest["stages"]["face_decoder"]["global_step"]  # 1 epoch on the same train split
    assert final["global_step"] == 4 * steps_per_epoch, "the mask decoder resumed rather than restarting or skipping"
    import csv

    with open(run / "mask_decoder" / "metrics.csv") as fh:
        epochs_logged = sorted({int(r["epoch"]) for r in csv.DictReader(fh) if r.get("val/loss")})
    assert epochs_logged == [0, 1, 2, 3], "the loss history survives the resume"


def test_ablations_train_beside_the_main_run_into_one_table(sample_run):
    from antimask.ablations import run_ablations

    root = sample_run.parent
    store = read_manifest(sample_run)["store"]
    before = (sample_run / "mask_decoder" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    table = run_ablations(REPO / "experiments" / "default.yaml", [f"data.store={store}", *FAST], root=root,
                          names=("no_landmarks",))
    text = table.read_text()
    assert "no_landmarks" in text and "anti_mask" in text and "telea" in text
    assert read_manifest(root / "no_landmarks")["stages"]["mask_decoder"]["status"] == "done"
    assert (sample_run / "mask_decoder" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before, \
        "the finished main run is reused, not retrained"


def test_each_ablation_is_the_main_runs_config_with_its_one_change(tmp_path):
    """`antimask ablations --config FILE`: the ablations train with FILE too, so the table compares like with like
    (they were built on default.yaml whatever the main run used)."""
    from antimask.ablations import ABLATIONS, ablation_config
    from antimask.config import load_config

    mine = tmp_path / "mine.yaml"
    mine.write_text(f"defaults: [{REPO / 'experiments' / 'default.yaml'}]\ndata:\n  image_size: 96\n"
                    "stages:\n  mask_decoder:\n    lr: 0.01\n")
    main = load_config(mine, ["model.texture_weight=50"])
    changed = {"no_landmarks": ("model.use_landmarks", False), "full_face": ("model.full_face", True),
               "no_morph": ("data.use_morphs", False)}
    for name in ABLATIONS:
        cfg = ablation_config(name, mine, ["model.texture_weight=50"], "elsewhere/store", tmp_path / name)
        key, value = changed[name]
        assert OmegaConf.select(cfg, key) == value != OmegaConf.select(main, key)
        assert cfg.data.image_size == 96 and cfg.stages.mask_decoder.lr == 0.01 and cfg.model.texture_weight == 50
        assert cfg.data.store == "elsewhere/store" and cfg.run.dir == str(tmp_path / name)


def test_improvements_reuse_the_paper_run_and_share_one_table(sample_run):
    """`antimask ablations --improved`: the improved run and each change train only what they change."""
    from antimask.ablations import run_improvements

    root = sample_run.parent
    (root / "paper").symlink_to(sample_run.name)  # the finished paper run, under the name the layout expects
    store = read_manifest(sample_run)["store"]
    before = {s: (sample_run / s / "checkpoints" / "last.ckpt").stat().st_mtime_ns for s in STAGES}
    table = run_improvements([f"data.store={store}", *FAST, "stages.mask_decoder.max_epochs=1"], root=root,
                             names=["paper+seam_colour", "paper+ssim_loss", "improved-timm_encoder"])
    text = table.read_text()
    assert all(k in text for k in ("improved: anti_mask", "paper+seam_colour", "paper+ssim_loss",
                                   "improved-timm_encoder", "telea"))
    assert before == {s: (sample_run / s / "checkpoints" / "last.ckpt").stat().st_mtime_ns for s in STAGES}
    improved = read_manifest(root / "improved")["stages"]
    assert improved["face_decoder"]["reused_from"] == str(root / "paper")
    assert "reused_from" not in improved["mask_decoder"] and "reused_from" not in improved["encoder"]
    assert run_config(root / "improved").model.encoder == "timm:resnet18"  # its own encoder, trained here
    colour = read_manifest(root / "paper+seam_colour")["stages"]
    assert all(colour[s]["reused_from"] == str(root / "paper") for s in STAGES)  # inference-only: nothing trained
    ssim = read_manifest(root / "paper+ssim_loss")["stages"]
    assert "reused_from" not in ssim["mask_decoder"] and ssim["encoder"]["reused_from"] == str(root / "paper")
    vgg = read_manifest(root / "improved-timm_encoder")["stages"]  # the improved decoder with the paper's encoder
    assert vgg["encoder"]["reused_from"] == str(root / "paper")
    assert vgg["mask_decoder"]["reused_from"] == str(root / "improved")
    paper_enc = torch.load(sample_run / read_manifest(sample_run)["stages"]["encoder"]["best_checkpoint"],
                           weights_only=True)["state_dict"]
    theirs = torch.load(root / "improved-timm_encoder" / vgg["encoder"]["best_checkpoint"],
                        weights_only=True)["state_dict"]
    assert all(torch.equal(paper_enc[k], theirs[k]) for k in paper_enc)


def test_reuse_refuses_a_run_of_another_face_size(sample_run, tmp_path):
    from antimask.config import load_config
    from antimask.runs import ManifestError, reuse_stage

    store = read_manifest(sample_run)["store"]
    cfg = load_config(REPO / "experiments" / "default.yaml", [f"data.store={store}", f"run.dir={tmp_path}",
                                                              "data.image_size=32"])
    with pytest.raises(ManifestError, match="data.image_size=64, this run 32"):
        reuse_stage(cfg, "encoder", sample_run)


def test_train_all_does_not_replace_a_stage_with_another_runs_copy(sample_run, tmp_path):
    """run.reuse names the run a stage is copied from; naming another one later, or naming one for a stage trained
    in this run, is refused (the later stages were built on what is there) and nothing is copied."""
    import shutil

    from antimask.config import load_config
    from antimask.pipeline import train_all
    from antimask.runs import ManifestError, reuse_stage

    store = read_manifest(sample_run)["store"]
    other = tmp_path / "other"
    shutil.copytree(sample_run, other)

    def cfg(run: Path, source: Path):
        return load_config(REPO / "experiments" / "default.yaml", [f"data.store={store}", f"run.dir={run}",
                                                                  f"run.reuse.face_decoder={source}", *FAST])

    reused = tmp_path / "reused"
    reuse_stage(cfg(reused, sample_run), "face_decoder", sample_run)
    before = (reused / "face_decoder" / "checkpoints" / "best.ckpt").read_bytes()
    with pytest.raises(ManifestError, match=f"reused from {sample_run}, and run.reuse.face_decoder now names"):
        train_all(cfg(reused, other), evaluate=False)
    assert read_manifest(reused)["stages"]["face_decoder"]["reused_from"] == str(sample_run)
    trained = tmp_path / "trained"
    shutil.copytree(sample_run, trained)
    with pytest.raises(ManifestError, match="was trained in this run"):
        train_all(cfg(trained, other), evaluate=False)
    assert "reused_from" not in read_manifest(trained)["stages"]["face_decoder"]
    assert (reused / "face_decoder" / "checkpoints" / "best.ckpt").read_bytes() == before


def test_a_run_trained_with_relative_paths_is_evaluated_and_used_from_any_folder(sample_run, tmp_path):
    """`antimask train-all` run in a project folder records run.dir and data.store as given (relative);
    `antimask evaluate` and `predict` of that run from another folder still find its store."""
    import json
    import shutil

    from omegaconf import OmegaConf

    project = tmp_path / "project"
    shutil.copytree(sample_run, project / "runs" / "default", ignore=shutil.ignore_patterns("reports"))
    (project / "runs" / "store").symlink_to(Path(read_manifest(sample_run)["store"]).resolve())
    run = project / "runs" / "default"
    saved = OmegaConf.load(run / "config.yaml")
    saved.run.dir, saved.data.store = "runs/default", "runs/store"  # as `train-all` run inside project/ writes them
    (run / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["store"] = "runs/store"
    manifest.pop("workdir", None)  # a run folder written before the manifest recorded it
    (run / "manifest.json").write_text(json.dumps(manifest))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    assert Path(run_config(run).data.store) == project / "runs" / "store"
    proc = subprocess.run([sys.executable, "-m", "antimask", "evaluate", str(run), "eval.max_faces=4",
                           "eval.bootstrap=0"], cwd=elsewhere, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cross-dataset" not in proc.stdout and (run / "reports" / "test" / "report.md").is_file()
    photos = write_sample(tmp_path / "photos", variants=2)
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        results = predict(run, [photos / "astronaut_original.png"], tmp_path / "out")
    finally:
        os.chdir(cwd)
    assert all(r["status"] == "ok" for r in results.values())


def test_an_improvement_whose_network_files_are_missing_is_skipped_and_the_rest_go_on(monkeypatch, tmp_path, capsys):
    """make improvements without `make face-networks`: the identity-loss change says why it is skipped."""
    from antimask import ablations
    from antimask.backbones import WeightsError

    trained = []

    def train_all(cfg, evaluate):
        if cfg.model.identity_net == "faceres":
            raise WeightsError("faceres: no model files in the cache; run `make face-networks`\nmore")
        trained.append(str(cfg.run.dir))

    evaluated = {}
    monkeypatch.setattr(ablations, "train_all", train_all)
    monkeypatch.setattr(ablations, "evaluate_run", lambda run, name, extra_runs: evaluated.update(extra_runs) or
                        {"dir": tmp_path, "methods": [], "paths": {"report": "r"}})
    monkeypatch.setattr(ablations, "combine_tables", lambda reports, out, methods: out)
    ablations.run_improvements(root=tmp_path, names=["improved+identity_loss", "paper+ssim_loss"])
    assert "improved+identity_loss: skipped, faceres: no model files" in capsys.readouterr().out
    assert set(evaluated) == {"paper", "paper+ssim_loss"}
    assert str(tmp_path / "paper+ssim_loss") in trained
