#!/usr/bin/env bash
# The store run_gpu_bench.sh carries to the GPU machine: 200 adult UTKFace photos of $ANTIMASK_DATA aligned at
# 224 px, no morphs, no features (made there), in benchmarks/device/store/ (git-ignored, about 30 MB: the
# working tree that travels may hold 64 MiB). Needs dlib, so it runs here. Run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../../.venv/bin/python}"
export ANTIMASK_DATA="${ANTIMASK_DATA:-$here/../../../shared/data}" NO_ALBUMENTATIONS_UPDATE=1
rm -rf "$here/store"
"$python" "$here/../bench_gpu.py" --make-store "$here/store" --photos "${PHOTOS:-200}"
du -sh "$here/store"
