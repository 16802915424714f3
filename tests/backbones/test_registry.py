"""The registry: names to frozen backbones, built from the config."""

from __future__ import annotations

import pytest

from antimask.backbones import BackboneError, backbone_from_config, create_backbone, list_backbones
from antimask.config import ConfigError, load_config


def test_list_and_unknown_names():
    assert {"dlib", "vggface", "timm:<model>"} <= set(list_backbones())
    with pytest.raises(BackboneError, match="did you mean 'vggface'"):
        create_backbone("vgg_face")
    with pytest.raises(BackboneError, match="timm cannot build 'not_a_model'"):
        create_backbone("timm:not_a_model", weights="random")


def test_default_config_builds_dlib():
    backbone = backbone_from_config(load_config())
    assert backbone.name == "dlib" and backbone.feature_dim == 128 and not backbone.differentiable


def test_config_options_reach_vggface():
    cfg = load_config(overrides=["backbone.name=vggface", "backbone.weights=random", "backbone.layer=fc6",
                                 "backbone.relu=false"])
    backbone = backbone_from_config(cfg)
    assert backbone.options == {"layer": "fc6", "relu": False} and backbone.weights_hash == "random-seed0"
    assert backbone_from_config(cfg.backbone).options == backbone.options


def test_config_rejects_unknown_backbone_names():
    with pytest.raises(ConfigError, match="backbone.name"):
        load_config(overrides=["backbone.name=resnet"])
    with pytest.raises(ConfigError, match="backbone.batch_size"):
        load_config(overrides=["backbone.batch_size=0"])


def test_the_schema_knows_exactly_the_registry_names():
    """config.BACKBONES lets a misspelt backbone fail before anything loads; it must list what the registry has."""
    from antimask.config import BACKBONES, TIMM_PREFIX

    assert list_backbones() == sorted(BACKBONES) + [TIMM_PREFIX + "<model>"]
