#!/usr/bin/env bash
# Issue 22's GPU benchmark on the lent GPU machine: install the carried wheels, run benchmarks/bench_gpu.py on the
# carried store of real faces (morphs and VGG-Face features are made there), record its rows in
# docs/benchmarks.md and .json, and leave the rows, the log and both docs in $OUT.
#
# Here first (once):  benchmarks/device/fetch_wheels.sh; benchmarks/device/make_store.sh
# Then, from a session whose task has a GPU, the tool call:
#   run(command="bash benchmarks/device/run_gpu_bench.sh", carry=["benchmarks/device/wheels", "benchmarks/device/store"],
#       timeout_s=600)
# and copy the returned benchmarks.md/.json over docs/. BENCH_SET="trainer.compile=true ..." adds overrides.
# DRY_RUN=1 benchmarks/device/run_gpu_bench.sh runs the same steps here on the CPU: no install, a 16-photo store
# made with dlib, --quick sizes, nothing recorded. DRY_RUN=image does the same with what is carried (the wheels,
# installed as there, and the store) in the Python of image_venv.sh: the image's versions, no dlib, no wandb.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled
if [ -z "${DRY_RUN:-}" ]; then
    python=python3  # the image's, with torch 2.11 and Lightning 2.6.6
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        benchmarks/device/wheels/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD/src:$PWD"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    args=(--store benchmarks/device/store --record)
    limit=540  # of the call's 600 s: the copies below must still happen
elif [ "$DRY_RUN" = image ]; then
    python="${PYTHON:-benchmarks/device/image-venv/bin/python}"  # made by image_venv.sh
    site="$(mktemp -d)/site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        benchmarks/device/wheels/*.whl || exit 1
    export PYTHONPATH="$site:$PWD/src:$PWD"
    ! "$python" -c "import dlib" 2>/dev/null || echo "run_gpu_bench: dlib imports here; the GPU machine has none"
    args=(--quick --store benchmarks/device/store)
    limit=1800
else
    python="${PYTHON:-.venv/bin/python}"
    export ANTIMASK_DATA="${ANTIMASK_DATA:-$PWD/../shared/data}" PYTHONPATH="$PWD/src:$PWD"
    store="$(mktemp -d)/store"
    "$python" benchmarks/bench_gpu.py --make-store "$store" --photos 16 || exit 1
    args=(--quick --store "$store")
    limit=1800
fi
"$python" -c "import torch, pytorch_lightning as pl, omegaconf; print('torch', torch.__version__, 'lightning', \
pl.__version__, 'cuda', torch.cuda.is_available())" || exit 1
"$python" -c "import albumentations" || echo "run_gpu_bench: albumentations does not import (data.photometric would fail)"
# shellcheck disable=SC2086
timeout "$limit" "$python" benchmarks/bench_gpu.py "${args[@]}" --rows-out "$out/rows.json" \
    ${BENCH_SET:+--set $BENCH_SET} > "$out/bench_gpu.out" 2> "$out/bench_gpu.log"
status=$?
grep -h "^bench_gpu:" "$out/bench_gpu.out" "$out/bench_gpu.log"
tail -n 5 "$out/bench_gpu.log"
[ -z "${DRY_RUN:-}" ] && cp docs/benchmarks.md docs/benchmarks.json "$out"/
echo "run_gpu_bench: exit $status; rows, log and docs in $out"
exit $status
