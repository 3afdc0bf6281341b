#!/usr/bin/env bash
# Robots acting under load: 1, then N `auras robot-sim` robots at once against one `auras serve` (one frame
# engine), per task; each robot runs EPISODES episodes on its own seeds and reports its success. Prints one
# line per task and fleet size: successes / episodes, and the robots' mean action age p50.
#
#   bash scripts/fleet_success.sh [CONFIG] [N] [EPISODES] [TASKS...]
#   bash scripts/fleet_success.sh pipeline-tiny-dp 8 10 button-press-v3 push-v3
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
CONFIG=${1:-pipeline-tiny-dp}
N=${2:-8}
EPISODES=${3:-10}
shift 3 2>/dev/null || shift $#
TASKS=("$@")
[[ ${#TASKS[@]} -gt 0 ]] || TASKS=(button-press-v3 push-v3)
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export MUJOCO_GL=egl

"$PY" -m auras.cli serve -c "$CONFIG" --bind "tcp://127.0.0.1:$PORT" --max-sessions $((N + 4)) >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
sleep 8

for task in "${TASKS[@]}"; do
    for robots in 1 "$N"; do
        pids=()
        for ((i = 0; i < robots; i++)); do
            "$PY" -m auras.cli robot-sim --connect "tcp://127.0.0.1:$PORT" --task "$task" --episodes "$EPISODES" \
                --seed $((100000 + i * EPISODES)) --camera-hz 30 --json "$WORK/$task-$robots-$i.json" \
                >"$WORK/$task-$robots-$i.log" 2>&1 &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid"; done
        "$PY" - "$WORK" "$task" "$robots" <<'EOF'
import glob, json, sys, statistics
work, task, robots = sys.argv[1], sys.argv[2], int(sys.argv[3])
episodes = []
for path in sorted(glob.glob(f"{work}/{task}-{robots}-*.json")):
    data = json.load(open(path))
    episodes += data if isinstance(data, list) else data.get("episodes", [])
wins = sum(bool(e["success"]) for e in episodes)
age = statistics.median(e["action_age_ms_p50"] for e in episodes if e.get("action_age_ms_p50") is not None)
applied = sum(e["actions_applied"] for e in episodes) / max(1, sum(e["steps"] for e in episodes))
print(f"{task}: {robots} robot(s): {wins}/{len(episodes)} successful, action age p50 {age:.0f} ms, "
      f"{applied:.2f} new actions per control step")
EOF
    done
done
