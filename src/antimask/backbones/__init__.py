"""Frozen face networks that turn aligned faces into the features the decoders draw from, and their cache."""

from antimask.backbones.base import features_of, to_training_device, training_device
from antimask.backbones.cache import (
    POOL_MIN_ROWS,
    DescriptorPool,
    FeatureCacheError,
    cache_file,
    cached_features,
    feature_description,
    feature_key,
    features_dir,
    features_in_memory,
    load_cached_features,
    teacher_features,
)
from antimask.backbones.registry import (
    BackboneError,
    FrozenBackbone,
    WeightsError,
    backbone_from_config,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "POOL_MIN_ROWS", "BackboneError", "DescriptorPool", "FeatureCacheError", "FrozenBackbone", "WeightsError",
    "backbone_from_config", "cache_file", "cached_features", "create_backbone", "feature_description", "feature_key",
    "features_dir", "features_in_memory", "features_of", "list_backbones", "load_cached_features",
    "register_backbone", "teacher_features", "to_training_device", "training_device",
]
