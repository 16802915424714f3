"""`antimask predict` on real masked photos with a tiny untrained run (the model's quality is not tested)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from antimask import inference
from antimask.config import load_config, save_config
from antimask.faces import finder
from antimask.faces.photos import load_rgb
from antimask.runs import ManifestError

torch.set_num_threads(1)

FEATURE_DIM = 128
SMALL = ["data.image_size=64", "model.shared_dim=64", "model.decoder_channels=32",
         "model.decoder_upsamplings=3", "model.encoder_width=8"]


def _save_stage(module, path: Path, root: Path) -> None:
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
    trainer.strategy.connect(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(path))


def make_run(folder: Path, stages=("encoder", "mask_decoder")) -> Path:
    """A run folder as `antimask train` leaves it: config.yaml, manifest.json, stage checkpoints."""
    from antimask.models.modules import EncoderDistillModule, MaskDecoderModule

    torch.manual_seed(0)
    cfg = load_config(None, SMALL + [f"run.dir={folder}"])
    modules = {"encoder": EncoderDistillModule.from_config(cfg, FEATURE_DIM),
               "mask_decoder": MaskDecoderModule.from_config(cfg, FEATURE_DIM)}
    manifest = {"stages": {}}
    for stage in stages:
        rel = f"{stage}/checkpoints/best.ckpt"
        _save_stage(modules[stage], folder / rel, folder)
        manifest["stages"][stage] = {"status": "done", "best_checkpoint": rel, "last_checkpoint": rel}
    save_config(cfg, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def sample_50(folder: Path) -> list[Path]:
    """The fixed 50-photo sample the issue measures detection on: every 20th photo in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")[::20][:50]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def sample_results(tiny_run, masked_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    photos = sample_50(masked_dir)
    assert len(photos) == 50
    return inference.predict(tiny_run, photos, out, aligned=True, log=lambda msg: None), out


def _photo_coords(shape, matrix):
    """Aligned-frame (x, y) of every photo pixel centre."""
    h, w = shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ax = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    ay = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return ax, ay


def test_completes_a_face_in_most_masked_photos(sample_results):
    results, _ = sample_results
    ok = [k for k, r in results.items() if r["status"] == "ok"]
    assert len(results) == 50
    assert len(ok) / len(results) >= 0.8, {Path(k).name: r["reason"] for k, r in results.items() if r["status"] != "ok"}
    for key in ok:
        assert results[key]["faces"] and all(f["detector"] in finder.DETECTORS for f in results[key]["faces"])


def test_outputs_are_tagged_pngs_of_the_photo_size(sample_results):
    results, out = sample_results
    ok = {k: r for k, r in results.items() if r["status"] == "ok"}
    for key, r in ok.items():
        stem = Path(key).stem
        with Image.open(key) as src:
            w, h = src.size
        for name, size in ((f"{stem}_unmasked.png", (w, h)), (f"{stem}_compare.png", (2 * w, h)),
                           (f"{stem}_face0_aligned.png", (64, 64)), (f"{stem}_face0_completed.png", (64, 64))):
            path = out / name
            assert str(path) in r["outputs"]
            with Image.open(path) as im:
                assert im.format == "PNG" and im.size == size and im.mode == "RGB"
                assert "synthesized by antimask" in im.text[inference.PNG_KEY]
                assert "not a photograph" in im.text["Comment"]


