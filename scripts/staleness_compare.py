"""Staleness strategies side by side: success against injected generation delay, virtual clock.

Every cell runs the same seeded episodes of one task with one policy under the ``virtual`` clock
(simulated time advances by the agent's measured compute, so a slower agent acts on older
observations), generation slowed by ``--delays`` ms per request (standing in for a larger model).
The rows are execution setups:

- ``sequential``: one request at a time, no fix (reference);
- ``pipeline``: the policy's pipelined preset (configs/pipeline-<policy>.yaml) with private
  contexts, no fix;
- ``public_context``: the same pipeline in mode auras;
- ``rtc``, ``roll_forward``, ``chunk_blend``: the private pipeline with that robot-side fix;
- ``public_context+rtc`` (and any other '+' set naming public_context): mode auras with the fix.
- a ``seq:`` prefix (``seq:rtc``) applies a fix to sequential execution instead;
- ``@key=value`` suffixes set more of the configuration for that row
  (``public_context+rtc@staleness.execution_horizon=8``).

rtc needs a denoising policy (tiny-dp, tiny-flow); cells it cannot run are skipped. Output: a
JSON file, a markdown table (success with its 95% Wilson interval, median staleness in control
steps at takeover) and a plot of success against delay per task; ``--merge`` combines result files
of several runs into one table and plot.

    MUJOCO_GL=egl .venv/bin/python scripts/staleness_compare.py --policies tiny-dp \
        --tasks push-v3,track-target-v0 --delays 0,100,200 --episodes 20 --jobs 2 --out runs/staleness
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

SETUPS = ("sequential", "pipeline", "public_context", "rtc", "roll_forward", "chunk_blend", "public_context+rtc")
"""The default rows (``--setups``), in the order tables and plots list them; other rows follow."""


def setup_overrides(setup: str, policy: str) -> list[str]:
    """Config overrides of one row."""
    from auras.bench.runner import policy_preset

    setup, *settings = setup.split("@")
    if setup == "sequential" or setup.startswith("seq:"):
        fix = setup.removeprefix("seq:") if setup != "sequential" else "none"
        return ["pipeline.mode=sequential", f"staleness.strategy={fix}", *settings]
    preset = policy_preset(policy).get("pipeline", {})
    keys = ("pp_perception", "pp_generation", "alpha", "emit", "fetch_offset")
    shape = [f"pipeline.{key}={preset[key]}" for key in keys if key in preset]
    mode = "auras" if "public_context" in setup else "pipeline"
    strategy = "none" if setup == "pipeline" else setup
    return [f"pipeline.mode={mode}", *shape, f"staleness.strategy={strategy}", *settings]


def run_cell(policy: str, task: str, delay: float, setup: str, episodes: int, seed: int) -> dict[str, Any] | None:
    import numpy as np
    import torch

    from auras import AurasAgent, load_config
    from auras.bench.episodes import run_episode
    from auras.bench.metrics import wilson_interval
    from auras.envs import make_env
    from auras.errors import ConfigError

    torch.set_num_threads(1)
    overrides = setup_overrides(setup, policy)
    base = [f"policy.type={policy}", f"env.task={task}", "policy.torch_threads=1"]
    base.append(f"policy.delay_generation_ms={delay}")
    config = load_config(overrides=[*base, *overrides])
    start = time.perf_counter()
    successes, staleness, requests = 0, [], []
    try:
        agent = AurasAgent(config)
    except ConfigError:  # a fix this policy cannot run (rtc on a non-denoising policy)
        return None
    with agent, make_env(task) as env:
        for i in range(episodes):
            record = run_episode(agent, env, seed + i, clock="virtual")
            successes += record.success
            staleness += record.staleness_frames
            requests.append(len(record.latency_ms))
    low, high = wilson_interval(successes, episodes)
    return {
        "policy": policy, "task": task, "delay_ms": delay, "setup": setup, "episodes": episodes,
        "successes": successes, "success": successes / episodes, "ci95": [low, high],
        "staleness_steps_p50": float(np.median(staleness)) if staleness else None,
        "requests_per_episode": float(np.mean(requests)), "wall_s": time.perf_counter() - start,
    }


def _run(args: tuple) -> dict[str, Any] | None:
    return run_cell(*args)


def setup_order(cells: list[dict[str, Any]]) -> list[str]:
    """The setups of ``cells``: the standard ones in :data:`SETUPS` order, then the others as they come."""
    names = list(dict.fromkeys(c["setup"] for c in cells))
    return sorted(names, key=lambda name: SETUPS.index(name) if name in SETUPS else len(SETUPS) + names.index(name))


def markdown(cells: list[dict[str, Any]]) -> str:
    """One table per policy and task: a row per setup, a column per delay, and the row's total."""
    lines = []
    for policy in sorted({c["policy"] for c in cells}):
        for task in sorted({c["task"] for c in cells if c["policy"] == policy}):
            mine = [c for c in cells if c["policy"] == policy and c["task"] == task]
            delays = sorted({c["delay_ms"] for c in mine})
            lines += [f"\n**{policy} on {task}** (success, 95% interval; median staleness at takeover in steps)\n",
                      "| setup | " + " | ".join(f"{d:g} ms" for d in delays) + " | all |",
                      "|---|" + "---|" * (len(delays) + 1)]
            for setup in setup_order(mine):
                row, done = [], [c for c in mine if c["setup"] == setup]
                for d in delays:
                    c = next((c for c in done if c["delay_ms"] == d), None)
                    row.append("" if c is None else f"{c['successes']}/{c['episodes']} "
                               f"({c['ci95'][0]:.0%}-{c['ci95'][1]:.0%}); {c['staleness_steps_p50']:g}")
                total = f"{sum(c['successes'] for c in done)}/{sum(c['episodes'] for c in done)}"
                lines.append(f"| {setup} | " + " | ".join(row) + f" | {total} |")
    return "\n".join(lines) + "\n"


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    """Success against delay: a row of panels per policy, a column per task, a line per setup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies, tasks = sorted({c["policy"] for c in cells}), sorted({c["task"] for c in cells})
    setups = setup_order(cells)
    palette = plt.get_cmap("tab20" if len(setups) > 10 else "tab10")
    colors = {setup: palette(i) for i, setup in enumerate(setups)}  # one colour per setup in every panel
    fig, axes = plt.subplots(len(policies), len(tasks), figsize=(5.5 * len(tasks), 3.8 * len(policies)),
                             squeeze=False)
    for (i, policy), (j, task) in ((p, t) for p in enumerate(policies) for t in enumerate(tasks)):
        ax, mine = axes[i][j], [c for c in cells if (c["policy"], c["task"]) == (policy, task)]
        for setup in setup_order(mine):
            row = sorted((c for c in mine if c["setup"] == setup), key=lambda c: c["delay_ms"])
            ax.plot([c["delay_ms"] for c in row], [c["success"] for c in row], marker="o", label=setup,
                    color=colors[setup])
        ax.set_title(f"{policy} / {task}", fontsize=9)
        ax.set_xlabel("injected generation delay (ms)")
        ax.set_ylabel("success")
        ax.set_ylim(-0.05, 1.05)
        if mine:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def merged(paths: list[str]) -> list[dict[str, Any]]:
    """The cells of several result files; a cell (policy, task, delay, setup) in a later file replaces
    the same cell of an earlier one."""
    cells: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        for cell in json.loads(Path(path).read_text())["cells"]:
            cells[(cell["policy"], cell["task"], cell["delay_ms"], cell["setup"])] = cell
    return list(cells.values())


def write_results(cells: list[dict[str, Any]], args: argparse.Namespace, out: Path, final: bool) -> None:
    """staleness.json under ``out``; when ``final``, also the tables (staleness.md, printed) and the plot."""
    (out / "staleness.json").write_text(json.dumps({"cells": cells, "args": vars(args)}, indent=1))
    if final:
        (out / "staleness.md").write_text(markdown(cells))
        plot(cells, out / "staleness.png")
        print(markdown(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="tiny-dp")
    parser.add_argument("--tasks", default="push-v3,pick-place-v3,track-target-v0")
    parser.add_argument("--delays", default="0,50,100,200")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="runs/staleness")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="run nothing: combine these result files (later cells win) into --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        write_results(merged(args.merge), args, out, final=True)
        return
    jobs = [(p, t, float(d), s, args.episodes, args.seed) for p in args.policies.split(",")
            for t in args.tasks.split(",") for d in args.delays.split(",") for s in args.setups.split(",")]
    cells = []
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for cell in pool.imap(_run, jobs):
            if cell is not None:
                cells.append(cell)
                print(json.dumps(cell), flush=True)
                write_results(cells, args, out, final=False)  # every finished cell is kept
    write_results(cells, args, out, final=True)


if __name__ == "__main__":
    main()
