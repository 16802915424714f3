"""dlib's descriptor on real aligned UTKFace faces: 128-d, identity-preserving, batched == one by one."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch

from antimask.faces import dlib_models
from antimask.backbones import cached_features, create_backbone
from antimask.faces.align import align_face
from antimask.faces.images import to_float
from antimask.data.store import Table, open_store, write_group

from helpers import adult_utkface


def aligned_faces(folder, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect, landmark and align the first n adult photos where dlib finds a face.

    Returns uint8 (n, 224, 224, 3) faces, their (n, 68, 2) landmarks, and (n, 128) descriptors computed
    the usual dlib way on the unaligned photo (its own detection and landmarks).
    """
    faces, marks, refs = [], [], []
    for path in adult_utkface(folder, 4 * n):
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        img = cv2.copyMakeBorder(img, 80, 80, 80, 80, cv2.BORDER_REPLICATE)
        rects = dlib_models.hog_detector()(img, 1)
        if not rects:
            continue
        shape = dlib_models.shape_predictor()(img, rects[0])
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        face, lmk, _, _ = align_face(img, pts, 224)
        faces.append(face)
        marks.append(lmk)
        refs.append(np.asarray(dlib_models.face_descriptor().compute_face_descriptor(img, shape), np.float32))
        if len(faces) == n:
            break
    assert len(faces) == n, f"dlib found faces in only {len(faces)} of the sample photos"
    return np.stack(faces), np.stack(marks), np.stack(refs)


@pytest.fixture(scope="module")
def faces(utkface_dir):
    return aligned_faces(utkface_dir, 4)


@pytest.fixture(scope="module")
def dlib_backbone():
    return create_backbone("dlib")


def test_descriptor_is_128d_unitish_and_frozen(faces, dlib_backbone):
    out = dlib_backbone(to_float(faces[0]))
    assert out.shape == (4, 128) and out.dtype == torch.float32 and not out.requires_grad
    norms = out.norm(dim=1)
    assert ((norms > 0.8) & (norms < 2.0)).all(), norms  # dlib's own descriptors have norms of 1.2-1.6
    assert dlib_backbone.differentiable is False and dlib_backbone.feature_dim == 128
    path = dlib_models.model_path(dlib_models.FACE_DESCRIPTOR)
    assert dlib_backbone.weights_hash == hashlib.sha256(path.read_bytes()).hexdigest()


def test_template_landmarks_match_dlibs_own_pipeline(faces, dlib_backbone):
    """The template stands in for each face's landmarks: the result stays near dlib's usual descriptor."""
    ours = dlib_backbone(to_float(faces[0])).numpy()
    gap = np.linalg.norm(ours - faces[2], axis=1)
    assert (gap < 0.3).all(), gap
    others = np.linalg.norm(ours[:, None] - faces[2][None], axis=2) + np.eye(len(ours)) * 1e9
    assert (gap < others.min(axis=1)).all()


def test_flipped_face_is_closer_than_another_person(faces, dlib_backbone):
    x = to_float(faces[0])
    f, flipped = dlib_backbone(x), dlib_backbone(x.flip(-1))
    same = (f - flipped).norm(dim=1)
    others = torch.cdist(f, f) + torch.eye(len(f)) * 1e9
    assert (same < 0.4).all(), same
    assert (same < others.min(dim=1).values).all(), (same, others.min(dim=1).values)


def test_batched_equals_one_by_one(faces, dlib_backbone):
    x = to_float(faces[0])
    batched = dlib_backbone(x)
    single = torch.cat([dlib_backbone(x[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_other_sizes_are_resized_to_224(faces, dlib_backbone):
    x = to_float(faces[0][:2])
    small = torch.nn.functional.interpolate(x, size=160, mode="bilinear", antialias=True)
    assert dlib_backbone.preprocess(small).shape == (2, 3, 224, 224)
    assert ((dlib_backbone(small) - dlib_backbone(x)).norm(dim=1) < 0.25).all()


def test_cache_of_a_real_store_equals_the_backbone(faces, dlib_backbone, tmp_path):
    images, marks, _ = faces
    table = Table.from_records([{"row": i, "kind": "photo", "split": "train", "identity": str(i)} for i in range(len(images))])
    write_group(tmp_path, images, marks, table, {})
    store = open_store(tmp_path)
    cached = cached_features(store, dlib_backbone, batch_size=3, progress=False)
    np.testing.assert_allclose(cached, dlib_backbone(to_float(images)).numpy(), atol=1e-6)
