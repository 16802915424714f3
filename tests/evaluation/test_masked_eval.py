"""`antimask evaluate --masked`: held-out synthetic masks on the test faces, the rows the user compares (the masked
face, the grey band, inpainting, the models, the real face), the region each method may redraw, and identity to
the same photo and to the person's other photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from antimask.config import STAGES, load_config
from antimask.evaluation.baselines import Inpaint
from antimask.evaluation.evaluate import EvaluationError
from antimask.evaluation.masked import (
    CEILING,
    NOTHING,
    _grid,
    evaluate_masked,
    gap_recovered,
    other_photo_distances,
    region_l1,
)
from antimask.pipeline import train_stage
from antimask.segmentation import train_segmenter
from helpers import adult_utkface
from real_faces import align_photos, write_store

N_PHOTOS = 40
FAST = ["eval.bootstrap=50", "eval.max_faces=8", "eval.judge=none"]


def _cfg(store: Path, run: Path, *extra: str):
    return load_config(None, [
        f"data.store={store}", f"run.dir={run}", "data.image_size=64", "augment.enabled=false",
        "data.num_workers=0", "data.batch_size=8", "trainer.accelerator=cpu", "trainer.log_every_n_steps=1",
        "model.shared_dim=32", "model.decoder_channels=32", "model.decoder_upsamplings=3", "model.encoder_width=8",
        "masks.segmenter_width=8", "masks.segmenter_depth=3",
        *[f"stages.{s}.{k}" for s in (*STAGES, "segmenter") for k in ("max_epochs=1", "lr=1e-3")], *extra])


@pytest.fixture(scope="module")
def runs(utkface_dir, tmp_path_factory):
    """A fixed-row run and a mask-aware run with a segmenter, on a store whose people have two photos each."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("masked_eval")
    images, landmarks, _ = align_photos(adult_utkface(utkface_dir, N_PHOTOS))
    n = len(images) // 2 * 2
    names = [f"person{i // 2}.{i}.jpg" for i in range(n)]  # identity = the part before the first dot
    splits = ["train" if i < 0.6 * n else "val" if i < 0.7 * n else "test" for i in range(0, n, 2) for _ in (0, 1)]
    store = write_store(root / "store", images[:n], landmarks[:n], names, splits)
    fixed, aware = root / "fixed", root / "aware"
    for stage in ("mask_decoder", "encoder"):
        train_stage(_cfg(store, fixed), stage)
        train_stage(_cfg(store, aware, "model.decoder=appearance", "model.mask_aware=true"), stage)
    train_segmenter(_cfg(store, aware, "model.decoder=appearance", "model.mask_aware=true"))
    return {"store": store, "fixed": fixed, "aware": aware}


@pytest.fixture(scope="module")
def report(runs):
    return evaluate_masked(runs["aware"], extra_runs={"fixed_row": runs["fixed"]}, cfg_overrides=FAST)


@pytest.fixture(scope="module")
def oracle(runs):
    return evaluate_masked(runs["aware"], cfg_overrides=FAST + ["eval.mask_region=drawn"])


def test_every_row_and_metric_is_reported_with_the_segmenter_region(report):
    methods = list(report["summary"])
    assert methods == ["masked_face", "grey_band", "telea", "navier_stokes", "anti_mask", "fixed_row", CEILING]
    assert report["region_source"] == "segmenter" and 0.0 <= report["segmenter_iou"] <= 1.0
    for stats in report["summary"].values():
        for key in ("region_l1", "l1", "ssim", "psnr", "identity_distance", "other_photo_distance", "verified"):
            assert key in stats
    saved = json.loads(Path(report["paths"]["metrics"]).read_text())
    assert set(saved["context"]["held_out_styles"]) <= {"surgical_green", "cloth_checks", "kn95"}
    assert "anti_mask" in Path(report["paths"]["report"]).read_text()
    import cv2

    grid = cv2.imread(report["paths"]["grid"])
    assert grid.shape[1] == 64 * len(methods)  # the region overlay, then every row but the masked face


def test_paired_differences_against_the_masked_face_match_the_saved_per_face_scores(report):
    """The report's paired table is each method's per-face score minus the masked face's on the same face; the
    per-face arrays are saved beside it, so a reader can redo any paired test."""
    saved = np.load(report["paths"]["per_face"])
    paired = json.loads(Path(report["paths"]["metrics"]).read_text())["paired"]
    assert len(saved["rows"]) == report["n_faces"]
    for key in ("region_l1", "ssim", "identity_distance"):
        assert "masked_face" not in paired[key] and CEILING not in paired[key]
        for method in ("telea", "anti_mask", "fixed_row"):
            diff = saved[f"{method}/{key}"] - saved[f"masked_face/{key}"]
            assert paired[key][method]["mean"] == pytest.approx(float(np.mean(diff)), abs=1e-9)
            assert paired[key][method]["low"] <= paired[key][method]["mean"] <= paired[key][method]["high"]
    assert "method minus masked_face" in Path(report["paths"]["report"]).read_text()


