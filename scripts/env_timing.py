"""Measure render time per frame and physics step time per task (expert driving, 84x84 camera).

    python scripts/env_timing.py [--tasks push-v3 ...] [--steps 400]

Prints a Markdown table: median and p90 milliseconds for rendering one observation and for one
control step of physics (the env step minus its rendering).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from auras.envs import make_env
from auras.envs.experts import make_expert
from auras.tasks import CORE_TASKS


def measure(task: str, steps: int, image_size: int) -> dict[str, float]:
    render_ms, step_ms = [], []
    expert = make_expert(task)
    with make_env(task, horizon=200, image_size=image_size) as env:
        _, info = env.reset(seed=0)
        seed = 0
        for _ in range(steps):
            action = expert.act(info["privileged_state"])
            start = time.perf_counter()
            _, _, terminated, truncated, info = env.step(action)
            total = time.perf_counter() - start
            start = time.perf_counter()
            env._render_image()  # the same render the step did, timed alone
            render = time.perf_counter() - start
            render_ms.append(render * 1e3)
            step_ms.append(max(total - render, 0.0) * 1e3)
            if terminated or truncated:
                seed += 1
                expert.reset()
                _, info = env.reset(seed=seed)
    return {
        "render_p50": float(np.median(render_ms)),
        "render_p90": float(np.percentile(render_ms, 90)),
        "step_p50": float(np.median(step_ms)),
        "step_p90": float(np.percentile(step_ms, 90)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(CORE_TASKS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=84)
    args = parser.parse_args()
    print("| task | render ms p50 | render ms p90 | physics step ms p50 | physics step ms p90 |")
    print("|---|---|---|---|---|")
    for task in args.tasks:
        m = measure(task, args.steps, args.image_size)
        cells = [m["render_p50"], m["render_p90"], m["step_p50"], m["step_p90"]]
        print(f"| {task} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
