#!/usr/bin/env bash
# Reproduce the shipped checkpoints auras/policies/checkpoints/{tiny-vla,tiny-dp,tiny-flow} from scratch on CPU.
#
#   bash scripts/reproduce_checkpoints.sh [WORKDIR]
#
# 1. collects 150 expert episodes per core Meta-World task (training seeds 0..149; ~9 min),
# 2. trains the policies on two CPU threads, one each (~280 min): tiny-vla in one round then tiny-flow in three
#    on one thread, tiny-dp in three on the other (each later round continues from the previous one's last
#    weights, --init, at a lower learning rate),
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

# tiny-vla: one round (~63 min, stops on the clock at about step 5,500 of 7,500); tiny-dp: three rounds side by
# side with it (~27 min, then ~58 min and ~55 min, each continuing from the previous round's last weights at a lower
# learning rate). tiny-vla drops its proprio token in half of the samples (or it learns to ignore the image), sees
# 6 px patches through a convolutional stem, with sine-cosine initial position embeddings and 16 spatial-softmax
# keypoints over the patch grid (or it cannot locate the puck), trains on corrupted input tokens with soft bin
# targets (or it learns to copy the previous token), and decodes over smoothed bins (docs/policies.md).
# tiny-flow (the SmolVLA architecture at a CPU-trainable size) follows tiny-vla on its thread, on the three
# tasks it serves: one round from scratch (55 min), then two continuing rounds at batch 32 (80 and 82 min).
(
  "$AURAS" train --policy tiny-vla --data "$DATA" --out "$WORK/tiny-vla-3" --steps 7500 --lr 4e-4 --seed 0 \
    --set proprio_dropout=0.5 --set patch_size=6 --set vit_position_init=sincos --set token_corruption=0.25 \
    --set label_sigma=2 --set decode_sigma=4 --set vit_stem=conv --set vision_keypoints=16 \
    --eval-every 2500 --eval-episodes 3 --max-minutes 63 --threads 1
  FLOW_TASKS=(-t push-v3 -t pick-place-v3 -t button-press-v3)
  "$AURAS" train --policy tiny-flow --data "$DATA" "${FLOW_TASKS[@]}" --out "$WORK/tiny-flow" --steps 20000 \
    --lr 3e-4 --seed 0 --eval-every 2500 --eval-episodes 3 --max-minutes 55 --threads 1
  "$AURAS" train --policy tiny-flow --data "$DATA" "${FLOW_TASKS[@]}" --init "$WORK/tiny-flow/last" \
    --out "$WORK/tiny-flow-2" --steps 12000 --batch-size 32 --lr 2e-4 --seed 5 --eval-every 6000 --eval-episodes 3 \
    --max-minutes 80 --threads 1
  "$AURAS" train --policy tiny-flow --data "$DATA" "${FLOW_TASKS[@]}" --init "$WORK/tiny-flow-2/last" \
    --out "$WORK/tiny-flow-3" --steps 11000 --batch-size 32 --lr 1.5e-4 --seed 7 --eval-every 5500 \
    --eval-episodes 3 --max-minutes 82 --threads 1
) &
(
  "$AURAS" train --policy tiny-dp --data "$DATA" --out "$WORK/tiny-dp" --steps 6500 --lr 3e-4 \
    --eval-every 1625 --eval-episodes 3 --max-minutes 38 --threads 1
  "$AURAS" train --policy tiny-dp --data "$DATA" --init "$WORK/tiny-dp/last" --out "$WORK/tiny-dp-2" --steps 15000 \
    --lr 2e-4 --seed 3 --eval-every 5000 --eval-episodes 3 --max-minutes 85 --threads 1
  "$AURAS" train --policy tiny-dp --data "$DATA" --init "$WORK/tiny-dp-2/last" --out "$WORK/tiny-dp-3" --steps 15000 \
    --lr 1.5e-4 --seed 5 --eval-every 5000 --eval-episodes 3 --max-minutes 85 --threads 1
) &
wait

for run in tiny-vla-3 tiny-dp-3 tiny-flow-3; do
  policy=${run%-*}
  mkdir -p "auras/policies/checkpoints/$policy"
  cp "$WORK/$run/last/model.safetensors" "$WORK/$run/last/config.json" "auras/policies/checkpoints/$policy/"
done
echo "checkpoints updated in auras/policies/checkpoints/"
