"""Does a policy's action depend on its camera image? (a probe for vision collapse)

    python scripts/vision_dependence.py [--policy tiny-vla --policy tiny-dp] [--checkpoint DIR] [--images 8]
                                        [--data DIR --samples 256]

For each policy, feeds ``--images`` random 84x84 images with the same proprio state and instruction
and prints the largest standard deviation of the predicted action chunk across them. 0.0 means the
image is ignored: the policy acts from proprio and instruction alone (a failure a checkpoint's model
card records when it happened, auras/policies/checkpoints/<name>/MODEL_CARD.md).

With ``--data`` (an `auras collect` dataset), also prints the behaviour-cloning loss on ``--samples``
demonstration steps with their own images and with the images shuffled across the batch (same noise,
same states and instructions). A ratio near 1.0 means the image carries nothing the model uses; a
policy that sees gets much worse with someone else's image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", action="append", default=None, help="tiny-vla and/or tiny-dp (default: both)")
    parser.add_argument("--checkpoint", default=None, help="A checkpoint directory instead of the shipped one.")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--data", default=None, help="Dataset directory: also compare the loss with shuffled images.")
    parser.add_argument("--samples", type=int, default=256, help="Demonstration steps for the --data comparison.")
    args = parser.parse_args()

    from auras.config import load_config
    from auras.policies import build_policy
    from auras.types import Observation

    for policy_type in args.policy or ["tiny-vla", "tiny-dp"]:
        overrides = [f"policy.type={policy_type}"]
        if args.checkpoint:
            overrides.append(f"policy.checkpoint={args.checkpoint}")
        policy = build_policy(load_config(None, overrides))
        chunks = []
        for seed in range(args.images):
            image = np.random.default_rng(seed).integers(0, 255, (84, 84, 3), dtype=np.uint8)
            state = np.array([0.0, 0.6, 0.2, 1.0], np.float32)
            obs = Observation(images={"front": image}, state=state, instruction="push the puck to the goal",
                              step_id=0, capture_time=time.monotonic())
            chunks.append(np.asarray(policy.generation.generate(policy.perception.perceive([obs])))[0])
        spread = float(np.stack(chunks).std(axis=0).max())
        verdict = "IGNORES the image" if spread < 1e-6 else "depends on the image"
        print(f"{policy_type}: action spread over {args.images} random images {spread:.4f} -> {verdict}")
        if args.data:
            own, shuffled = shuffled_image_losses(policy_type, args.checkpoint or policy_type, args.data, args.samples)
            print(f"{policy_type}: BC loss over {args.samples} steps of {args.data}: own images {own:.4f}, "
                  f"shuffled images {shuffled:.4f} (x{shuffled / own:.2f})")


def shuffled_image_losses(policy_type: str, checkpoint: str, data: str, samples: int) -> tuple[float, float]:
    """The model's eval-mode BC loss on ``samples`` demonstration steps, with their own and with shuffled images."""
    import torch

    from auras.training.train import demonstration_batch, policy_class

    model = policy_class(policy_type).from_pretrained(checkpoint).eval()
    _, batch = demonstration_batch(model, data, None, samples, seed=0)
    rng = np.random.default_rng(0)
    shuffled = {**batch, "image": batch["image"][torch.from_numpy(rng.permutation(samples))]}
    with torch.no_grad():  # the same generator seed: the same diffusion noise and timesteps for both
        return tuple(model.compute_loss(b, torch.Generator().manual_seed(0)).item() for b in (batch, shuffled))


if __name__ == "__main__":
    main()