def test_upper_face_is_kept_and_lower_face_is_drawn(sample_results, tiny_run):
    results, out = sample_results
    cfg = load_config(tiny_run / "config.yaml")
    size, split = 64, 27  # split_row_for(64)
    seam = int(cfg.model.seam_width)
    single = [k for k, r in results.items() if r["status"] == "ok" and len(r["faces"]) == 1]
    assert len(single) >= 20
    changed_any = 0
    for key in single:
        photo = load_rgb(key, 10**8)
        result = np.asarray(Image.open(out / f"{Path(key).stem}_unmasked.png"))
        matrix = np.asarray(results[key]["faces"][0]["matrix"])
        ax, ay = _photo_coords(photo.shape, matrix)
        inside = (ax >= 0) & (ax < size)
        upper = inside & (ay >= 0) & (ay < split - seam / 2 - 1)
        lower = inside & (ax >= 8) & (ax < size - 8) & (ay > split + seam) & (ay < size - 8)
        # nothing outside the pasted square changes either
        outside = (ax < -1) | (ax > size + 1) | (ay < split - seam / 2 - 1) | (ay > size + 1)
        assert np.array_equal(photo[outside], result[outside]), Path(key).name
        assert upper.sum() > 0 and np.array_equal(photo[upper], result[upper]), Path(key).name
        if lower.sum() > 0:
            diff = np.abs(photo[lower].astype(int) - result[lower].astype(int)).mean()
            changed_any += diff > 5
    assert changed_any >= 0.9 * len(single)


def test_a_photo_without_a_face_is_skipped_and_the_rest_go_on(tiny_run, masked_dir, tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 240, 3), dtype=np.uint8)).save(noise)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    real = masked_dir / "masked_0061.jpg"  # HOG finds this one
    out = tmp_path / "out"
    args = argparse.Namespace(run_dir=str(tiny_run), images=[str(noise), str(real), str(broken)], out=str(out),
                              aligned=False, overrides=[])
    assert inference.cmd_predict(args) == 1
    results = inference.predict(tiny_run, [noise, real, broken], out, log=lambda msg: None)
    assert results[str(noise)]["status"] == "failed" and results[str(noise)]["reason"] == "no face found"
    assert results[str(broken)]["status"] == "failed" and "not an image" in results[str(broken)]["reason"]
    assert results[str(real)]["status"] == "ok"
    assert (out / "masked_0061_unmasked.png").is_file() and (out / "masked_0061_compare.png").is_file()
    assert not (out / "noise_unmasked.png").exists()
    assert inference.failed(results) == [str(noise), str(broken)]
    args.images = [str(real)]
    assert inference.cmd_predict(args) == 0


