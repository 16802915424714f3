"""Sweep files are W&B sweeps over real config keys; `antimask sweep --local` trains a point and tables it."""

from __future__ import annotations

import csv

import pytest

from antimask.cli import main
from antimask.config import load_config
from antimask.sweeps import command_config, load_sweep, override_value, point_name, sweep_points
from helpers import REPO
from test_scaleout import DEFAULT, small_photos, small_store, small_words  # noqa: F401  (session fixtures)

SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


def test_the_sweep_files_exist():
    assert {p.name for p in SWEEPS} >= {"ablations.yaml", "lr.yaml"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_value_is_a_valid_config_override(path):
    sweep = load_sweep(path)
    config, fixed = command_config(sweep, REPO)
    words = [str(w) for w in sweep["command"]]
    assert words[-1] == "${args_no_hyphens}" and "train-all" in words, "W&B passes the point as key=value words"
    for key, spec in sweep["parameters"].items():
        values = spec.get("values") or [spec.get("value")] if "min" not in spec else [spec["min"], spec["max"]]
        for value in values:
            cfg = load_config(config, fixed + [f"{key}={override_value(value)}"])
            assert cfg[key.split(".")[0]] is not None
            got = cfg
            for part in key.split("."):
                got = got[part]
            assert got == value, (key, value, got)
    # W&B writes Python booleans as True/False in ${args_no_hyphens}: the config must read them too
    assert load_config(None, ["model.use_landmarks=False"]).model.use_landmarks is False


def test_ablation_grid_is_every_combination():
    points = sweep_points(load_sweep(REPO / "experiments" / "sweeps" / "ablations.yaml"))
    assert len(points) == 32 and len({tuple(p.items()) for p in points}) == 32
    assert point_name(0, points[0]) == ("000_use_landmarks-true_full_face-false_use_morphs-true_"
                                        "landmark_weight-1_texture_weight-10")


def test_bayes_sweep_draws_locally_with_a_seeded_rng():
    sweep = load_sweep(REPO / "experiments" / "sweeps" / "lr.yaml")
    first, again, other = sweep_points(sweep, 5, seed=0), sweep_points(sweep, 5, seed=0), sweep_points(sweep, 5, 1)
    assert first == again and first != other and len(first) == 5
    for point in first:
        spec = sweep["parameters"]["stages.mask_decoder.lr"]
        assert spec["min"] <= point["stages.mask_decoder.lr"] <= spec["max"]
        assert point["data.batch_size"] in sweep["parameters"]["data.batch_size"]["values"]
    assert len(sweep_points(sweep)) == sweep["run_cap"]


def test_one_local_point_runs_end_to_end_into_the_table(small_photos, small_store, tmp_path, capsys):
    out = tmp_path / "sweep"
    rc = main(["sweep", str(REPO / "experiments" / "sweeps" / "ablations.yaml"), "--local", "--max-runs", "1",
               "--out", str(out), *small_words(small_photos, small_store, tmp_path / "ignored"), "wandb.enabled=false"])
    assert rc == 0
    name = point_name(0, sweep_points(load_sweep(REPO / "experiments" / "sweeps" / "ablations.yaml"))[0])
    assert (out / name / "manifest.json").exists(), "run.dir is <base>/<point name>"
    cfg = load_config(out / name / "config.yaml")
    assert cfg.model.use_landmarks is True and cfg.model.landmark_weight == 1 and cfg.model.texture_weight == 10
    with open(out / "results.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["point"] == name and row["model.full_face"] == "false"
    assert float(row["mask_decoder:val/loss"]) > 0 and float(row["encoder:val/loss"]) > 0
    assert any(k.startswith("eval:") for k in row), "the evaluation summary is in the row"
    table = (out / "results.md").read_text()
    assert name in table and "mask_decoder:val/loss" in table
    assert (out / "evaluation.md").exists(), "combine_tables' side-by-side report of the evaluated points"
    assert str(out / "results.md") in capsys.readouterr().out


def test_a_null_sweep_value_is_the_schemas_none():
    """A sweep over data.split_row with null (the face size's default row) must reach the config as None."""
    assert override_value(None) == "null"
    assert load_config(None, [f"data.split_row={override_value(None)}"]).data.split_row is None
    assert load_config(None, [f"data.split_row={override_value(40)}"]).data.split_row == 40
