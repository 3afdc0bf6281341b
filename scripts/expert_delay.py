"""Scripted-expert success against pure action latency, on every core task.

With delay k, the action applied at control step t is computed from the privileged state of step
t-k (for the first k steps: the oldest state there is, i.e. the reset state). Everything else is
unchanged: the env still advances one control step per action (the ``frame`` time model). This
measures how sensitive each task is to acting on stale observations, independent of any learned
policy.

Example (the table in docs/staleness.md):
    MUJOCO_GL=egl .venv/bin/python scripts/expert_delay.py --markdown --out expert_delay.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")


def run_cell(task: str, delay: int, episodes: int, horizon: int, seed: int) -> dict[str, Any]:
    """Success of ``task``'s expert over ``episodes`` seeded episodes at one action delay."""
    from auras.envs import make_env
    from auras.envs.experts import make_expert

    env = make_env(task, horizon=horizon)
    expert = make_expert(task)
    successes, steps_to_success = 0, []
    start = time.perf_counter()
    try:
        for episode in range(episodes):
            _, info = env.reset(seed=seed + episode)
            expert.reset()
            states = deque([info["privileged_state"]], maxlen=delay + 1)  # states[0] is t - delay
            for step in range(1, horizon + 1):
                _, _, terminated, truncated, info = env.step(expert.act(states[0]))
                states.append(info["privileged_state"])
                if info["success"]:
                    successes += 1
                    steps_to_success.append(step)
                    break
                if terminated or truncated:
                    break
    finally:
        env.close()
    return {
        "task": task,
        "delay": delay,
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "mean_steps_to_success": (sum(steps_to_success) / len(steps_to_success)) if steps_to_success else None,
        "wall_s": round(time.perf_counter() - start, 2),
    }


def _run_cell(args: tuple[str, int, int, int, int]) -> dict[str, Any]:
    return run_cell(*args)


def format_table(results: list[dict[str, Any]], tasks: list[str], delays: list[int], markdown: bool) -> str:
    """Rows = tasks, columns = delays, cells = success rate in percent."""
    cell = {(r["task"], r["delay"]): f"{100 * r['success_rate']:.0f}" for r in results}
    header = ["task", *(f"k={k}" for k in delays)]
    rows = [[task, *(cell[(task, k)] for k in delays)] for task in tasks]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(delays)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    width = max(len(t) for t in [*tasks, "task"])
    fmt = f"{{:<{width}}}" + "".join("  {:>5}" for _ in delays)
    return "\n".join(fmt.format(*r) for r in [header, *rows])


def main(argv: list[str] | None = None) -> int:
    from auras.envs import CORE_TASKS, TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20, help="episodes per (task, delay) cell")
    parser.add_argument("--tasks", nargs="+", default=list(CORE_TASKS), help="task names (default: core)")
    parser.add_argument("--delays", default="0,1,2,4,8", help="comma-separated action delays in steps")
    parser.add_argument("--horizon", type=int, default=200, help="control steps per episode")
    parser.add_argument("--seed", type=int, default=100000, help="first seed; episode i uses seed + i")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: 2)"
    )
    args = parser.parse_args(argv)

    tasks = [t for arg in args.tasks for t in arg.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choices include {', '.join(CORE_TASKS)}")
    try:
        delays = [int(k) for k in args.delays.split(",") if k.strip()]
    except ValueError:
        parser.error(f"--delays: expected comma-separated integers, got {args.delays!r}")
    if not delays or min(delays) < 0:
        parser.error("--delays: expected one or more integers >= 0")
    if args.episodes < 1 or args.horizon < 1 or args.workers < 1:
        parser.error("--episodes, --horizon and --workers must be >= 1")

    # Longest cells first (failing episodes run the full horizon), so the workers finish together.
    jobs = [(t, k, args.episodes, args.horizon, args.seed) for k in sorted(delays, reverse=True) for t in tasks]
    start = time.perf_counter()
    if args.workers == 1:
        results = [_run_cell(job) for job in jobs]
    else:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(_run_cell, jobs, chunksize=1)
    wall = time.perf_counter() - start

    print(format_table(results, tasks, delays, args.markdown))
    print(
        f"\n{args.episodes} episodes per cell, horizon {args.horizon}, seeds {args.seed}..."
        f"{args.seed + args.episodes - 1}; {wall:.0f} s on {args.workers} worker(s)",
        file=sys.stderr,
    )
    if args.out:
        report = {
            "command": " ".join(["scripts/expert_delay.py", *(argv if argv is not None else sys.argv[1:])]),
            "time_model": "frame",
            "episodes": args.episodes,
            "horizon": args.horizon,
            "first_seed": args.seed,
            "delays": delays,
            "tasks": tasks,
            "wall_s": round(wall, 1),
            "results": results,
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
