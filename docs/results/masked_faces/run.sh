#!/usr/bin/env bash
# Issue 21: the mask-aware variant at the improved run's budget on the 1,000 UTKFace photos at 112 px of
# runs/i20/utk/improved (the fixed-row improved run of docs/results/identity_loss/, whose face decoder it reuses),
# evaluate --masked on UTKFace and AFDB beside the fixed-row run and the earlier CPU-budget run, the stage swap
# that finds which budget moves AFDB identity, and the masked_real probes (masks found; the face head's threshold).
# What ran on 2026-11-30 differs in one place: the segmenter was trained first (`antimask train segmenter`, same
# config and stages.segmenter.max_epochs=6) and train-all then trained the three stages into its folder; train-all
# now trains the segmenter itself after them.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
DATA=${ANTIMASK_DATA:-../shared/data}
A=".venv/bin/antimask"
RUN=runs/s3/mask_aware
SHORT=runs/i21/utk/mask_aware  # mask decoder 2 epochs, encoder 1, segmenter without masks.augment
D=(--config experiments/mask_aware.yaml "data.sources=[$DATA/utkface]" data.image_size=112 prepare.max_photos=1000
   data.store=runs/utk1k-store run.reuse.face_decoder=runs/i20/utk/improved)
$A train-all --no-eval "${D[@]}" stages.encoder.max_epochs=3 stages.segmenter.max_epochs=6 run.dir=$RUN
.venv/bin/python docs/results/masked_faces/segmenter_robustness.py $SHORT $RUN
[ -f runs/afdb-store/header.json ] || $A prepare "$DATA/afdb_east_asian" --out runs/afdb-store --quiet
W=(--with improved=runs/i20/utk/improved --with mask_aware_short=$SHORT)
$A evaluate $RUN --masked --name utk_paired "${W[@]}"
$A evaluate $RUN --masked --name afdb_paired data.store=runs/afdb-store "${W[@]}"
# which stage's budget: the two runs' stages swapped (run.reuse copies them; nothing trains)
$A train-all --no-eval "${D[@]}" stages.encoder.max_epochs=1 run.dir=runs/s3/h_full_dec_short_enc \
  run.reuse.mask_decoder=$RUN run.reuse.encoder=$SHORT
$A train-all --no-eval "${D[@]}" stages.mask_decoder.max_epochs=2 run.dir=runs/s3/h_short_dec_full_enc \
  run.reuse.mask_decoder=$SHORT run.reuse.encoder=$RUN
$A evaluate $RUN --masked --name afdb_hybrids data.store=runs/afdb-store --with dec8_enc1=runs/s3/h_full_dec_short_enc \
  --with dec2_enc3=runs/s3/h_short_dec_full_enc --with dec2_enc1=$SHORT
# real masked photos: the masks found (judged by eye: docs/results/masked_real/masks_by_eye.json), then the face head
P=docs/results/masked_real/probe_detection.py
.venv/bin/python $P 100 --data "$DATA/masked_real" --segmenter $SHORT --no-verify --out runs/s3/probe_old
.venv/bin/python $P 100 --data "$DATA/masked_real" --segmenter $RUN --no-verify --out runs/s3/probe_new
for t in 0.1 0.3; do .venv/bin/python $P 100 --data "$DATA/masked_real" --segmenter $RUN --threshold $t --out runs/s3/probe_t$t; done

# --- fourth session of 2026-11-30 ---
# the 2-epoch mask decoder with the FaceRes identity loss (issue 20's), the full run's encoder and segmenter reused
$A train-all --no-eval "${D[@]}" run.reuse.encoder=$RUN run.reuse.segmenter=$RUN stages.encoder.max_epochs=3 \
  stages.segmenter.max_epochs=6 stages.mask_decoder.max_epochs=2 model.identity_weight=10 model.identity_net=faceres \
  run.dir=runs/s4/mask_aware_id2
