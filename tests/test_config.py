"""The config schema: defaults, experiment files, overrides, and clear errors for bad keys/values."""

import pytest
from omegaconf import OmegaConf

from antimask.config import ConfigError, load_config, save_config, split_row_for
from helpers import REPO


def test_defaults_hold_the_paper_geometry_and_losses():
    cfg = load_config()
    assert split_row_for(224) == 96 and split_row_for(112) == 48 and split_row_for(64) == 27
    assert cfg.model.landmark_weight == 10 and cfg.model.texture_weight == 100 and cfg.model.shared_dim == 1000
    assert cfg.stages.mask_decoder.lr == 1e-4 and cfg.stages.encoder.max_epochs == 30
    assert cfg.augment.neighbors == 10 and cfg.augment.landmark_weight == 10


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"model\.landmark_weigth.*did you mean 'model\.landmark_weight'"):
        load_config(None, ["model.landmark_weigth=3"])
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        load_config(None, ["modle.lr=3"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"prepare\.max_yaw"):
        load_config(None, ["prepare.max_yaw=abc"])


@pytest.mark.parametrize("override, key", [
    ("data.split_row=300", "data.split_row"),
    ("stages.encoder.lr=-1", "stages.encoder.lr"),
    ("trainer.precision=8-bit", "trainer.precision"),
    ("augment.blend_min=0.9", "augment.blend_min"),
    ("data.image_size=500", "data.image_size"),
    ("prepare.seed=-1", "prepare.seed"),
    ("augment.seed=-3", "augment.seed"),
])
def test_out_of_range_values_are_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_experiment_file_then_overrides(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("data:\n  image_size: 112\nmodel:\n  use_landmarks: false\n")
    cfg = load_config(exp, ["data.image_size=64"])
    assert cfg.data.image_size == 64 and cfg.model.use_landmarks is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  use_landmark: false\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.use_landmark.*did you mean 'model\.use_landmarks'"):
        load_config(bad)


def test_resolved_config_is_saved_and_reloads(tmp_path):
    cfg = load_config(None, ["run.seed=7"])
    path = save_config(cfg, tmp_path)
    assert OmegaConf.load(path).run.seed == 7


EXPERIMENTS = sorted(p for p in (REPO / "experiments").rglob("*.yaml") if "sweeps" not in p.parts)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(REPO / "experiments")))
def test_every_experiment_file_loads(path):
    load_config(path)


def test_cli_keeps_an_options_name_equals_value_for_the_option():
    """`antimask evaluate RUN --with paper=RUNS/paper eval.bootstrap=50`: the word after --with is its value,
    the other key=value word is a config override, whatever their order."""
    from antimask.cli import _split_overrides, _value_options, build_parser

    options = frozenset(_value_options(build_parser()))
    assert {"--with", "--config", "--name", "--root"} <= options and "--improved" not in options
    argv = ["evaluate", "runs/x", "--with", "paper=runs/paper", "eval.bootstrap=50", "--with=b=runs/b",
            "--name", "n=1", "data.store=s"]
    plain, overrides = _split_overrides(argv, options)
    assert overrides == ["eval.bootstrap=50", "data.store=s"]
    args = build_parser().parse_args(plain)
    assert args.with_runs == ["paper=runs/paper", "b=runs/b"] and args.name == "n=1"
