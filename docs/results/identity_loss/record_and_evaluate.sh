#!/usr/bin/env bash
# Issue 20, the identity-loss comparison as it stands: both arms fine-tuned one epoch (epoch 7) from the improved
# run's epoch-6 checkpoint, plain vs with the FaceRes identity loss; recorded by a zero-epoch `train` from their
# last checkpoints (max_epochs=8; finetune.sh ran with max_epochs=9 and was stopped during epoch 8), assembled with the improved run's encoder and face decoder, then evaluated.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
A=".venv/bin/python -m antimask"
D=("data.sources=[${ANTIMASK_DATA:-../shared/data}/utkface]" data.image_size=112 prepare.max_photos=1000 data.store=runs/utk1k-store)
BASE=runs/i20/utk/improved
COMMON=(--config experiments/improved_rows.yaml "${D[@]}" stages.encoder.max_epochs=3 stages.mask_decoder.max_epochs=8)
ID=(model.identity_weight=10 model.identity_net=faceres)
T() { /usr/bin/time -f "[$1] %e s, peak RSS %M KB" "${@:2}"; }
$A train mask_decoder "${COMMON[@]}" "${ID[@]}" run.dir=runs/i20/utk/ft-identity trainer.ckpt_path=runs/i20/utk/ft-identity/mask_decoder/checkpoints/last.ckpt
T asm-plain $A train-all --no-eval "${COMMON[@]}" run.dir=runs/i20/utk/ft-plain run.reuse.face_decoder=$BASE run.reuse.encoder=$BASE
T asm-identity $A train-all --no-eval "${COMMON[@]}" "${ID[@]}" run.dir=runs/i20/utk/ft-identity run.reuse.face_decoder=$BASE run.reuse.encoder=$BASE
T eval-utk $A evaluate $BASE --name identity_loss --with ft_plain=runs/i20/utk/ft-plain --with ft_identity=runs/i20/utk/ft-identity
[ -f runs/afdb-store/header.json ] || T prep-afdb $A prepare ${ANTIMASK_DATA:-../shared/data}/afdb_east_asian --out runs/afdb-store --quiet
T eval-afdb $A evaluate $BASE --name identity_loss_afdb data.store=runs/afdb-store --with ft_plain=runs/i20/utk/ft-plain --with ft_identity=runs/i20/utk/ft-identity
echo ALL DONE
