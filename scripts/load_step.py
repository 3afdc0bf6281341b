"""Load step: how the static and the adaptive pipeline respond when generation suddenly gets slower.

One agent per controller runs a stream of observations (rendered from the task once, fed as the robot's
camera would: paced by the agent's own pacer), first with ``--before-ms`` of injected generation delay
per request, then, halfway, with ``--after-ms`` (a bigger model, a busier machine, a second robot on a
shared device). Per action it records the time, the interval since the previous action, the
staleness of its newest input and the generation depth. Output: ``load_step.json``, a summary table
(rate, interval cv and staleness before and after the step) and ``load_step.png`` (rate, intervals,
staleness and depth over time). ``--contrast-lending`` adds the adaptive pipeline once more with
draining pipelines that read only their own contexts, to show what lending them the new pipeline's
contexts saves at a re-plan.

    MUJOCO_GL=egl .venv/bin/python scripts/load_step.py --policy tiny-dp --target-hz 20 \
        --before-ms 1 --after-ms 100 --steps 300 --contrast-lending --out runs/load-step
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


def observations(task: str, count: int) -> list[Any]:
    """``count`` camera frames of a short scripted episode (the expert acts), as auras observations."""
    from auras import AurasAgent, load_config
    from auras.envs import make_env
    from auras.envs.base import to_observation

    frames = []
    with make_env(task) as env, AurasAgent(load_config(None, [f"env.task={task}"])) as expert:
        env_obs, info = env.reset(seed=100_000)
        for t in range(count):
            obs = to_observation(env_obs, info, t, time.monotonic())
            frames.append(obs)
            privileged = to_observation(env_obs, info, t, time.monotonic(), privileged=True)
            env_obs, _, terminated, truncated, info = env.step(expert.step(privileged).chunk[0])
            if terminated or truncated:
                env_obs, info = env.reset(seed=100_001 + t)
    return frames


def run(config_overrides: list[str], frames: list[Any], after_ms: float, lend: bool = True) -> list[dict[str, Any]]:
    """Feed ``frames`` through one agent; halfway, generation's injected delay becomes ``after_ms``.
    ``lend`` False: a draining pipeline does not read the new one's contexts (for contrast)."""
    from auras import AurasAgent, load_config
    from auras.pipeline.frames import FrameExecutor
    from auras.pipeline.pacing import pacer_for

    config = load_config(None, config_overrides)
    rows: list[dict[str, Any]] = []
    no_lending = mock.patch.object(FrameExecutor, "lend", lambda self, contexts, their_frame: None)
    with AurasAgent(config) as agent, contextlib.nullcontext() if lend else no_lending:
        generation = agent.policy.generation
        if not hasattr(generation, "injected_s"):
            raise SystemExit("load_step: start with a generation delay > 0 (--before-ms) so it can be changed")
        pacer = pacer_for(agent)
        last, start = None, time.monotonic()
        for i, frame in enumerate(frames):
            if i == len(frames) // 2:
                generation.injected_s = after_ms / 1e3
            pacer.wait()
            began = time.monotonic()
            action = agent.step(replace(frame, step_id=i, capture_time=time.monotonic()))
            pacer.record(time.monotonic() - began)
            if action is last:
                continue  # no new action this frame (the pipeline filling after a deeper switch)
            last = action
            controller = agent.stats()["controller"]
            rows.append({
                "t": time.monotonic() - start, "frame": i, "after": i >= len(frames) // 2,
                "staleness_ms": action.staleness_ms,
                "depth": controller["pp_generation"] if controller else config.pipeline.pp_generation,
            })
        stats = agent.stats()["controller"]
    for prev, row in itertools.pairwise(rows):
        row["interval_ms"] = (row["t"] - prev["t"]) * 1e3
    if stats:
        rows[-1]["replans"] = stats["replans"]
    return rows[1:]


def recovery_s(rows: list[dict[str, Any]], target_hz: float, span: int = 10) -> float | None:
    """Seconds from the step until the rate over the last ``span`` actions is back within 10% of
    ``target_hz`` (None: never)."""
    first = next(i for i, r in enumerate(rows) if r["after"])
    for i in range(first + span, len(rows)):
        window = rows[i - span + 1 : i + 1]
        if 1e3 / np.mean([r["interval_ms"] for r in window]) >= 0.9 * target_hz:
            return rows[i]["t"] - rows[first]["t"]
    return None


