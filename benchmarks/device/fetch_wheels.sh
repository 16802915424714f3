#!/usr/bin/env bash
# The packages antimask imports that the lent GPU machine's image lacks (the rest, torch 2.11, Lightning 2.6.6,
# timm, torchmetrics, opencv, scikit-image, PyYAML, are there), as wheels for its Python 3.12 on x86-64, into
# benchmarks/device/wheels/ (git-ignored; run_gpu_bench.sh installs them there). The versions are this checkout's.
# dlib is not among them: it has no wheel for that machine, and the benchmark needs it only to prepare a store,
# which is done here (make_store.sh). Run from anywhere: benchmarks/device/fetch_wheels.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../../.venv/bin/python}"
rm -rf "$here/wheels"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$here/wheels" \
    omegaconf==2.4.0 albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic_core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 simsimd==6.5.16 stringzilla==5.3.2
ls -1 "$here/wheels"
du -sh "$here/wheels"
