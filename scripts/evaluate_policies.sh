#!/usr/bin/env bash
# The measurements behind the README's policy tables, for the shipped checkpoints.
#
#   bash scripts/evaluate_policies.sh [OUTDIR] [EPISODES] [DELAY_EPISODES]
#
# 1. success per task in sequential mode with zero latency (frame clock: the env waits for each
#    action), EPISODES (50) held-out seeds per task, via `auras bench`;
# 2. success against observation delay k = 1, 2, 4, 8 on the staleness-sensitive tasks,
#    DELAY_EPISODES (20) per cell, via scripts/delay_sweep.py.
# Each policy runs in its own process on one CPU thread; the two policies run side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/evaluate}
EPISODES=${2:-50}
DELAY_EPISODES=${3:-20}
PY=${PY:-.venv/bin/python}
export MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT"

run_policy() {
  local policy=$1
  "$PY" -m auras.cli bench --env mujoco --policy "$policy" --episodes "$EPISODES" --no-progress \
    --modes sequential --clock frame \
    -t push-v3 -t pick-place-v3 -t button-press-v3 -t reach-v3 -t drawer-open-v3 \
    --set policy.torch_threads=1 --out "$OUT/bench-$policy" > "$OUT/bench-$policy.txt"
  "$PY" scripts/delay_sweep.py --policy "$policy" --tasks push-v3 pick-place-v3 button-press-v3 \
    --delays 1,2,4,8 --episodes "$DELAY_EPISODES" --workers 1 --markdown \
    --out "$OUT/delay-$policy.json" > "$OUT/delay-$policy.md"
}

run_policy tiny-vla &
run_policy tiny-dp &
wait
cat "$OUT"/bench-*.txt "$OUT"/delay-*.md
