"""MobileFaceNet's AFDB verification AUC (first 20 people, six photos each) for each crop, input range and
channel order, with and without centring (the mean embedding of 300 UTKFace faces subtracted before the cosine),
at the embedding and at two earlier layers (spatially pooled). docs/face_networks.md quotes it.

    python docs/results/face_networks/mobilefacenet_probe.py STORE   # a 224 px store, e.g. of UTKFace photos
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from benchmarks.bench_face_networks import afdb_root, align_afdb, roc_auc, verification_pairs  # noqa: E402

from antimask.backbones.face_networks import model_json, template_crop_matrix, warp_faces  # noqa: E402
from antimask.backbones.tfjs import load_tfjs_graph  # noqa: E402

OUTPUTS = ["MobileFaceNet/Logits/SpatialSqueeze", "MobileFaceNet/Logits/Conv/BatchNorm/FusedBatchNorm",
           "MobileFaceNet/MobileFaceNet/Conv2d_7/add"]


def main(store: str) -> None:
    faces, ids, _ = align_afdb(afdb_root(), 20, 6)
    reference = np.load(Path(store) / "images.npy", mmap_mode="r")[:300]
    net = load_tfjs_graph(model_json("mobilefacenet"), OUTPUTS)
    pairs, same = verification_pairs(ids)

    def embed(arr, scale, offset, bgr, crop):
        x = torch.from_numpy(np.array(arr)).permute(0, 3, 1, 2).float() / 255
        if x.shape[-1] != 224:
            x = torch.nn.functional.interpolate(x, size=224, mode="bilinear", antialias=True)
        x = warp_faces(x, template_crop_matrix(crop, 224, 112), 112) * scale + offset
        x = x.flip(1) if bgr else x
        with torch.no_grad():
            out = net(x.permute(0, 2, 3, 1).contiguous())
        return [t.flatten(1, -2).mean(1).numpy() if t.dim() == 4 else t.numpy() for t in out]

    def auc(f, mean=None):
        f = f.astype(np.float64) - (0 if mean is None else mean)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        return roc_auc((f[pairs[:, 0]] * f[pairs[:, 1]]).sum(1), same)

    print("crop scale offset bgr | AUC raw/centred per output:", ", ".join(OUTPUTS))
    for crop in ("arcface", "face_box"):
        for scale, offset in ((1, 0), (2, -1), (255, 0), (255, -127.5)):
            for bgr in (False, True):
                ours, ref = embed(faces, scale, offset, bgr, crop), embed(reference, scale, offset, bgr, crop)
                cells = [f"{auc(a):.3f}/{auc(a, r.mean(0)):.3f}" for a, r in zip(ours, ref)]
                print(crop, scale, offset, bgr, "|", " ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
