"""Evaluation: per-face metrics of drawn lower faces, training-free baselines, and the report."""

from antimask.evaluation.baselines import BASELINES, create_baseline, list_baselines
from antimask.evaluation.metrics import (
    bootstrap_ci,
    cosine_similarity,
    dlib_descriptors,
    face_metrics,
    identity_distance,
    image_metrics,
    landmark_error,
    predict_landmarks,
    random_pair_cosine,
    verified,
    verified_share,
)
from antimask.evaluation.report import write_report

__all__ = [
    "BASELINES", "bootstrap_ci", "cosine_similarity", "create_baseline", "dlib_descriptors", "face_metrics",
    "identity_distance", "image_metrics", "landmark_error", "list_baselines",
    "predict_landmarks", "random_pair_cosine", "verified", "verified_share", "write_report",
]
