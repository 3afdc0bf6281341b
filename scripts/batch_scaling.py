"""What batching buys each shipped policy: one perception call and one generation call over B robots' rows,
against B calls of one row (the ceiling a fleet engine that batches every robot's requests can reach).

    python scripts/batch_scaling.py [--policies tiny-dp tiny-flow tiny-vla] [--batches 1 2 4 8 16 32]
                                    [--repeats 20] [--threads 1]

For each policy and batch size B it times ``perception.perceive`` on B different observations and
``generation.generate`` on the B-row context (a whole request: every denoising step, flow step or action
token), medians over ``--repeats`` calls after warm-up. It prints a Markdown table: ms per call, ms per
row, and the gain, B x (one row's time) / (B rows' time): how many times faster B robots are served in one
batched call than one after another.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def robot_observations(policy, batch: int, seed: int) -> list:
    from auras.types import Observation

    size = policy.perception.spec.cameras["front"]
    rng = np.random.default_rng(seed)
    return [
        Observation(
            images={"front": rng.integers(0, 255, (*size, 3), dtype=np.uint8)},
            state=rng.uniform(-0.2, 0.8, 4).astype(np.float32),
            instruction="push the puck",
            step_id=i,
            capture_time=time.monotonic(),
        )
        for i in range(batch)
    ]


def _median_ms(call, repeats: int) -> float:
    for _ in range(3):  # warm-up
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def measure(policy_name: str, batches: list[int], repeats: int) -> list[dict[str, float]]:
    import torch

    from auras.training.train import policy_class

    policy = policy_class(policy_name).from_pretrained(policy_name).as_policy()
    rows = []
    with torch.inference_mode():
        for batch in batches:
            observations = robot_observations(policy, batch, seed=batch)
            context = policy.perception.perceive(observations)
            perceive_ms = _median_ms(lambda obs=observations: policy.perception.perceive(obs), repeats)
            generate_ms = _median_ms(lambda ctx=context: policy.generation.generate(ctx), repeats)
            rows.append({"batch": batch, "perceive_ms": perceive_ms, "generate_ms": generate_ms})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", default=["tiny-dp", "tiny-flow", "tiny-vla"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    print("| policy | B | perceive ms / call | per row | gain | generate ms / call | per row | gain |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.policies:
        rows = measure(name, args.batches, args.repeats)
        one = rows[0]
        for row in rows:
            b = row["batch"]
            gains = [b * one[k] / one["batch"] / row[k] for k in ("perceive_ms", "generate_ms")]
            print(f"| {name} | {b} | {row['perceive_ms']:.2f} | {row['perceive_ms'] / b:.2f} | {gains[0]:.1f}x "
                  f"| {row['generate_ms']:.2f} | {row['generate_ms'] / b:.2f} | {gains[1]:.1f}x |")


if __name__ == "__main__":
    main()
