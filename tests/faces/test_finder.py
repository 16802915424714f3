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
from antimask.faces.photos import load_rgb

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


def test_the_cnn_is_not_run_on_a_strip_too_thin_for_it_once_scaled_down():
    """dlib's CNN raises below ~10 px a side (for some sizes after writing past its buffers): a 24 x 3000 strip
    is 3 px high at predict.cnn_max_side=400 and holds no face it could find."""
    opts = load_config().predict
    assert finder.run_detector(np.full((24, 3000, 3), 128, np.uint8), "cnn", opts) == []


def test_a_gray_photos_tight_crop_is_judged_by_the_verifier_not_by_the_skin_colour_it_cannot_have(masked_dir):
    opts = load_config().predict
    photo = load_rgb(masked_dir / "masked_0001.jpg", 10**8)
    colour = finder.find_faces(photo, opts, 64, 27).faces
    assert [f.detector for f in colour] == ["crop"]
    gray = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)  # Cr = Cb = 128 everywhere
    judged = []

    def verifier(aligned):
        judged.append(aligned)
        return None

    found = finder.find_faces(gray, opts, 64, 27, verifier=verifier).faces
    assert [f.detector for f in found] == ["crop"] and judged
    assert finder.is_gray(found[0].aligned, 27, opts) and not finder.is_gray(colour[0].aligned, 27, opts)
    # with nothing else to judge it the crop is refused, saying why: the residual alone passes a flat gray wall
    box = finder.run_detector(gray, "crop", opts)[0]
    with pytest.raises(finder.Rejected, match="gray photo has no skin colour to check.*predict.verify_faces"):
        finder.verify_face(gray, box, "crop", 64, 27, opts, "predict", "x")
    with pytest.raises(finder.Rejected, match="no face found"):
        finder.find_faces(np.full((240, 240, 3), 128, np.uint8), opts, 64, 27)


def test_tight_crop_boxes_are_the_photo_then_its_top_and_middle_squares_within_the_aspect_limits():
    def boxes(h, w, max_aspect=1.6, squares=2.0):
        return [d.box for d in finder.tight_crop_box(np.zeros((h, w, 3), np.uint8), max_aspect, squares)]

    assert boxes(100, 100) == [(0, 0, 100, 100)]  # square: nothing else to offer
    assert boxes(150, 100) == [(0, 0, 100, 150), (0, 0, 100, 100), (0, 25, 100, 125)]
    assert boxes(180, 100) == [(0, 0, 100, 100), (0, 40, 100, 140)]  # too tall for the whole photo
    assert boxes(100, 150) == [(0, 0, 150, 100), (0, 0, 100, 100), (25, 0, 125, 100)]  # wide: left, middle
    assert boxes(250, 100) == []  # beyond both limits
    assert boxes(150, 100, squares=0.0) == [(0, 0, 100, 150)]  # the key off: the old single box
    with pytest.raises(ConfigError, match="predict.crop_squares_max_aspect"):
        load_config(None, ["predict.crop_squares_max_aspect=0.5"])
    cfg = load_config()
    assert (cfg.prepare.crop_squares_max_aspect, cfg.predict.crop_squares_max_aspect) == (0.0, 2.0)


def _tight_face_crop() -> tuple[np.ndarray, np.ndarray]:
    """(a 200 x 200 tight crop of the astronaut's face, HOG's 68 landmarks in its pixels)."""
    image = portraits()["astronaut"]
    truth = finder.find_faces(image, load_config(None, ["predict.detectors=[hog]"]).predict, 64, 27).faces[0]
    x0, y0, x1, y1 = truth.box
    pad = (x1 - x0) // 10
    face = cv2.resize(np.ascontiguousarray(image[y0 - pad:y1 + pad, x0 - pad:x1 + pad]), (200, 200))
    return face, (truth.landmarks - [x0 - pad, y0 - pad]) * 200 / (x1 - x0 + 2 * pad)


def test_a_tall_face_crop_is_found_through_its_top_square_where_hog_finds_the_face():
    face, truth = _tight_face_crop()
    eyes_truth = truth[36:48]  # HOG's eyes in the crop's pixels
    # a portrait crop 1.8x as tall as wide, as masked_real's: the tight face square on top, a dark coat below
    tall = np.concatenate([face, np.full((160, 200, 3), 30, np.uint8)], axis=0)
    old = load_config(None, ["predict.detectors=[crop]", "predict.crop_squares_max_aspect=0"]).predict
    with pytest.raises(finder.Rejected, match="no face found"):
        finder.find_faces(tall, old, 64, 27)
    opts = load_config(None, ["predict.detectors=[crop]"]).predict
    found = finder.find_faces(tall, opts, 64, 27)
    assert len(found.faces) == 1 and found.faces[0].detector == "crop"
    assert found.faces[0].box == (0, 0, 200, 200)  # the top square, the first box that fits
    assert np.abs(found.faces[0].landmarks[36:48] - eyes_truth).max() < 5  # px of 200: on the eyes


def test_a_found_face_inside_the_tight_crops_face_is_a_part_of_it_and_is_replaced(monkeypatch):
    face, truth = _tight_face_crop()
    cx, cy = truth[36:42].mean(0)
    opts = load_config(None, ["predict.detectors=[hog,crop]"]).predict
    # what a low-threshold HOG box on an eye gives: the shape predictor draws a small "face" around the eye
    eye_box = (int(cx - 25), int(cy - 25), int(cx + 25), int(cy + 25))
    part = finder.verify_face(face, finder.Detection(eye_box, 0.0, 1.0), "hog", 64, 27, opts, "predict", "x")
    replaced = finder._replace_parts(face, [part], 64, 27, opts, "predict", "x", None)
    assert [f.detector for f in replaced] == ["crop"]
    assert np.abs(replaced[0].landmarks[36:42].mean(0) - [cx, cy]).max() < 5  # the whole face, on its eye
    # a face that is not inside the crop's face stays, and the crop's face is then not added
    far = finder.verify_face(face, finder.Detection((0, 0, 200, 200), 0.0, 1.0), "hog", 64, 27, opts, "predict", "x")
    assert finder._replace_parts(face, [far], 64, 27, opts, "predict", "x", None) == [far]
    # a part beside the whole face found by another box: the part goes, and that face is not added twice
    assert finder._replace_parts(face, [far, part], 64, 27, opts, "predict", "x", None) == [far]
    # find_faces asks after the detectors' faces, and only with the key on
    calls = []
    monkeypatch.setattr(finder, "_replace_parts", lambda image, faces, *a: calls.append(len(faces)) or faces)
    assert [f.detector for f in finder.find_faces(face, opts, 64, 27).faces] == ["hog"] and calls == [1]
    off = load_config(None, ["predict.detectors=[hog,crop]", "predict.crop_replaces_parts=false"]).predict
    assert [f.detector for f in finder.find_faces(face, off, 64, 27).faces] == ["hog"] and calls == [1]
    assert (load_config().prepare.crop_replaces_parts, load_config().predict.crop_replaces_parts) == (False, True)
