"""The face finder: one function for prepare and predict, and the skin-colour check of its tight-crop box."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from antimask import inference
from antimask.config import ConfigError, load_config
from antimask.data import prepare
from antimask.data.sample import portraits
from antimask.faces import finder

from test_inference import make_run


def test_prepare_and_predict_find_faces_with_the_same_function(monkeypatch, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(portraits()["astronaut"]).save(photo)
    sections = []
    real = finder.find_faces

    def spy(image, opts, size, split_row, **kwargs):
        sections.append(kwargs.get("section", "predict"))
        return real(image, opts, size, split_row, **kwargs)

    monkeypatch.setattr(finder, "find_faces", spy)
    result = prepare.process_photo(str(photo), prepare._photo_options(load_config()))
    assert result["status"] == "ok" and sections == ["prepare"]
    results = inference.predict(make_run(tmp_path / "run"), [photo], tmp_path / "out", log=lambda msg: None)
    assert results[str(photo)]["status"] == "ok" and sections == ["prepare", "predict"]


def test_both_sections_hold_the_finders_keys_with_their_own_defaults():
    cfg = load_config()
    assert set(finder.Face.__dataclass_fields__) >= {"box", "detector", "score", "landmarks", "matrix", "aligned"}
    for key in ("pad", "detect_max_side", "upsample", "crop_max_aspect", "min_face", "max_residual", "crop_min_skin"):
        assert key in cfg.prepare and key in cfg.predict
    assert (cfg.prepare.min_face, cfg.predict.min_face) == (48, 24)
    assert (cfg.prepare.max_residual, cfg.predict.max_residual) == (25.0, 15.0)
    assert (cfg.prepare.crop_max_aspect, cfg.predict.crop_max_aspect) == (1.4, 1.6)
    assert load_config(None, ["prepare.min_face=30", "predict.crop_min_skin=0.5"]).prepare.min_face == 30
    with pytest.raises(ConfigError, match="predict.align_points"):
        load_config(None, ["predict.align_points=jaw"])


def _face_of_colour(y: int, cr: int, cb: int, size: int = 64) -> np.ndarray:
    ycc = np.empty((size, size, 3), np.uint8)
    ycc[...] = (y, cr, cb)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def test_skin_thresholds_are_config_keys_with_the_old_values():
    opts = load_config().predict
    assert (opts.skin_cr_min, opts.skin_cr_max, opts.skin_cb_min, opts.skin_cb_max) == (133, 180, 70, 135)
    assert (opts.skin_band_top, opts.skin_band_left, opts.skin_band_right) == (0.3, 0.15, 0.85)
    skin = _face_of_colour(150, 150, 100)
    assert finder.skin_fraction(skin, 27, opts) == 1.0
    assert finder.skin_fraction(_face_of_colour(150, 120, 100), 27, opts) == 0.0
    redder = load_config(None, ["predict.skin_cr_min=160"]).predict
    assert finder.skin_fraction(skin, 27, redder) == 0.0
    # only the band from skin_band_top down to the split row counts
    half = skin.copy()
    half[:, 32:] = 255
    assert finder.skin_fraction(half, 27, opts) == pytest.approx((32 - 9) / (54 - 9))
    wide = load_config(None, ["predict.skin_band_left=0.5", "predict.skin_band_right=1.0"]).predict
    assert finder.skin_fraction(half, 27, wide) == 0.0
    with pytest.raises(ConfigError, match="predict.skin_cr_min"):
        load_config(None, ["predict.skin_cr_min=200"])
    with pytest.raises(ConfigError, match="prepare.skin_band_left"):
        load_config(None, ["prepare.skin_band_left=0.9"])


def test_a_crop_with_too_little_skin_is_rejected_and_the_key_decides():
    rng = np.random.default_rng(0)
    image = portraits()["astronaut"]
    h, w = image.shape[:2]
    side = min(h, w)
    crop = np.ascontiguousarray(image[:side, (w - side) // 2:(w - side) // 2 + side])
    opts = load_config(None, ["predict.detectors=[crop]"]).predict
    found = finder.find_faces(crop, opts, 64, 27)
    assert found.faces and found.faces[0].detector == "crop"
    strict = load_config(None, ["predict.detectors=[crop]", "predict.skin_cr_min=180", "predict.skin_cb_max=70"]).predict
    with pytest.raises(finder.Rejected, match="no face found"):
        finder.find_faces(crop, strict, 64, 27)
    noise = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    with pytest.raises(finder.Rejected, match="no face found"):
        finder.find_faces(noise, opts, 64, 27)
