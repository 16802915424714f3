#!/usr/bin/env bash
# Issue 20: the improved mask decoder fine-tuned from its last.ckpt (which held epoch 6, step 903, though the run
# had finished epoch 7: see the note of 2026-11-30) with and without the FaceRes identity loss. Both arms were
# stopped during epoch 8 for CPU time; record_and_evaluate.sh records their epoch-7 checkpoints and evaluates.
# Needs runs/i20/utk/improved: antimask train-all --no-eval --config experiments/improved_rows.yaml (data as in D) run.dir=runs/i20/utk/improved
set -euo pipefail
cd "$(dirname "$0")/../../.."
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
D=("data.sources=[${ANTIMASK_DATA:-../shared/data}/utkface]" data.image_size=112 prepare.max_photos=1000 data.store=runs/utk1k-store)
BASE=runs/i20/utk/improved
COMMON=(--config experiments/improved_rows.yaml "${D[@]}" stages.mask_decoder.max_epochs=9)
ID=(model.identity_weight=10 model.identity_net=faceres)
for arm in plain identity; do
  extra=(); [ "$arm" = identity ] && extra=("${ID[@]}")
  /usr/bin/time -f "[$arm] train %e s, peak RSS %M KB" .venv/bin/antimask train mask_decoder "${COMMON[@]}" "${extra[@]}" \
      run.dir=runs/i20/utk/ft-$arm trainer.ckpt_path=$BASE/mask_decoder/checkpoints/last.ckpt
done
.venv/bin/antimask train-all --no-eval "${COMMON[@]}" run.dir=runs/i20/utk/ft-plain run.reuse.face_decoder=$BASE run.reuse.encoder=$BASE
.venv/bin/antimask train-all --no-eval "${COMMON[@]}" "${ID[@]}" run.dir=runs/i20/utk/ft-identity run.reuse.face_decoder=$BASE run.reuse.encoder=$BASE
/usr/bin/time -f "[evaluate] %e s, peak RSS %M KB" .venv/bin/antimask evaluate $BASE --name identity_finetune \
    --with ft_plain=runs/i20/utk/ft-plain --with ft_identity=runs/i20/utk/ft-identity
