#!/usr/bin/env bash
# Reproduce the shipped checkpoints auras/policies/checkpoints/{tiny-vla,tiny-dp} from scratch on CPU.
#
#   bash scripts/reproduce_checkpoints.sh [WORKDIR]
#
# 1. collects 150 expert episodes per core Meta-World task (training seeds 0..149; ~9 min),
# 2. trains both policies side by side, one CPU thread each (~90 min): tiny-vla in one round, tiny-dp in
#    two (the second continues from the first's last weights, --init, at a lower learning rate),
# 3. copies the last checkpoints (EMA weights) into the package.
# Seeds are fixed; wall-clock-limited runs can stop at a slightly different step on another machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/reproduce}
DATA=$WORK/core5
AURAS=${AURAS:-.venv/bin/auras}
export MUJOCO_GL=${MUJOCO_GL:-egl}

for task in push-v3 pick-place-v3 button-press-v3 reach-v3 drawer-open-v3; do
  "$AURAS" collect --task "$task" --episodes 150 --out "$DATA" --seed 0 --only-success
done

# tiny-vla: one round (~54 min); tiny-dp: two rounds side by side with it (~27 min, then ~58 min
# continuing from round 1's last weights at a lower learning rate).
"$AURAS" train --policy tiny-vla --data "$DATA" --out "$WORK/tiny-vla-2" --steps 9000 --lr 4e-4 --seed 0 \
  --eval-every 3000 --eval-episodes 3 --max-minutes 85 --threads 1 &
(
  "$AURAS" train --policy tiny-dp --data "$DATA" --out "$WORK/tiny-dp" --steps 6500 --lr 3e-4 \
    --eval-every 1625 --eval-episodes 3 --max-minutes 38 --threads 1
  "$AURAS" train --policy tiny-dp --data "$DATA" --init "$WORK/tiny-dp/last" --out "$WORK/tiny-dp-2" --steps 15000 \
    --lr 2e-4 --seed 3 --eval-every 5000 --eval-episodes 3 --max-minutes 85 --threads 1
) &
wait

for policy in tiny-vla tiny-dp; do
  mkdir -p "auras/policies/checkpoints/$policy"
  cp "$WORK/$policy-2/last/model.safetensors" "$WORK/$policy-2/last/config.json" "auras/policies/checkpoints/$policy/"
done
echo "checkpoints updated in auras/policies/checkpoints/"