def summary(rows: list[dict[str, Any]], skip: int, target_hz: float) -> dict[str, Any]:
    """Rate, interval cv and staleness before and after the step, each phase's first ``skip`` actions
    left out (warm-up, and the controller's reaction for 'after'); the worst staleness of the 'after'
    phase counts every action (the re-plans happen in its first actions); the time to recover the
    target rate after the step."""
    out: dict[str, Any] = {"recovery_s": recovery_s(rows, target_hz)}
    for phase, after in (("before", False), ("after", True)):
        whole = [r for r in rows if r["after"] == after]
        mine = whole[skip:]
        intervals = np.asarray([r["interval_ms"] for r in mine])
        out[phase] = {
            "rate_hz": 1e3 / intervals.mean(), "interval_cv": float(intervals.std() / intervals.mean()),
            "staleness_ms_p50": float(np.median([r["staleness_ms"] for r in mine])),
            "staleness_ms_max": float(max(r["staleness_ms"] for r in (whole if after else mine))),
            "depth_last": mine[-1]["depth"],
        }
    return out


def plot(results: dict[str, list[dict[str, Any]]], step_frame: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    for name, rows in results.items():
        frames = [r["frame"] for r in rows]
        intervals = np.asarray([r["interval_ms"] for r in rows])
        rolling = 1e3 / np.convolve(intervals, np.ones(10) / 10, mode="same")
        axes[0].plot(frames, rolling, label=name)
        axes[1].plot(frames, intervals, label=name, lw=0.8)
        axes[2].plot(frames, [r["staleness_ms"] for r in rows], label=name, lw=0.8)
        axes[3].step(frames, [r["depth"] for r in rows], label=name, where="post")
    for ax, label in zip(axes, ("rate (Hz, 10-action mean)", "interval (ms)", "staleness (ms)", "pp_generation"),
                         strict=True):
        ax.axvline(step_frame, color="grey", ls="--", lw=0.8)
        ax.set_ylabel(label, fontsize=8)
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("frame (generation slows down at the dashed line)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="tiny-dp")
    parser.add_argument("--task", default="push-v3")
    parser.add_argument("--target-hz", type=float, default=12.0)
    parser.add_argument("--before-ms", type=float, default=1.0, help="injected generation delay before the step (> 0)")
    parser.add_argument("--after-ms", type=float, default=100.0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=10, help="controller_window")
    parser.add_argument("--static-depth", type=int, default=0, help="static pp_generation (0: the policy's preset)")
    parser.add_argument("--out", default="runs/load-step")
    parser.add_argument("--contrast-lending", action="store_true",
                        help="also run the adaptive pipeline with draining pipelines that read only their own contexts")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from auras.bench.runner import policy_preset

    preset = policy_preset(args.policy).get("pipeline", {})
    static_depth = args.static_depth or int(preset.get("pp_generation", 1))
    common = [f"policy.type={args.policy}", "pipeline.mode=auras", f"policy.delay_generation_ms={args.before_ms}",
              f"pipeline.alpha={preset.get('alpha', 0.0)}", "policy.torch_threads=1"]
    frames = observations(args.task, args.steps)
    static = [*common, f"pipeline.pp_generation={static_depth}"]
    adaptive = [*static, "pipeline.controller=adaptive", f"pipeline.target_hz={args.target_hz}"]
    adaptive.append(f"pipeline.controller_window={args.window}")
    results = {
        f"static (depth {static_depth})": run(static, frames, args.after_ms),
        f"adaptive ({args.target_hz:g} Hz)": run(adaptive, frames, args.after_ms),
    }
    if args.contrast_lending:
        results[f"adaptive ({args.target_hz:g} Hz), no lending"] = run(adaptive, frames, args.after_ms, lend=False)
    table = {name: summary(rows, args.window * 3, args.target_hz) for name, rows in results.items()}
    (out / "load_step.json").write_text(json.dumps({"args": vars(args), "summary": table, "rows": results}, indent=1))
    plot(results, args.steps // 2, out / "load_step.png")
    print("| controller | phase | rate Hz | interval cv | staleness p50 ms | staleness max ms | depth |")
    print("|---|---|---|---|---|---|---|")
    for name, phases in table.items():
        for phase in ("before", "after"):
            m = phases[phase]
            print(
                f"| {name} | {phase} | {m['rate_hz']:.1f} | {m['interval_cv']:.3f} | {m['staleness_ms_p50']:.0f} | "
                f"{m['staleness_ms_max']:.0f} | {m['depth_last']} |"
            )
    for name, phases in table.items():
        back = phases["recovery_s"]
        print(f"{name}: within 10% of {args.target_hz:g} Hz " + (f"{back:.2f} s after the step" if back else "never"))


if __name__ == "__main__":
    main()
