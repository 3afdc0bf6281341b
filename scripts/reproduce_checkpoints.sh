#!/usr/bin/env bash
# Reproduce the shipped checkpoints auras/policies/checkpoints/{tiny-vla,tiny-dp} from scratch on CPU.
#
#   bash scripts/reproduce_checkpoints.sh [WORKDIR]
#
# 1. collects 150 expert episodes per core Meta-World task (training seeds 0..149; ~9 min),
# 2. trains both policies side by side, one CPU thread each, in two rounds: ~35 min from scratch, then
#    ~32 min more continuing from round 1's best checkpoint (--init) at a lower learning rate,
# 3. copies round 2's last checkpoint (EMA weights) into the package.
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

"$AURAS" train --policy tiny-vla --data "$DATA" --out "$WORK/tiny-vla" --steps 5000 --lr 4e-4 \
  --eval-every 1250 --eval-episodes 3 --max-minutes 38 --threads 1 &
"$AURAS" train --policy tiny-dp --data "$DATA" --out "$WORK/tiny-dp" --steps 6500 --lr 3e-4 \
  --eval-every 1625 --eval-episodes 3 --max-minutes 38 --threads 1 &
wait

"$AURAS" train --policy tiny-vla --data "$DATA" --init "$WORK/tiny-vla/best" --out "$WORK/tiny-vla-2" --steps 4800 \
  --lr 2e-4 --seed 1 --eval-every 1200 --eval-episodes 3 --max-minutes 32 --threads 1 &
"$AURAS" train --policy tiny-dp --data "$DATA" --init "$WORK/tiny-dp/best" --out "$WORK/tiny-dp-2" --steps 7000 \
  --lr 2e-4 --seed 1 --eval-every 1750 --eval-episodes 3 --max-minutes 32 --threads 1 &
wait

for policy in tiny-vla tiny-dp; do
  mkdir -p "auras/policies/checkpoints/$policy"
  cp "$WORK/$policy-2/last/model.safetensors" "$WORK/$policy-2/last/config.json" "auras/policies/checkpoints/$policy/"
done
echo "checkpoints updated in auras/policies/checkpoints/"
