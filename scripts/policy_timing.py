"""Perception / generation time split of the shipped policies, one sequential request at a time.

    python scripts/policy_timing.py [--policies tiny-vla tiny-dp] [--requests 50] [--threads 1]

Warm-up requests are excluded; prints medians and the generation share (a Markdown table).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure(policy_name: str, requests: int, threads: int) -> dict[str, float]:
    import torch

    from auras.training.train import policy_class
    from auras.types import Observation

    torch.set_num_threads(threads)
    policy = policy_class(policy_name).from_pretrained(policy_name).as_policy()
    size = policy.perception.spec.cameras["front"]
    rng = np.random.default_rng(0)
    perception, generation = [], []
    for i in range(requests + 10):
        obs = Observation(
            images={"front": rng.integers(0, 255, (*size, 3), dtype=np.uint8)},
            state=rng.uniform(-0.2, 0.8, 4).astype(np.float32),
            instruction="push the puck to the green goal",
            step_id=i,
            capture_time=time.monotonic(),
        )
        start = time.perf_counter()
        context = policy.perception.perceive([obs])
        middle = time.perf_counter()
        policy.generation.generate(context)
        end = time.perf_counter()
        if i >= 10:
            perception.append((middle - start) * 1e3)
            generation.append((end - middle) * 1e3)
    p, g = float(np.median(perception)), float(np.median(generation))
    return {"perception_ms": p, "generation_ms": g, "total_ms": p + g, "generation_share": g / (p + g)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=["tiny-vla", "tiny-dp"])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print("| policy | perception ms | generation ms | request ms | generation share |")
    print("|---|---|---|---|---|")
    for name in args.policies:
        m = measure(name, args.requests, args.threads)
        print(
            f"| {name} | {m['perception_ms']:.1f} | {m['generation_ms']:.1f} | {m['total_ms']:.1f} "
            f"| {m['generation_share']:.0%} |"
        )


if __name__ == "__main__":
    main()
