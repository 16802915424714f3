"""write_report on a small synthetic result set: every listed file exists, nothing is overwritten."""

from __future__ import annotations

import json

import numpy as np
import pytest

from antimask.config import load_config
from antimask.evaluation.report import write_report


def _loss_csv(path, n_epochs: int, step_logging: bool) -> str:
    # Lightning's CSVLogger: train and val values land on separate rows of the same epoch.
    key = "train/loss" if step_logging else "train/loss_epoch"
    lines = [f"epoch,step,{key},val/loss"]
    for e in range(n_epochs):
        lines.append(f"{e},{10 * e + 5},{1.0 / (e + 1):.4f},")
        lines.append(f"{e},{10 * e + 9},,{1.2 / (e + 1):.4f}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def synthetic(tmp_path):
    rng = np.random.default_rng(0)
    n, size = 10, 32
    real = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    feats = rng.normal(size=(n, 16))
    results = {}
    for k, name in enumerate(("antimask", "telea")):
        results[name] = {
            "metrics": {"l1_lower": rng.random(n) * (k + 1), "ssim_lower": rng.random(n),
                        "cosine": rng.random(n), "identity_distance": rng.random(n),
                        "verified": (rng.random(n) < 0.5).astype(float),
                        "psnr_lower": np.r_[np.inf, rng.random(n - 1) * 30]},
            "drawn": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            "features": feats + rng.normal(size=feats.shape),
        }
    context = {"backbone": "dlib", "split": "test", "split_row": 14, "real": real,
               "yaw": rng.uniform(-30, 30, n), "identities": np.arange(n) % 4, "real_features": feats,
               "loss_csv": {"face_decoder": _loss_csv(tmp_path / "fd.csv", 4, False),
                            "mask_decoder": _loss_csv(tmp_path / "md.csv", 3, True)},
               "config": {"eval": {"bootstrap": 200}}}
    return results, context


def test_write_report_writes_everything_it_lists(tmp_path, synthetic):
    results, context = synthetic
    cfg = load_config(overrides=["eval.bootstrap=200", "eval.grid_faces=4", "eval.worst_faces=3"]).eval
    paths = write_report(tmp_path / "report", results, context, cfg)
    assert paths["dir"] == tmp_path / "report"
    for key in ("report", "metrics", "faces_grid", "loss_curves", "features", "worst_cases"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
        assert paths[key].parent == paths["dir"]
    for key in ("faces_grid", "loss_curves", "features", "worst_cases"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = paths["report"].read_text()
    assert "| metric | antimask | telea |" in md
    assert sum(line.startswith("|") for line in md.splitlines()) == 2 + 6 + 1  # header, rule, 6 metrics, random pair
    assert "random pair" in md
    assert "identity is measured with the same network that gives the features" in md
    data = json.loads(paths["metrics"].read_text())
    l1 = data["methods"]["telea"]["l1_lower"]
    assert l1["mean"] == pytest.approx(results["telea"]["metrics"]["l1_lower"].mean())
    assert l1["low"] < l1["mean"] < l1["high"]
    assert data["methods"]["antimask"]["psnr_lower"]["n_not_finite"] == 1
    assert data["cosine_random_pair"]["n"] == cfg.random_pairs
    assert data["context"]["backbone"] == "dlib" and data["config"] == {"eval": {"bootstrap": 200}}


def test_second_report_does_not_overwrite_the_first(tmp_path, synthetic):
    results, context = synthetic
    cfg = load_config(overrides=["eval.bootstrap=50"]).eval
    first = write_report(tmp_path / "report", results, context, cfg)
    before = {p: p.read_bytes() for p in first.values() if p.is_file()}
    second = write_report(tmp_path / "report", results, context, cfg)
    third = write_report(tmp_path / "report", results, {**context, "name": "rerun"}, cfg)
    assert len({first["dir"], second["dir"], third["dir"]}) == 3
    assert third["dir"].name == "report-rerun"
    assert all(p.read_bytes() == b for p, b in before.items())
    for paths in (second, third):
        assert all(p.is_file() and p.parent == paths["dir"] for k, p in paths.items() if k != "dir")
        assert set(paths) == set(first)


def test_a_named_report_gets_its_name_from_the_first_and_a_number_after(tmp_path):
    from antimask.evaluation.report import _fresh_dir, report_dir

    assert report_dir(tmp_path, "test", None) == tmp_path / "reports" / "test"
    named = report_dir(tmp_path, "masked_test", "afdb")
    assert named == tmp_path / "reports" / "masked_test-afdb"
    first = _fresh_dir(named, "afdb")
    (first / "report.md").write_text("first")
    second = _fresh_dir(named, "afdb")
    assert (first.name, second.name) == ("masked_test-afdb", "masked_test-afdb-1")
    assert (first / "report.md").read_text() == "first"


def test_report_without_images_or_curves_and_another_backbone(tmp_path):
    results = {"mean_face": {"metrics": {"l1_lower": np.array([0.1, 0.2, 0.3])}}}
    paths = write_report(tmp_path / "r", results, {"backbone": "vggface"}, load_config().eval)
    assert set(paths) == {"dir", "report", "metrics"}
    md = paths["report"].read_text()
    assert "same network" not in md and "L1, lower band" in md


def test_grid_methods_pick_the_columns_of_the_faces_grid(tmp_path, synthetic):
    from PIL import Image

    results, context = synthetic
    sizes = {}
    for name, grid in (("all", "[]"), ("one", "[telea]")):
        cfg = load_config(overrides=["eval.bootstrap=50", "eval.grid_faces=4", f"eval.grid_methods={grid}"]).eval
        paths = write_report(tmp_path / name, results, context, cfg)
        sizes[name] = Image.open(paths["faces_grid"]).size
    assert sizes["one"][0] < sizes["all"][0]  # one method column fewer (real | masked | telea)
    cfg = load_config(overrides=["eval.bootstrap=50", "eval.grid_methods=[nope]"]).eval
    with pytest.raises(ValueError, match="eval.grid_methods names"):
        write_report(tmp_path / "bad", results, context, cfg)