def test_reference_rows_are_what_they_claim(report):
    s, drawn = report["summary"], report["drawn"]
    assert s[CEILING]["region_l1"]["mean"] == 0 and s[CEILING]["identity_distance"]["mean"] == 0
    assert s["masked_face"]["region_l1"]["mean"] > 0.02  # a mask really was drawn on every face
    assert (drawn[NOTHING][:, 27:] == 128).all() and (drawn[NOTHING][:, :27] == drawn["masked_face"][:, :27]).all()
    # the person's other photo is further than the same photo, for the real face itself
    assert s[CEILING]["other_photo_distance"]["mean"] > 0.1


def test_region_methods_keep_every_pixel_outside_the_redraw_region(oracle):
    """The mask-aware model and the inpainting change nothing where the feathered redraw alpha is 0."""
    from antimask.faces.masks import redraw_region

    masked = oracle["drawn"]["masked_face"]
    outside = np.stack([redraw_region(r, 4, 4) for r in oracle["found"]]) == 0
    assert 0.1 < (~outside).mean() < 0.7
    for method in ("anti_mask", "telea", "navier_stokes"):
        same = (oracle["drawn"][method] == masked).all(-1)
        assert same[outside].all(), method
        assert not same[~outside].all(), method


def test_the_oracle_region_and_an_absent_segmenter(runs, oracle):
    got = oracle
    assert got["region_source"] == "drawn" and got["segmenter_iou"] is None
    assert (got["found"] == got["regions"]).all()
    with pytest.raises(EvaluationError, match=r"has no trained segmenter.*antimask train segmenter"):
        evaluate_masked(runs["fixed"], cfg_overrides=FAST + ["eval.mask_region=segmenter"])
    fixed = evaluate_masked(runs["fixed"], cfg_overrides=FAST)
    assert fixed["region_source"] == "drawn"
    masked, done = fixed["drawn"]["masked_face"], fixed["drawn"]["anti_mask"]
    assert (done[:, :20] == masked[:, :20]).all()  # a fixed-row run keeps the rows above its seam


def test_region_l1_other_photos_and_the_gap():
    real = np.zeros((2, 4, 4, 3), np.uint8)
    drawn = real.copy()
    drawn[0, 0, 0] = 255
    regions = np.zeros((2, 4, 4), bool)
    regions[0, :2, :2] = True
    got = region_l1(drawn, real, regions)
    assert got[0] == pytest.approx(0.25) and np.isnan(got[1])
    desc = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    d = other_photo_distances(desc, desc, np.array(["a", "a", "b"]))
    assert d[0] == pytest.approx(5.0) and d[1] == pytest.approx(5.0) and np.isnan(d[2])
    means = {NOTHING: 0.6, CEILING: 0.2, "m": 0.5, "worse": 0.7}
    assert gap_recovered(means, "m") == pytest.approx(0.25)
    assert gap_recovered(means, "worse") < 0
    assert np.isnan(gap_recovered({NOTHING: 0.2, CEILING: 0.2, "m": 0.1}, "m"))


def test_the_grid_is_an_rgb_png_and_a_grid_that_cannot_be_written_is_an_error(tmp_path):
    masked = np.zeros((3, 8, 8, 3), np.uint8)
    found = np.zeros((3, 8, 8), bool)
    found[:, 4:] = True
    drawn = {"masked_face": masked, "model": np.full_like(masked, (200, 10, 0)), "real": np.full_like(masked, 50)}
    _grid(tmp_path / "grid.png", masked, found, drawn, 2)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (16, 24, 3)  # 2 faces, each: masked with the region tinted red | model | real
    assert (grid[:4, :8] == 0).all() and (grid[4:8, :8] == (127, 0, 0)).all()
    assert (grid[:, 8:16] == (200, 10, 0)).all() and (grid[:, 16:] == 50).all()
    taken = tmp_path / "taken.png"
    taken.mkdir()
    with pytest.raises(OSError):
        _grid(taken, masked, found, drawn, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "taken.png"]  # no temporary file left


def test_region_inpainting_checks_its_inputs():
    faces = np.full((1, 8, 8, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="bool regions"):
        Inpaint("telea").complete_regions(faces, np.zeros((1, 4, 4), bool))
    region = np.zeros((1, 8, 8), bool)
    region[0, 3:5, 3:5] = True
    faces[0, 3:5, 3:5] = 0
    out = Inpaint("telea").complete_regions(faces, region)
    assert (out[0][~region[0]] == 100).all() and (out[0][region[0]] > 50).all()
