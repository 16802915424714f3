"""evaluate_run on a small trained run: real UTKFace store, dlib features, every stage trained briefly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from antimask.config import load_config
from antimask.evaluation.baselines import BASELINES
from antimask.evaluation.evaluate import EvaluationError, combine_tables, evaluate_run
from antimask.evaluation.metrics import l1
from antimask.evaluation.report import METRICS
from antimask.faces.compositing import seam_weights
from antimask.config import STAGES
from antimask.pipeline import train_stage
from antimask.runs import ManifestError
from helpers import adult_utkface, require_face_networks

from real_faces import align_photos, write_store

pytestmark = [pytest.mark.data, pytest.mark.slow]

N_PHOTOS = 60  # 7:1:2 train/val/test, one identity per photo
FAST = ["eval.bootstrap=100", "eval.max_faces=8"]
MODEL_METHODS = ("anti_mask", "no_landmarks", "full_face_redraw", "encoder_face_decoder")


def _cfg(store: Path, run: Path, *extra: str):
    return load_config(None, [
        f"data.store={store}", f"run.dir={run}", "data.image_size=64", "augment.enabled=false",
        "data.num_workers=0", "data.batch_size=16", "trainer.accelerator=cpu", "trainer.log_every_n_steps=1",
        "model.shared_dim=64", "model.decoder_channels=32", "model.decoder_upsamplings=3", "model.encoder_width=8",
        *[f"stages.{s}.{k}" for s in STAGES for k in ("max_epochs=2", "lr=1e-3")], *extra])


@pytest.fixture(scope="module")
def runs(utkface_dir, tmp_path_factory):
    """A full run (three stages) and a no-landmark ablation (encoder + mask decoder) on one store."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluate")
    images, landmarks, names = align_photos(adult_utkface(utkface_dir, N_PHOTOS))
    store = write_store(root / "store", images, landmarks, names)
    main, ablation = root / "run", root / "no_landmarks"
    for stage in STAGES:
        train_stage(_cfg(store, main), stage)
    for stage in ("mask_decoder", "encoder"):
        train_stage(_cfg(store, ablation, "model.use_landmarks=false"), stage)
    return {"store": store, "main": main, "no_landmarks": ablation, "root": root}


@pytest.fixture(scope="module")
def evaluation(runs):
    return evaluate_run(runs["main"], extra_runs={"no_landmarks": runs["no_landmarks"]}, cfg_overrides=FAST)


def test_report_writes_every_listed_file(evaluation):
    paths = evaluation["paths"]
    assert {"report", "metrics", "faces_grid", "loss_curves", "features", "worst_cases"} <= set(paths)
    for what, path in paths.items():
        assert Path(path).exists(), what
    report = Path(paths["report"]).read_text()
    for what in ("faces_grid", "loss_curves", "features", "worst_cases"):
        assert f"({Path(paths[what]).name})" in report
    # dlib is both the teacher and the identity network: the report must say so.
    assert "same network" in report


def test_metrics_json_holds_every_method_and_metric(evaluation):
    data = json.loads(Path(evaluation["paths"]["metrics"]).read_text())
    methods = data["methods"]
    assert set(methods) == {*MODEL_METHODS, *BASELINES}
    header = "| metric | " + " | ".join([*MODEL_METHODS, *BASELINES]) + " |"
    assert header in Path(evaluation["paths"]["report"]).read_text().splitlines()
    # judge_distance needs the independent judge's weights (make face-networks); the test below requires them
    expected = set(METRICS) if data["context"]["judge"] else set(METRICS) - {"judge_distance"}
    for method, per in methods.items():
        assert set(per) == expected, method
        for metric, stats in per.items():
            assert len(stats["values"]) == evaluation["n_faces"] == 8, (method, metric)
    assert data["cosine_random_pair"]["n"] > 0
    assert data["context"]["same_network_for_identity_and_features"] is True
    assert data["context"]["backbone"] == "dlib" and data["context"]["split"] == "test"
    assert 0.9 < data["context"]["cosine_real_at_image_size"] <= 1.0
    # The table's means are those of the faces the methods drew.
    real, drawn, row = evaluation["real"], evaluation["drawn"], evaluation["split_row"]
    for method in ("anti_mask", "telea", "mean_face"):
        assert methods[method]["l1_lower"]["mean"] == pytest.approx(l1(drawn[method], real, row).mean(), rel=1e-9)


