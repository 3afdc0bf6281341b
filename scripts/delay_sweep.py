"""Policy success against pure action latency, on every core task.

With delay k, the policy queried at control step t sees the observation of step t-k (for the first
k steps: the oldest there is, i.e. the reset observation). Everything else is unchanged: the env
advances one control step per executed action (the ``frame`` time model), and a policy that
predicts action chunks executes its usual number of chunk rows before it is queried again. With
``--policy expert`` (the default) the scripted expert reads the privileged state, which measures
how sensitive each task is to acting on stale observations independent of any learned policy;
with ``--policy tiny-vla``, ``tiny-dp`` or ``tiny-flow`` the shipped checkpoint is measured: that is the damage
the public context has to undo.

Examples (the tables in docs/staleness.md and the README):
    MUJOCO_GL=egl .venv/bin/python scripts/delay_sweep.py --markdown --out expert_delay.json
    MUJOCO_GL=egl .venv/bin/python scripts/delay_sweep.py --policy tiny-vla --delays 0,1,2,4,8 --markdown
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


def run_cell(
    task: str,
    delay: int,
    episodes: int,
    horizon: int,
    seed: int,
    policy: str = "expert",
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Success of ``policy`` (config ``overrides`` applied) on ``task`` over ``episodes`` seeded episodes at one
    observation delay."""
    from auras import AurasAgent, load_config
    from auras.envs import make_env
    from auras.envs.base import to_observation

    torch_threads = ["policy.torch_threads=1"] if policy != "expert" else []
    config = load_config(overrides=[f"env.task={task}", f"policy.type={policy}", *torch_threads, *overrides])
    env = make_env(task, horizon=horizon)
    agent = AurasAgent(config)
    successes, steps_to_success = 0, []
    start = time.perf_counter()
    try:
        for episode in range(episodes):
            agent.reset()
            env_obs, info = env.reset(seed=seed + episode)
            seen = deque([(env_obs, info)], maxlen=delay + 1)  # seen[0] is step t - delay
            queue: deque = deque()
            for step in range(1, horizon + 1):
                if not queue:
                    old_obs, old_info = seen[0]
                    observation = to_observation(old_obs, old_info, step - 1, 0.0, privileged=agent.privileged)
                    queue.extend(agent.step(observation).chunk[: agent.execute_steps])
                env_obs, _, terminated, truncated, info = env.step(queue.popleft())
                seen.append((env_obs, info))
                if info["success"]:
                    successes += 1
                    steps_to_success.append(step)
                    break
                if terminated or truncated:
                    break
    finally:
        agent.close()
        env.close()
    return {
        "task": task,
        "policy": policy,
        "delay": delay,
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "mean_steps_to_success": (sum(steps_to_success) / len(steps_to_success)) if steps_to_success else None,
        "wall_s": round(time.perf_counter() - start, 2),
    }


def _run_cell(args: tuple[str, int, int, int, int, str, tuple[str, ...]]) -> dict[str, Any]:
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
        "--policy", default="expert", choices=["expert", "tiny-vla", "tiny-dp", "tiny-flow"], help="policy to run"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable), e.g. policy.checkpoint=DIR to measure another checkpoint",
    )
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
    jobs = [
        (t, k, args.episodes, args.horizon, args.seed, args.policy, tuple(args.overrides))
        for k in sorted(delays, reverse=True)
        for t in tasks
    ]
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
            "command": " ".join(["scripts/delay_sweep.py", *(argv if argv is not None else sys.argv[1:])]),
            "policy": args.policy,
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
