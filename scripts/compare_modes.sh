#!/usr/bin/env bash
# The measurements behind the README's mode table: every mode of one shipped policy in one run
# (same seeds, same observation stream), on push, pick-place and button-press, under the frame and
# the virtual clock.
#
#   bash scripts/compare_modes.sh POLICY [OUTDIR] [EPISODES] [BACKEND]
#
# POLICY: tiny-vla or tiny-dp (pipeline settings from configs/pipeline-POLICY.yaml). Run it on a
# quiet machine: throughput is measured on wall-clock time.
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=$1
OUT=${2:-runs/modes}
EPISODES=${3:-20}
BACKEND=${4:-local}
AURAS=${AURAS:-.venv/bin/auras}
export MUJOCO_GL=${MUJOCO_GL:-egl}
for clock in frame virtual; do
  "$AURAS" bench --env mujoco -c "pipeline-$POLICY" --modes sequential,decoupled,parallel,pipeline,auras \
    -t push-v3 -t pick-place-v3 -t button-press-v3 --episodes "$EPISODES" --clock "$clock" \
    --backend "$BACKEND" --no-progress --out "$OUT/$POLICY-$BACKEND-$clock"
done
.venv/bin/python scripts/results_markdown.py --modes "$OUT/$POLICY-$BACKEND"-*/results.json
