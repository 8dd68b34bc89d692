#!/usr/bin/env bash
# Writes the test profile's data (ignored by git): a 2-subject, 2-frame synthetic cardiac
# cohort with ground truth, and a tiny model and shape prior trained on it for one epoch
# (their Dice is meaningless; they exercise the pipeline). Needs `medflow` on PATH. A few
# minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$here/cohort" "$here/model" "$here/prior"
medflow demo-cohort --kind cardiac --subjects 2 --frames 2 --seed 0 --out "$here/cohort" -q
medflow segment-cascaded train --samplesheet "$here/cohort/samplesheet.csv" \
    --image-role sa --label-role seg_sa --epochs 1 --channels 4 --levels 2 --patch 64,64,8 \
    --val-fraction 0.5 --device cpu --seed 0 --out "$here/model" -q
medflow super-resolve train-prior --samplesheet "$here/cohort/samplesheet.csv" \
    --label-role gt_ed,gt_es --epochs 1 --val-fraction 0 --device cpu --seed 0 --out "$here/prior" -q
echo "test data in $here (cohort/samplesheet.csv, model/, prior/)"
