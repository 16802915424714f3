"""The config schema: defaults, experiment files, overrides, and clear errors for bad keys/values."""

import pytest
from omegaconf import OmegaConf

from antimask.config import SEGMENTER, STAGES, ConfigError, config_hash, load_config, save_config, split_row_for
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


@pytest.mark.parametrize("override, key, suggestion", [
    ("model.decoder=apperance", "model.decoder", "appearance"),
    ("model.encoder_loss=cosin", "model.encoder_loss", "cosine"),
    ("stages.mask_decoder.scheduler=cosin", "stages.mask_decoder.scheduler", "cosine"),
    ("trainer.gradient_clip_algorithm=nrm", "trainer.gradient_clip_algorithm", "norm"),
    ("trainer.precision=bf16-mixd", "trainer.precision", "bf16-mixed"),
    ("eval.ci_method=bca", "eval.ci_method", "BCa"),
    ("wandb.mode=ofline", "wandb.mode", "offline"),
    ("backbone.layer=fc9", "backbone.layer", "fc7"),
])
def test_a_value_outside_a_choice_names_the_key_and_the_closest_choice(override, key, suggestion, tmp_path):
    with pytest.raises(ConfigError, match=rf"'{key}'.*did you mean '{suggestion}'"):
        load_config(None, [override])
    section, value = override.split("=")
    *parents, leaf = section.split(".")
    exp = tmp_path / "exp.yaml"
    exp.write_text(OmegaConf.to_yaml(OmegaConf.from_dotlist([f"{section}={value}"])))
    with pytest.raises(ConfigError, match=rf"exp\.yaml.*'{key}'"):
        load_config(exp)


def test_choices_stay_plain_strings_so_saved_configs_and_hashes_do_not_change(tmp_path):
    cfg = load_config(None, ["model.decoder=appearance", "wandb.mode=online", "stages.encoder.scheduler=cosine"])
    assert type(cfg.model.decoder) is str and cfg.model.decoder == "appearance" and cfg.wandb.mode == "online"
    text = (save_config(cfg, tmp_path)).read_text()
    assert "decoder: appearance" in text and "mode: online" in text and "!!" not in text
    assert config_hash(load_config(tmp_path / "config.yaml")) == config_hash(cfg)


def test_a_run_saved_before_the_seam_rows_rename_still_loads(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text("eval:\n  seam_rows: 2\n")
    assert load_config(old).eval.seam_colour_rows == 2
    with pytest.raises(ConfigError, match="did you mean 'eval.seam_colour_rows'"):
        load_config(None, ["eval.seam_rows=2"])


def test_stages_are_listed_once_and_the_cli_offers_them():
    from antimask.cli import build_parser

    assert STAGES == ("face_decoder", "mask_decoder", "encoder")
    stage_arg = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                     if a.dest == "stage")
    assert tuple(stage_arg.choices) == (*STAGES, SEGMENTER)  # the mask segmenter trains like a stage


IMPROVEMENT_FILES = sorted((REPO / "experiments" / "improvements").glob("*.yaml"))


@pytest.mark.parametrize("path", IMPROVEMENT_FILES, ids=lambda p: p.stem)
def test_each_improvement_differs_from_its_base_only_in_what_it_says(path):
    raw = OmegaConf.load(path)
    assert set(raw.reuse_from) <= set(STAGES) and set(raw.reuse_from.values()) <= {"paper", "improved"}
    (base,) = raw.defaults
    plain = lambda cfg: OmegaConf.to_container(cfg, resolve=True)  # noqa: E731
    said = {k: v for k, v in plain(raw).items() if k not in ("defaults", "reuse_from")}
    expected = OmegaConf.to_container(OmegaConf.merge(load_config(path.parent / base), said), resolve=True)
    assert plain(load_config(path)) == expected
    assert plain(load_config(path)) != plain(load_config(path.parent / base))


def test_ablations_improved_offers_every_improvement_file():
    from antimask.ablations import improvement_names, improvement_reuse

    names = improvement_names()
    assert set(names) == {p.stem for p in IMPROVEMENT_FILES} and len(names) == 9
    # additions to the paper's model, then to the improved one, then removals from it
    assert names.index("paper+seam_colour") < names.index("improved+identity_loss") < names.index("improved-unet")
    assert improvement_reuse("paper+timm_encoder") == {"face_decoder": "paper", "mask_decoder": "paper",
                                                       "encoder": "improved"}


def test_a_choice_written_as_a_number_means_its_text(tmp_path):
    """`trainer.precision=32` worked while the key was a plain string; the Literal type keeps it working."""
    assert load_config(overrides=["trainer.precision=32"]).trainer.precision == "32"
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("trainer:\n  precision: 32\n")
    assert load_config(experiment).trainer.precision == "32"
    with pytest.raises(ConfigError, match="trainer.precision"):
        load_config(overrides=["trainer.precision=31"])


def test_a_bad_override_among_good_ones_is_named_and_the_good_ones_all_apply():
    """Overrides merge in one step; a failing one is still found and named."""
    with pytest.raises(ConfigError, match="override 'data.batch_size=many'"):
        load_config(None, ["data.image_size=112", "data.batch_size=many", "run.seed=3"])
    with pytest.raises(ConfigError, match="override 'data.bogus=1'.*unknown config key"):
        load_config(None, ["data.image_size=112", "data.bogus=1"])
    cfg = load_config(None, ["data.image_size=112", "run.seed=3", "data.image_size=96"])
    assert cfg.data.image_size == 96 and cfg.run.seed == 3  # in order: the last one wins


def test_the_shared_schema_cannot_be_changed_and_configs_do_not_share_it():
    from omegaconf.errors import ReadonlyConfigError

    from antimask.config import schema

    with pytest.raises(ReadonlyConfigError):
        schema().data.image_size = 1
    cfg = load_config(None, [])
    cfg.data.image_size = 1  # a loaded config is the caller's own
    assert schema().data.image_size != 1 and load_config(None, []).data.image_size != 1
