#!/usr/bin/env bash
# Issue 20: the improved model with the FaceRes identity loss trained at the improved run's full budget (mask
# decoder 8 cosine epochs; face decoder and encoder reused from runs/i20/utk/improved, which the loss does not
# touch), then both evaluated on UTKFace and AFDB: identity judged by dlib (the teacher, not the loss network)
# and by FaceRes (the loss network itself: shown, not deciding).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
A=".venv/bin/antimask"
BASE=runs/i20/utk/improved
RUN=runs/s3/improved_identity
$A train-all --no-eval --config experiments/improvements/improved+identity_loss.yaml \
  "data.sources=[${ANTIMASK_DATA:-../shared/data}/utkface]" data.image_size=112 prepare.max_photos=1000 \
  data.store=runs/utk1k-store stages.encoder.max_epochs=3 run.dir=$RUN \
  run.reuse.face_decoder=$BASE run.reuse.encoder=$BASE
$A evaluate $BASE --name identity_full --with identity_loss=$RUN
[ -f runs/afdb-store/header.json ] || $A prepare ${ANTIMASK_DATA:-../shared/data}/afdb_east_asian --out runs/afdb-store --quiet
$A evaluate $BASE --name identity_full_afdb data.store=runs/afdb-store --with identity_loss=$RUN