# chosen on the validation splits (rule fixed before: lowest mean paired dlib identity difference to the masked face
# over UTKFace val and AFDB val, among those better than the masked face on region L1 and SSIM on both)
V=(--with full8=$RUN --with dec2=runs/s3/h_short_dec_full_enc)
$A evaluate runs/s4/mask_aware_id2 --masked --split val --name utk_val "${V[@]}"
$A evaluate runs/s4/mask_aware_id2 --masked --split val --name afdb_val data.store=runs/afdb-store "${V[@]}"
# the finder on three samples of 100 masked_real photos (docs/results/masked_real/detection_by_eye.json)
for k in 0 100 200; do
  .venv/bin/python $P 100 --skip $k --data "$DATA/masked_real" --segmenter $RUN --threshold 0.3 --out runs/s4/probe_$k
  .venv/bin/python $P 100 --skip $k --data "$DATA/masked_real" --segmenter $RUN --no-verify --out runs/s4/probe_${k}_off
done
# the test splits once, for the chosen candidate (UTKFace-trained), beside the others
T=(--with full8=$RUN --with dec2=runs/s3/h_short_dec_full_enc --with improved_rows=runs/i20/utk/improved)
$A evaluate runs/s4/mask_aware_id2 --masked --name afdb_test data.store=runs/afdb-store "${T[@]}"
$A evaluate runs/s4/mask_aware_id2 --masked --name utk_test "${T[@]}"
# the chosen configuration trained on AFDB's own train split (a copy of the AFDB store gets its morphs), the same
# without the identity loss, and the fixed-row improved model on that store; then AFDB's test split
cp -r runs/afdb-store runs/afdb-store-m
AF=(--config experiments/mask_aware.yaml "data.sources=[$DATA/afdb_east_asian]" data.image_size=112
    data.store=runs/afdb-store-m stages.encoder.max_epochs=3)
R=runs/s4/afdb_mask_aware_id2
$A train-all --no-eval "${AF[@]}" run.reuse.segmenter=$RUN stages.face_decoder.max_epochs=1 \
  stages.mask_decoder.max_epochs=2 model.identity_weight=10 model.identity_net=faceres run.dir=$R
$A train-all --no-eval "${AF[@]}" run.reuse.face_decoder=$R run.reuse.encoder=$R run.reuse.segmenter=$RUN \
  stages.face_decoder.max_epochs=1 stages.mask_decoder.max_epochs=2 run.dir=runs/s4/afdb_mask_aware_dec2
$A train-all --no-eval --config experiments/improved_rows.yaml "${AF[@]:2}" run.reuse.face_decoder=$R \
  run.dir=runs/s4/afdb_improved_rows
$A evaluate $R --masked --name afdb_in_domain2 --with dec2=runs/s4/afdb_mask_aware_dec2 \
  --with improved_rows=runs/s4/afdb_improved_rows --with utk_trained=runs/s4/mask_aware_id2
.venv/bin/python docs/results/masked_faces/paired.py $R/reports/masked_test-afdb_in_domain2 anti_mask improved_rows
# the improved model's train-all as a user runs it, every stage and the segmenter trained (27 min 5 s wall alone)
/usr/bin/time -v $A train-all --no-eval --config experiments/improved.yaml "data.sources=[$DATA/utkface]" \
  data.image_size=112 prepare.max_photos=1000 data.store=runs/utk1k-store stages.encoder.max_epochs=3 \
  stages.segmenter.max_epochs=6 run.dir=runs/s4/utk_improved_full

# --- fifth session of 2026-11-30 ---
# the same train-all after the TF.js fold of FaceRes (26 min 7 s wall alone, peak RSS 3.5 GB), beside the run above
/usr/bin/time -v $A train-all --no-eval --config experiments/improved.yaml "data.sources=[$DATA/utkface]" \
  data.image_size=112 prepare.max_photos=1000 data.store=runs/utk1k-store stages.encoder.max_epochs=3 \
  stages.segmenter.max_epochs=6 run.dir=runs/s5/utk_improved_full
$A evaluate runs/s5/utk_improved_full --masked --name utk_test --with before_fold=runs/s4/utk_improved_full
