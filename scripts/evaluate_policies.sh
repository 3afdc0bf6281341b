#!/usr/bin/env bash
# The measurements behind the README's policy tables, for the shipped checkpoints.
#
#   bash scripts/evaluate_policies.sh [OUTDIR] [EPISODES] [DELAY_EPISODES]
#   POLICIES="tiny-flow" TASKS="push-v3 pick-place-v3 button-press-v3" DELAYS=2,4,8 \
#     bash scripts/evaluate_policies.sh runs/evaluate-flow 50 10
#
# 1. success per task in sequential mode with zero latency (frame clock: the env waits for each
#    action), EPISODES (50) held-out seeds per task, via `auras bench`;
# 2. success against observation delay k in DELAYS (1,2,4,8) on the core tasks, DELAY_EPISODES (20) per
#    cell, via scripts/delay_sweep.py.
# Each policy runs in its own process on one CPU thread; the policies (POLICIES, default tiny-vla and
# tiny-dp) run side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/evaluate}
EPISODES=${2:-50}
DELAY_EPISODES=${3:-20}
PY=${PY:-.venv/bin/python}
POLICIES=${POLICIES:-tiny-vla tiny-dp}
TASKS=${TASKS:-push-v3 pick-place-v3 button-press-v3 reach-v3 drawer-open-v3}
DELAYS=${DELAYS:-1,2,4,8}
export MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT"

run_policy() {
  local policy=$1 task_args=() task
  for task in $TASKS; do task_args+=(-t "$task"); done
  "$PY" -m auras.cli bench --env mujoco --policy "$policy" --episodes "$EPISODES" --no-progress \
    --modes sequential --clock frame "${task_args[@]}" \
    --set policy.torch_threads=1 --out "$OUT/bench-$policy" > "$OUT/bench-$policy.txt"
  "$PY" scripts/delay_sweep.py --policy "$policy" --tasks push-v3 pick-place-v3 button-press-v3 \
    --delays "$DELAYS" --episodes "$DELAY_EPISODES" --workers 1 --markdown \
    --out "$OUT/delay-$policy.json" > "$OUT/delay-$policy.md"
}

for policy in $POLICIES; do
  run_policy "$policy" &
done
wait
cat "$OUT"/bench-*.txt "$OUT"/delay-*.md