def test_drawn_faces_keep_the_visible_upper_band(evaluation, runs):
    real, drawn, row = evaluation["real"], evaluation["drawn"], evaluation["split_row"]
    seam = load_config(runs["main"] / "config.yaml").model.seam_width
    kept = seam_weights(real.shape[1], row, seam).numpy() == 0
    assert kept[: row - seam // 2].all() and not kept[row:].any()
    for method in ("anti_mask", "no_landmarks", "encoder_face_decoder", *BASELINES):
        assert np.array_equal(drawn[method][:, kept], real[:, kept]), method
        assert not np.array_equal(drawn[method][:, row:], real[:, row:]), method
    # The full-face redraw draws everything, the upper band too.
    assert not np.array_equal(drawn["full_face_redraw"][:, :row], real[:, :row])
    # The ablation is another model: its lower band differs from the main run's.
    assert not np.array_equal(drawn["no_landmarks"][:, row:], drawn["anti_mask"][:, row:])


def _without_stage(src: Path, dst: Path, stage: str) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    del manifest["stages"][stage]
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_missing_stage_is_named(runs, tmp_path):
    partial = _without_stage(runs["main"], tmp_path / "partial", "encoder")
    reports = sorted((partial / "reports").iterdir())  # the copy holds the main run's report
    with pytest.raises(ManifestError, match="stage 'encoder'"):
        evaluate_run(partial, cfg_overrides=FAST)
    assert sorted((partial / "reports").iterdir()) == reports  # refused before writing anything
    # An ablation run without its mask decoder is refused the same way, naming that stage.
    no_decoder = _without_stage(runs["no_landmarks"], tmp_path / "no_decoder", "mask_decoder")
    with pytest.raises(ManifestError, match="stage 'mask_decoder'"):
        evaluate_run(runs["main"], extra_runs={"ablation": no_decoder}, cfg_overrides=FAST)


def test_empty_split_is_an_error(runs, tmp_path):
    from antimask.data.store import open_store

    store = open_store(runs["store"])
    images = np.asarray(store.images[np.arange(len(store))])
    names = [str(s) for s in store.meta["source"]]
    no_test = write_store(tmp_path / "store", images, np.asarray(store.landmarks[np.arange(len(store))]), names,
                          splits=["train" if i % 5 else "val" for i in range(len(images))])
    with pytest.raises(EvaluationError, match="'test' split has no"):
        evaluate_run(runs["main"], cfg_overrides=[*FAST, f"data.store={no_test}"])
    with pytest.raises(EvaluationError, match="'holdout' split has no"):
        evaluate_run(runs["main"], split="holdout", cfg_overrides=FAST)


def test_second_evaluation_keeps_both_reports(evaluation, runs):
    first = Path(evaluation["dir"])
    before = Path(evaluation["paths"]["metrics"]).read_bytes()
    second = evaluate_run(runs["main"], name="again", cfg_overrides=["eval.bootstrap=50", "eval.max_faces=3"])
    assert Path(second["dir"]) != first and Path(second["dir"]).name == "test-again"
    assert Path(evaluation["paths"]["metrics"]).read_bytes() == before
    assert json.loads(Path(second["paths"]["metrics"]).read_text())["context"]["n_faces"] == 3

    out = combine_tables({"main": first, "again": second["paths"]["metrics"]}, runs["root"] / "ablations.md")
    table = out.read_text().splitlines()
    assert "| metric | main | again |" in table
    assert sum(line.startswith("| ") for line in table) == 1 + len(METRICS) + 1  # header, metrics, chance
    assert any(line.startswith("| cosine, random pair") for line in table)
    both = combine_tables({"main": first}, runs["root"] / "both.md", methods=["anti_mask", "telea"]).read_text()
    assert "| metric | main: anti_mask | main: telea |" in both
    with pytest.raises(EvaluationError, match="no method 'nope'"):
        combine_tables({"main": first}, runs["root"] / "x.md", methods=["nope"])


def test_another_store_is_a_cross_dataset_evaluation(runs, tmp_path):
    """data.store=OTHER evaluates the trained models on another photo set's test split, and says so."""
    from antimask.data.store import open_store

    store = open_store(runs["store"])
    rows = np.arange(len(store))
    names = [f"other_{s}" for s in store.meta["source"]]  # another photo set: other names, other split
    other = write_store(tmp_path / "other", np.asarray(store.images[rows]), np.asarray(store.landmarks[rows]), names,
                        splits=["test" if i % 3 == 0 else "train" for i in rows])
    result = evaluate_run(runs["main"], cfg_overrides=[*FAST, f"data.store={other}"], out_dir=tmp_path / "report")
    text = Path(result["paths"]["report"]).read_text()
    assert f"cross-dataset: the models were trained on {runs['store']}" in text and str(other) in text
    assert result["n_faces"] == min(8, len(range(0, len(rows), 3)))


def test_identity_is_also_judged_by_a_network_that_is_not_the_teacher(evaluation, runs):
    """With dlib as the teacher, FaceRes judges identity beside dlib's distance, and the report names it."""
    require_face_networks()
    from antimask.evaluation.evaluate import backbone_features, identity_judge, judge_distances

    data = json.loads(Path(evaluation["paths"]["metrics"]).read_text())
    assert data["context"]["judge"] == "faceres" and data["context"]["backbone"] == "dlib"
    report = Path(evaluation["paths"]["report"]).read_text()
    assert "- independent identity judge: faceres (not the teacher" in report
    assert "| identity distance, faceres (independent judge: 1 - cosine) (lower is better) |" in report
    for method, per in data["methods"].items():
        values = np.asarray(per["judge_distance"]["values"], float)
        assert np.isfinite(values).all() and (values > 1e-4).all() and (values < 2).all(), method
    # The judge's distance of a face to itself is 0: what the methods are measured against.
    judge, note = identity_judge(load_config(runs["main"] / "config.yaml"))
    assert judge.name == "faceres" and note is None
    real = evaluation["real"]
    assert np.abs(judge_distances(judge, real, backbone_features(judge, real, 224, 8), 224, 8)).max() < 1e-5
    # With FaceRes as the teacher, dlib judges; none at all is a choice too.
    teacher_faceres = load_config(None, ["backbone.name=faceres"])
    assert identity_judge(teacher_faceres)[0].name == "dlib"
    assert identity_judge(load_config(None, ["eval.judge=none"])) == (None, None)


def test_without_the_judge_weights_the_report_says_why(monkeypatch):
    """auto finds no independent judge when FaceRes's files are missing and dlib is the teacher: a note, no error."""
    from antimask.evaluation import evaluate as module

    monkeypatch.setenv("ANTIMASK_FACE_NETWORKS", "/nonexistent/face-networks")
    judge, note = module.identity_judge(load_config(None, []))
    assert judge is None and "faceres" in note and "make face-networks" in note