def _tiny_photos(folder: Path) -> dict[str, Path]:
    """A 1x1 and a 4x4 photo: dlib's face CNN raises on images this small, for some after overrunning its buffers."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny = {"1x1": folder / "one_pixel.png", "4x4": folder / "four_pixels.png"}
    for size, path in tiny.items():
        side = int(size.split("x")[0])
        Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(path)
    return tiny


def test_photos_too_small_to_hold_a_face_are_reported_and_the_others_are_written(tiny_run, masked_dir, tmp_path):
    photos = tmp_path / "photos"
    tiny = _tiny_photos(photos)
    real = photos / "masked_0061.jpg"  # HOG finds this one
    real.symlink_to(masked_dir / real.name)
    out = tmp_path / "out"
    results = inference.predict(tiny_run, [photos], out, log=lambda msg: None)
    assert results[str(real)]["status"] == "ok"
    assert sorted(results[str(real)]["outputs"]) == sorted(str(p) for p in out.iterdir())
    assert (out / "masked_0061_unmasked.png").is_file() and (out / "masked_0061_compare.png").is_file()
    for size, path in tiny.items():
        assert results[str(path)]["status"] == "failed", size
        assert results[str(path)]["reason"] == (f"image too small: {size} pixels, under the smallest face "
                                                "(min_face=24 px a side)")


def test_an_error_inside_face_finding_fails_that_photo_alone_with_the_error(tiny_run, masked_dir, tmp_path,
                                                                             monkeypatch):
    odd = tmp_path / "odd.png"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(odd)
    real = masked_dir / "masked_0061.jpg"
    find_faces = finder.find_faces

    def failing(image, *args, **kwargs):
        if image.shape[:2] == (200, 300):  # dlib's errors span lines; the last says what went wrong
            raise RuntimeError("\n\nError detected at line 2957.\nFilter windows must be small enough to fit.\n")
        return find_faces(image, *args, **kwargs)

    monkeypatch.setattr(finder, "find_faces", failing)
    out = tmp_path / "out"
    results = inference.predict(tiny_run, [odd, real], out, log=lambda msg: None)
    why = "face finding failed: RuntimeError: Filter windows must be small enough to fit."
    assert results[str(odd)] == {"status": "failed", "reason": why, "faces": [], "outputs": []}
    assert results[str(real)]["status"] == "ok" and (out / "masked_0061_unmasked.png").is_file()


def test_a_photo_given_twice_is_completed_once_and_every_output_is_reported(tiny_run, masked_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "masked_0061.jpg"
    photo.symlink_to(masked_dir / photo.name)
    (tmp_path / "alias").symlink_to(folder)
    out = tmp_path / "out"
    # the file, the folder holding it, the file through another path and through a link to its folder
    given = [photo, folder, tmp_path / "photos" / ".." / "photos" / photo.name, tmp_path / "alias" / photo.name]
    results = inference.predict(tiny_run, given, out, log=lambda msg: None)
    assert list(results) == [str(photo)] and results[str(photo)]["status"] == "ok"
    assert sorted(p.name for p in out.iterdir()) == ["masked_0061_compare.png", "masked_0061_unmasked.png"]
    assert sorted(results[str(photo)]["outputs"]) == sorted(str(p) for p in out.iterdir())
    # another name for the same file is another photo the user asked for: its own result and outputs
    other = tmp_path / "other.jpg"
    other.symlink_to(masked_dir / photo.name)
    both = inference.predict(tiny_run, [photo, other], out / "both", log=lambda msg: None)
    assert list(both) == [str(photo), str(other)] and all(r["status"] == "ok" for r in both.values())
    assert sorted(str(p) for p in (out / "both").iterdir()) == sorted(o for r in both.values() for o in r["outputs"])


@pytest.mark.parametrize("missing", ["encoder", "mask_decoder"])
def test_a_missing_stage_is_named(tiny_run, tmp_path, missing):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["stages"][missing]
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=f"stage '{missing}'"):
        inference.predict(run, [], tmp_path / "out")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        inference.predict(tmp_path, [], tmp_path / "out")


def test_predict_config_is_validated():
    from antimask.config import ConfigError

    with pytest.raises(ConfigError, match="predict.align_points"):
        load_config(None, ["predict.align_points=jaw"])
    with pytest.raises(ConfigError, match="predict.detectors"):
        load_config(None, ["predict.detectors=[hog,haar]"])


# ------------------------------------------------------------------------------------------- mask mode
def make_mask_run(folder: Path, segmenter: bool = True) -> Path:
    """A mask-aware run (U-Net decoder, model.mask_aware) with, optionally, a trained-shaped segmenter."""
    from antimask.models.modules import EncoderDistillModule, MaskDecoderModule
    from antimask.models.segmenter import MaskSegmenterModule

    torch.manual_seed(0)
    cfg = load_config(None, SMALL + [f"run.dir={folder}", "model.decoder=appearance", "model.mask_aware=true",
                                     "masks.segmenter_width=8", "masks.segmenter_depth=3"])
    modules = {"encoder": EncoderDistillModule.from_config(cfg, FEATURE_DIM),
               "mask_decoder": MaskDecoderModule.from_config(cfg, FEATURE_DIM)}
    if segmenter:
        modules["segmenter"] = MaskSegmenterModule.from_config(cfg)
    manifest = {"stages": {}}
    for stage, module in modules.items():
        rel = f"{stage}/checkpoints/best.ckpt"
        _save_stage(module, folder / rel, folder)
        manifest["stages"][stage] = {"status": "done", "best_checkpoint": rel, "last_checkpoint": rel}
    save_config(cfg, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _block_regions(module, faces, batch_size=64):
    """A stand-in for the segmenter's answer: a block over the aligned face's mouth and chin."""
    regions = np.zeros(np.asarray(faces).shape[:3], bool)
    regions[:, 36:56, 16:48] = True
    return regions


@pytest.fixture(scope="module")
def mask_results(masked_dir, tmp_path_factory):
    import unittest.mock

    run = make_mask_run(tmp_path_factory.mktemp("mask_run"))
    out = tmp_path_factory.mktemp("mask_pred")
    photos = sample_50(masked_dir)[:6]
    with unittest.mock.patch.object(inference, "predict_regions", _block_regions):
        results = inference.predict(run, photos, out, aligned=True, log=lambda msg: None)
    return run, results, out


def test_the_mode_follows_the_run(tiny_run, mask_results, tmp_path):
    run, results, _ = mask_results
    assert inference.choose_mode(tiny_run, load_config(tiny_run / "config.yaml"))[0] == "rows"
    mode, ckpt = inference.choose_mode(run, load_config(run / "config.yaml"))
    assert mode == "mask" and ckpt.name == "best.ckpt"
    assert {r["mode"] for r in results.values() if r["status"] == "ok"} == {"mask"}
    assert inference.choose_mode(run, load_config(run / "config.yaml", ["predict.mode=rows"]))[0] == "rows"
    with pytest.raises(inference.PredictError, match="needs a mask-aware run"):
        inference.choose_mode(tiny_run, load_config(tiny_run / "config.yaml", ["predict.mode=mask"]))
    bare = make_mask_run(tmp_path / "bare", segmenter=False)
    cfg = load_config(bare / "config.yaml")
    assert inference.choose_mode(bare, cfg)[0] == "rows"  # auto without a segmenter: the paper's rows
    with pytest.raises(inference.PredictError, match="needs a trained mask segmenter.*predict.segmenter=RUN_DIR"):
        inference.choose_mode(bare, load_config(bare / "config.yaml", ["predict.mode=mask"]))
    borrowed = load_config(bare / "config.yaml", ["predict.mode=mask", f"predict.segmenter={run}"])
    assert inference.choose_mode(bare, borrowed) == ("mask", run / "segmenter" / "checkpoints" / "best.ckpt")


def test_mask_mode_redraws_only_the_mask_found_and_writes_it(mask_results):
    run, results, out = mask_results
    ok = {k: r for k, r in results.items() if r["status"] == "ok" and len(r["faces"]) == 1}
    assert len(ok) >= 3
    for key, r in ok.items():
        stem = Path(key).stem
        photo = load_rgb(key, 10**8)
        result = np.asarray(Image.open(out / f"{stem}_unmasked.png"))
        mask = np.asarray(Image.open(out / f"{stem}_mask.png")) > 0
        with Image.open(out / f"{stem}_compare.png") as im:
            assert im.size == (3 * photo.shape[1], photo.shape[0])  # before | mask found | after
        assert np.asarray(Image.open(out / f"{stem}_face0_mask.png")).any()
        assert r["faces"][0]["mask_coverage"] == pytest.approx(20 * 32 / 64**2, abs=1e-3)
        ax, ay = _photo_coords(photo.shape, np.asarray(r["faces"][0]["matrix"]))
        # the block grown by masks.redraw_dilate_px + redraw_feather_px (4 + 4) and a pixel of interpolation
        near = (ax > 16 - 10) & (ax < 48 + 10) & (ay > 36 - 10) & (ay < 56 + 10)
        assert np.array_equal(photo[~near], result[~near]), stem
        inside = (ax > 18) & (ax < 46) & (ay > 38) & (ay < 54)
        assert mask[inside].all() and not mask[~near].any()
        assert np.abs(photo[inside].astype(int) - result[inside].astype(int)).mean() > 2


def test_every_face_must_pass_the_segmenters_face_head(mask_results, masked_dir, tmp_path, monkeypatch):
    """predict.verify_faces=true: a crop the face head scores below masks.face_threshold is no face (the detector
    cascade goes on to the next box); in the rows mode too, when the run has a segmenter. On by default."""
    run, results, _ = mask_results
    photos = [Path(k) for k, r in results.items() if r["status"] == "ok"][:2]
    scores = []

    def says(p):
        def face_probabilities(module, faces, batch_size=64):
            scores.append(len(faces))
            return np.full(len(faces), p, np.float32)
        return face_probabilities

    monkeypatch.setattr(inference, "predict_regions", _block_regions)
    monkeypatch.setattr(inference, "face_probabilities", says(0.2))
    on = ["predict.verify_faces=true"]
    refused = inference.predict(run, photos, tmp_path / "a", on + ["predict.mode=rows"], log=lambda msg: None)
    assert scores and all(r["status"] == "failed" and r["reason"] == "no face found" for r in refused.values())
    scores.clear()
    unchecked = inference.predict(run, photos, tmp_path / "off", ["predict.verify_faces=false"], log=lambda msg: None)
    assert not scores and all(r["status"] == "ok" for r in unchecked.values())
    by_default = inference.predict(run, photos, tmp_path / "default", log=lambda msg: None)
    assert scores and all(r["status"] == "failed" for r in by_default.values())
    monkeypatch.setattr(inference, "face_probabilities", says(0.8))
    kept = inference.predict(run, photos, tmp_path / "b", on, log=lambda msg: None)
    assert all(r["status"] == "ok" and r["mode"] == "mask" for r in kept.values())
    strict = inference.predict(run, photos, tmp_path / "c", on + ["masks.face_threshold=0.9"], log=lambda msg: None)
    assert all(r["status"] == "failed" for r in strict.values())


def test_faces_found_by_worker_processes_give_every_result_and_file_of_this_process(masked_dir, tmp_path):
    """predict.workers: from POOL_MIN_PHOTOS photos on, processes load the photos and find their faces (the face
    head rebuilt there from the segmenter's checkpoint); what predict returns and writes is the same."""
    run = make_mask_run(tmp_path / "run")
    tiny = _tiny_photos(tmp_path / "tiny")  # refused in the processes too, not raised by them
    photos = sample_50(masked_dir)[:inference.POOL_MIN_PHOTOS] + list(tiny.values())
    said = []
    one = inference.predict(run, photos, tmp_path / "one", ["predict.workers=1", "predict.mode=rows"],
                            log=said.append)
    assert not any("processes find the faces" in m for m in said)
    two = inference.predict(run, photos, tmp_path / "two", ["predict.workers=2", "predict.mode=rows"],
                            log=said.append)
    assert any(f"2 processes find the faces of the {len(photos)} photos" in m for m in said)
    assert list(one) == list(two) == [str(p) for p in photos]
    assert any("face head" in m for m in said)  # the faces were checked, here and in the workers
    ok = 0
    for key in one:
        a, b = one[key], two[key]
        assert (a["status"], a["reason"], a["faces"]) == (b["status"], b["reason"], b["faces"]), key
        assert [Path(p).name for p in a["outputs"]] == [Path(p).name for p in b["outputs"]]
        for p, q in zip(a["outputs"], b["outputs"]):
            assert Path(p).read_bytes() == Path(q).read_bytes(), p
        ok += a["status"] == "ok"
    assert ok >= 8  # most of the sample had a face to compare
    assert all(two[str(p)]["reason"].startswith("image too small") for p in tiny.values())


def test_face_finding_processes_that_fail_leave_the_photos_to_this_process_with_a_message(masked_dir, tmp_path):
    photos = sample_50(masked_dir)[:inference.POOL_MIN_PHOTOS]
    opts = load_config(None, ["predict.workers=2"]).predict
    said = []
    # the processes cannot load this face head and stop; this process has its own verifier and goes on
    found = list(inference.found_faces(photos, opts, 10**7, 64, 24, lambda aligned: None,
                                       tmp_path / "missing.ckpt", 0.3, log=said.append))
    assert [p for p, _ in found] == photos
    assert any("face-finding processes stopped" in m and f"other {len(photos)} photos" in m for m in said)
    assert sum(faces is not None for _, (_, faces, _) in found) >= 8  # found here, after all
