#!/usr/bin/env bash
# A Python 3.12 environment here with the GPU machine image's versions of what antimask imports (torch 2.11,
# torchvision 0.26, Lightning 2.6.6, numpy 2.5.2, ...; KINDS.md of the device tool) and, as there, no dlib and no
# wandb, in benchmarks/device/image-venv/ (git-ignored, about 4 GB with torch's CUDA libraries). Then
# `DRY_RUN=image benchmarks/device/run_gpu_bench.sh` runs the device script's steps on the CPU with the carried
# wheels and store: what would fail there for a version or a missing package fails here first, at no device time.
# Needs a Python 3.12 (PYTHON312, else python3.12 on the PATH or pyenv's 3.12). Run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON312:-}"
if [ -z "$py" ]; then
    if command -v python3.12 >/dev/null && python3.12 --version >/dev/null 2>&1; then py=python3.12
    elif command -v pyenv >/dev/null; then py="$(pyenv root)/versions/$(pyenv versions --bare | grep '^3\.12' | tail -1)/bin/python3.12"
    fi
fi
[ -n "$py" ] && "$py" --version || { echo "image_venv.sh: no Python 3.12 found (set PYTHON312)"; exit 1; }
rm -rf "$here/image-venv"
"$py" -m venv "$here/image-venv"
"$here/image-venv/bin/pip" install --quiet --upgrade pip
"$here/image-venv/bin/pip" install --quiet torch==2.11.0 torchvision==0.26.0 pytorch-lightning==2.6.6 \
    torchmetrics==1.9.0 timm numpy==2.5.2 opencv-python-headless scikit-image pyyaml psutil pillow matplotlib \
    h5py safetensors tqdm
"$here/image-venv/bin/python" -c "import torch, numpy; print('image-venv: torch', torch.__version__, 'numpy', numpy.__version__)"
