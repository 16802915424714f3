#!/usr/bin/env bash
# Issue 21: the mask-aware variant on the 1,000 UTKFace photos at 112 px of runs/i20/utk/improved (the fixed-row
# improved run of docs/results/identity_loss/), its segmenter, evaluate --masked on UTKFace and AFDB, and the
# masked_real detection probe with the segmenter's face head. What ran on 2026-11-30 differs in one place: the
# mask decoder ran with max_epochs=4 and was stopped after epoch 2 (then recorded with max_epochs=2, as below).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
DATA=${ANTIMASK_DATA:-../shared/data}
A=".venv/bin/antimask"
RUN=runs/i21/utk/mask_aware
D=("data.sources=[$DATA/utkface]" data.image_size=112 prepare.max_photos=1000 data.store=runs/utk1k-store)
COMMON=(--config experiments/mask_aware.yaml "${D[@]}" stages.encoder.max_epochs=1 stages.mask_decoder.max_epochs=2
        stages.segmenter.max_epochs=6)
$A train-all --no-eval "${COMMON[@]}" run.dir=$RUN run.reuse.face_decoder=runs/i20/utk/improved
$A train segmenter "${COMMON[@]}" run.dir=$RUN
[ -f runs/afdb-store/header.json ] || $A prepare "$DATA/afdb_east_asian" --out runs/afdb-store --quiet
$A evaluate $RUN --masked --name utk --with improved=runs/i20/utk/improved
$A evaluate $RUN --masked --name afdb data.store=runs/afdb-store --with improved=runs/i20/utk/improved
.venv/bin/python docs/results/masked_real/probe_detection.py 100 --data "$DATA/masked_real" --segmenter $RUN
