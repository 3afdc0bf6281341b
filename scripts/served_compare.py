"""Staleness strategies on the served path: `auras serve` and `auras robot-sim`, the robot's own clock.

Each setup (policy x mode x staleness strategy) starts one `auras serve` process with the policy's
preset (configs/pipeline-<policy>.yaml; its pipeline shape in every mode) and runs `auras robot-sim`
against it for every task, ``--episodes`` episodes on seeds ``--seed + i`` (the bench's held-out
seeds), the camera at ``--camera-hz``. robot-sim runs the simulation at wall-clock pace in its own
process and never waits for the agent, as a real robot does. Output: one JSON file of every
episode and a markdown table (success with its 95% Wilson interval, distinct chunks applied per
second of robot time, median age of an action when it took over).

    MUJOCO_GL=egl .venv/bin/python scripts/served_compare.py --policies tiny-dp,tiny-flow,tiny-vla \
        --tasks push-v3,pick-place-v3,button-press-v3 --episodes 30 --out docs/results/served

Setups are ``MODE:STRATEGY`` (``auras:chunk_blend`` runs mode auras with public_context+chunk_blend),
optionally with ``@KEY=VALUE`` settings for the server (``auras:chunk_blend@staleness.queue_threshold=1``);
``--setups`` chooses them, rtc is skipped for policies that do not denoise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

SETUPS = (
    "sequential:none",
    "auras:none",
    "auras:chunk_blend",
    "auras:rtc",
    "pipeline:none",
    "sequential:chunk_blend",
    "sequential:rtc",
    "pipeline:chunk_blend",
    "pipeline:rtc",
)
DENOISING = ("tiny-dp", "tiny-flow", "smolvla")
BIN = Path(sys.executable).parent


def parse_setup(setup: str) -> tuple[str, str, list[str]]:
    """``MODE:STRATEGY[@KEY=VALUE...]`` -> (mode, strategy with its settings as a label, server overrides)."""
    head, *settings = setup.split("@")
    mode, strategy = head.split(":")
    label = "@".join([strategy, *(s.removeprefix("staleness.") for s in settings)])
    return mode, label, [f"staleness.strategy={strategy}", *settings]


def run_setup(policy: str, setup: str, tasks: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    mode, strategy, overrides = parse_setup(setup)
    sets = [item for override in overrides for item in ("--set", override)]
    from auras.bridge.transport import free_service_port

    endpoint = f"tcp://127.0.0.1:{free_service_port()}"
    log = open(Path(args.out) / f"serve-{policy}-{mode}-{strategy}.log", "w")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen(
        [str(BIN / "auras"), "serve", "-c", f"pipeline-{policy}", "--mode", mode, *sets, "--bind", endpoint],
        stdout=log, stderr=subprocess.STDOUT,
    )
    rows = []
    try:
        for task in tasks:
            out = Path(args.out) / f"{policy}-{mode}-{strategy}-{task}.json"
            started = time.monotonic()
            done = subprocess.run(
                [str(BIN / "auras"), "robot-sim", "--task", task, "--connect", endpoint, "--episodes",
                 str(args.episodes), "--seed", str(args.seed), "--camera-hz", str(args.camera_hz), "--json", str(out)],
                capture_output=True, text=True, timeout=args.episodes * 30 + 120,
            )
            if done.returncode != 0:
                print(f"{policy} {setup} {task}: robot-sim failed: {done.stderr[-2000:]}", flush=True)
                continue
            episodes = json.loads(out.read_text())["episodes"]
            out.unlink()
            row = summarize(policy, mode, strategy, task, episodes)
            row["wall_s"] = round(time.monotonic() - started, 1)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "episodes"}), flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return rows


def summarize(policy: str, mode: str, strategy: str, task: str, episodes: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    from auras.bench.metrics import wilson_interval

    wins = sum(bool(e["success"]) for e in episodes)
    low, high = wilson_interval(wins, len(episodes))
    dt = 1 / 80  # Meta-World's control period
    rates = [e["actions_applied"] / (e["steps"] * dt) for e in episodes if e["steps"]]
    ages = [e["action_age_ms_p50"] for e in episodes if e["action_age_ms_p50"] is not None]
    return {
        "policy": policy, "mode": mode, "strategy": strategy, "task": task, "episodes": episodes,
        "success": wins, "n": len(episodes), "interval": [round(low, 3), round(high, 3)],
        "chunks_per_s": round(float(np.median(rates)), 1) if rates else None,
        "age_ms_p50": round(float(np.median(ages)), 1) if ages else None,
        "idle_steps_mean": round(float(np.mean([e["idle_steps"] for e in episodes])), 1),
    }


def markdown(rows: list[dict[str, Any]], tasks: list[str]) -> str:
    lines = []
    for policy in dict.fromkeys(r["policy"] for r in rows):
        lines += [f"### {policy}", "", "| setup | " + " | ".join(tasks) + " | total | chunks/s | age p50 ms |",
                  "|---|" + "---|" * (len(tasks) + 3)]
        setups = dict.fromkeys((r["mode"], r["strategy"]) for r in rows if r["policy"] == policy)
        for mode, strategy in setups:
            cells = {r["task"]: r for r in rows if (r["policy"], r["mode"], r["strategy"]) == (policy, mode, strategy)}
            text = [f"{cells[t]['success']}/{cells[t]['n']}" if t in cells else "-" for t in tasks]
            wins, n = sum(c["success"] for c in cells.values()), sum(c["n"] for c in cells.values())
            rates = [c["chunks_per_s"] for c in cells.values() if c["chunks_per_s"] is not None]
            ages = [c["age_ms_p50"] for c in cells.values() if c["age_ms_p50"] is not None]
            rate = f"{sum(rates) / len(rates):.1f}" if rates else "-"
            age = f"{sum(ages) / len(ages):.0f}" if ages else "-"
            lines.append(f"| {mode} {strategy} | " + " | ".join(text) + f" | {wins}/{n} | {rate} | {age} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="tiny-dp,tiny-flow,tiny-vla")
    parser.add_argument("--tasks", default="push-v3,pick-place-v3,button-press-v3")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--out", default="runs/served")
    parser.add_argument("--table", action="store_true", help="Run nothing: rewrite the table from OUT/served.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    results = out / "served.json"
    rows: list[dict[str, Any]] = json.loads(results.read_text())["rows"] if results.exists() else []
    if not args.table:
        done = {(r["policy"], r["mode"], r["strategy"], r["task"]) for r in rows}
        for setup in args.setups.split(","):
            for policy in args.policies.split(","):
                mode, strategy, _ = parse_setup(setup)
                if "rtc" in strategy and policy not in DENOISING:
                    continue
                todo = [t for t in tasks if (policy, mode, strategy, t) not in done]
                if todo:
                    rows += run_setup(policy, setup, todo, args)
                    results.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    (out / "served.md").write_text(markdown(rows, tasks))
    print(markdown(rows, tasks))


if __name__ == "__main__":
    main()
