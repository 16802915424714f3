"""augment_store on a real store: train-only parents, counts, idempotence, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from antimask.config import load_config
from antimask.data.augment import augment_store
from antimask.data.store import StoreError, open_store


def _cfg(**augment):
    overrides = [f"augment.{k}={v}" for k, v in {"neighbors": 3, "workers": 1, **augment}.items()]
    return load_config(overrides=overrides)


def test_morphs_come_from_train_faces_only(make_store):
    root = make_store(60)
    result = augment_store(root, _cfg(), progress=False)
    store = open_store(root)
    train = set(store.rows("train", morphs=False).tolist())
    assert result["added"] == result["morphs"] == 3 * len(train) == store.num_morphs
    morphs = store.meta["kind"] == "morph"
    parents = set(store.meta["parent_a"][morphs]) | set(store.meta["parent_b"][morphs])
    assert parents <= train, f"val/test faces used as parents: {parents - train}"
    assert (store.meta["split"][morphs] == "train").all()
    blends = store.meta["blend"][morphs]
    assert ((blends >= 0.3) & (blends <= 0.7)).all() and blends.std() > 0.05
    assert (store.meta["parent_a"][morphs] != store.meta["parent_b"][morphs]).all()
    # each morph's landmarks are the blend of its parents' (the pixels come from morph(), tested apart)
    m = int(np.flatnonzero(morphs)[5])
    pa, pb, t = store.meta["parent_a"][m], store.meta["parent_b"][m], store.meta["blend"][m]
    expect = (1 - t) * store.landmarks[pa] + t * store.landmarks[pb]
    np.testing.assert_allclose(store.landmarks[m], expect, atol=1e-3)
    assert store.images[m].std() > 10
    summary = store.summary()
    assert summary["morphs"] == result["morphs"] and summary["morphs_per_split"] == {"train": result["morphs"]}


def test_augment_twice_adds_nothing_and_params_rebuild(make_store):
    root = make_store(40)
    first = augment_store(root, _cfg(workers=2), progress=False)
    digest = open_store(root).digest
    again = augment_store(root, _cfg(workers=2), progress=False)
    assert again["added"] == 0 and again["morphs"] == first["morphs"]
    assert open_store(root).digest == digest
    assert open_store(root).num_morphs == first["morphs"]
    other = augment_store(root, _cfg(neighbors=2), progress=False)  # other params: rebuilt, not added
    assert other["added"] == other["morphs"] == 2 * first["train_faces"] == open_store(root).num_morphs


def test_same_seed_same_morphs(make_store):
    a, b = make_store(30, name="a"), make_store(30, name="b")
    augment_store(a, _cfg(), progress=False)
    augment_store(b, _cfg(workers=2), progress=False)
    sa, sb = open_store(a), open_store(b)
    assert sa.digest == sb.digest
    np.testing.assert_array_equal(sa.meta["blend"], sb.meta["blend"])


def test_too_many_neighbours_names_both_numbers(make_store):
    root = make_store(20)  # 14 train faces
    with pytest.raises(ValueError, match=r"neighbors=20.*only 14"):
        augment_store(root, _cfg(neighbors=20), progress=False)


def test_store_without_train_faces_is_an_error(make_store):
    root = make_store(20, splits=["val"] * 10 + ["test"] * 10)
    with pytest.raises(StoreError, match="no train faces"):
        augment_store(root, _cfg(), progress=False)


def test_a_re_split_store_gets_new_morphs_from_its_new_train_faces(make_store):
    """The content digest ignores the split: morphs kept across a re-split would hold faces now in val/test."""
    root = make_store(40)
    augment_store(root, _cfg(), progress=False)
    store = open_store(root)
    old_train = set(store.rows("train", morphs=False).tolist())
    splits = list(store.meta["split"][store.meta["kind"] == "photo"])
    resplit = splits[-3:] + splits[:-3]  # the same photos, other faces held out
    make_store(40, splits=resplit)
    store = open_store(root)  # the old morphs are still there until augment runs
    assert set(store.rows("train", morphs=False).tolist()) != old_train
    result = augment_store(root, _cfg(), progress=False)
    store = open_store(root)
    train = set(store.rows("train", morphs=False).tolist())
    morphs = store.meta["kind"] == "morph"
    parents = set(store.meta["parent_a"][morphs]) | set(store.meta["parent_b"][morphs])
    assert result["added"] == result["morphs"] == 3 * len(train) and parents <= train
