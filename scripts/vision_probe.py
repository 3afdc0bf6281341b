"""Do a policy's vision features say where things are? (a linear probe)

    python scripts/vision_probe.py --train DIR --heldout DIR [--task push-v3] [--policy tiny-vla=CKPT ...]

Fits a ridge regression from the policy's vision features alone (tiny-vla: the resampled vision tokens
of X_V, without the proprio token; tiny-dp: the spatial-softmax keypoints) to the demonstration's next
action (x, y, z) on ``--samples`` steps of ``--train``, and prints its mean absolute error on steps of
``--heldout`` next to that of predicting zero. The x action of push-v3 is the sign and size of the
puck's offset from the hand, so a probe no better than zero there means the features do not locate
the puck (the figures of each checkpoint: auras/policies/checkpoints/<name>/MODEL_CARD.md).
A linear probe is a lower bound on what the features hold, so compare policies with it, not against a
threshold: a run with the worse x probe of two can still push more often.
"""

from __future__ import annotations

import argparse

import numpy as np


def features(model, policy_type: str, data: str, task: list[str] | None, samples: int, seed: int):
    """(N, F) vision features, (N, 3) next xyz action of ``samples`` random steps of ``data``."""
    import torch

    from auras.policies.torch_policy import image_to_tensor
    from auras.training.train import demonstration_batch

    raw, batch = demonstration_batch(model, data, task, samples, seed)
    out = []
    with torch.no_grad():
        for start in range(0, samples, 128):
            part = {k: v[start : start + 128] for k, v in batch.items()}
            if policy_type == "tiny-vla":
                out.append(model.encode(part)["X_V"][:, :-1].flatten(1).numpy())  # vision tokens, no proprio
            else:
                x = image_to_tensor(part["image"])
                for block in model.encoder.blocks:
                    x = block(x)
                out.append(model.encoder.keypoints(x).numpy())
    return np.concatenate(out), raw["actions"][:, 0, :3]


def ridge_error(train_x, train_y, test_x, test_y, alpha: float = 10.0) -> np.ndarray:
    """Per-dimension mean absolute error on the test set of a ridge fit on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a = np.c_[(train_x - mean) / std, np.ones(len(train_x))]
    b = np.c_[(test_x - mean) / std, np.ones(len(test_x))]
    weights = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ train_y)
    return np.abs(b @ weights - test_y).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="Dataset to fit the probe on (e.g. the training data).")
    parser.add_argument("--heldout", required=True, help="Dataset to measure it on (`auras collect --seed 20000`).")
    parser.add_argument("--task", action="append", default=None, help="Only these tasks (default: all).")
    parser.add_argument("--policy", action="append", default=None, help="TYPE or TYPE=CHECKPOINT (default: both).")
    parser.add_argument("--samples", type=int, default=3000, help="Training steps for the fit (800 held out).")
    args = parser.parse_args()

    import torch

    from auras.training.train import policy_class

    torch.set_num_threads(1)
    for spec in args.policy or ["tiny-vla", "tiny-dp"]:
        policy_type, _, checkpoint = spec.partition("=")
        model = policy_class(policy_type).from_pretrained(checkpoint or policy_type).eval()
        train_x, train_y = features(model, policy_type, args.train, args.task, args.samples, 0)
        test_x, test_y = features(model, policy_type, args.heldout, args.task, 800, 1)
        error = ridge_error(train_x, train_y, test_x, test_y)
        zero = np.abs(test_y).mean(0)
        print(f"{spec}: held-out L1 of the xyz action from vision features {[round(float(v), 3) for v in error]}, "
              f"predicting zero {[round(float(v), 3) for v in zero]}")


if __name__ == "__main__":
    main()
