"""How far are a policy's predicted chunks from the expert's, on demonstration steps? (open loop)

    python scripts/action_error.py --data DIR [--task push-v3] [--policy tiny-vla=CHECKPOINT ...] [--samples 256]

For each policy (default: both shipped ones) prints the mean absolute error of the served action chunk
(perception + generation, as the agent runs them) against the demonstration's next actions, over the
whole chunk and over the first ``execute_steps`` rows, per action dimension. For tiny-vla it also prints
the token accuracy teacher-forced (what training optimises) and decoded greedily (what is served), and
the mean bin error of the first token: a model that is accurate teacher-forced but not greedily copies
the previous token instead of reading the image (auras/policies/checkpoints/tiny-vla/MODEL_CARD.md).

Held-out demonstrations (`auras collect --seed 20000 ...`) next to training ones show over-fitting.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="An `auras collect` dataset.")
    parser.add_argument("--task", action="append", default=None, help="Only these tasks (default: all).")
    parser.add_argument("--policy", action="append", default=None,
                        help="TYPE or TYPE=CHECKPOINT (default: tiny-vla and tiny-dp, shipped).")
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()

    import torch

    from auras.training.train import demonstration_batch, policy_class
    from auras.types import Observation

    torch.set_num_threads(1)
    for spec in args.policy or ["tiny-vla", "tiny-dp"]:
        policy_type, _, checkpoint = spec.partition("=")
        model = policy_class(policy_type).from_pretrained(checkpoint or policy_type).eval()
        policy = model.as_policy()
        batch, torch_batch = demonstration_batch(model, args.data, args.task, args.samples)
        predicted = []
        for start in range(0, args.samples, 32):
            rows = range(start, min(args.samples, start + 32))
            observations = [Observation(images={"front": batch["image"][i]}, state=batch["state"][i],
                                        instruction=str(batch["instruction"][i]), step_id=i,
                                        capture_time=time.monotonic()) for i in rows]
            predicted.append(np.asarray(policy.generation.generate(policy.perception.perceive(observations))))
        error = np.abs(np.concatenate(predicted) - batch["actions"])  # (N, H, A)
        first = error[:, : policy.execute_steps]
        print(
            f"{spec} on {args.data} ({args.samples} steps): action L1 chunk {error.mean():.4f}, "
            f"executed rows {first.mean():.4f}, per dim {np.round(first.mean(axis=(0, 1)), 4).tolist()}"
        )
        if policy_type == "tiny-vla":
            print("  " + token_report(model, torch_batch))


def token_report(model, batch: dict) -> str:
    """Teacher-forced vs greedy token accuracy and the first token's mean bin error."""
    import torch

    targets = model.tokenize(batch["actions"])
    with torch.no_grad():
        context = model.encode(batch)
        forced = model.select_tokens(model.merged_logits(context, targets))  # the serving rule, true inputs
        greedy = model.decode_classic(context)
    first_bins = (greedy[:, 0] - targets[:, 0]).abs().float().mean().item()
    forced_acc, greedy_acc = (forced == targets).float().mean(), (greedy == targets).float().mean()
    return (f"token accuracy teacher-forced {forced_acc:.3f}, greedy {greedy_acc:.3f}; "
            f"first token off by {first_bins:.1f} bins on average")


if __name__ == "__main__":
    main()
