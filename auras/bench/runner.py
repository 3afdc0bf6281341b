"""`auras bench`: run the agent on tasks, measure accuracy and throughput, return one document.

For each task: ``bench.episodes`` closed-loop episodes on held-out seeds (``bench.seed + i``) under
the configured clock give success_rate and staleness; the observations seen along the way, replayed
back to back, give throughput, latency and interval stability (warm-up excluded).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from auras.bench.episodes import EpisodeRecord, StreamRecord, run_episode, run_stream
from auras.bench.metrics import interval_stats, percentiles, throughput_hz, wilson_interval
from auras.bench.report import SCHEMA_VERSION, machine_info, now_iso, package_versions
from auras.config import AurasConfig, config_hash, load_config
from auras.types import Observation

__all__ = ["run_bench"]

ProgressFn = Callable[[str, int, int], None]  # (label, done, total)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _summarize(episodes: list[EpisodeRecord], stream: StreamRecord) -> dict[str, Any]:
    successes = sum(e.success for e in episodes)
    steps = [e.steps_to_success for e in episodes if e.steps_to_success is not None]
    staleness_ms = [v for e in episodes for v in e.staleness_ms]
    staleness_frames = [v for e in episodes for v in e.staleness_frames]
    stage_p50 = {stage: float(np.median(v)) for stage, v in stream.stage_ms.items()}
    slowest = max(stage_p50.values(), default=0.0)
    hz = throughput_hz(stream.output_times)
    bound = 1e3 / slowest if slowest > 0 else None
    return {
        "episodes": len(episodes),
        "successes": successes,
        "success_rate": successes / len(episodes),
        "success_ci95": list(wilson_interval(successes, len(episodes))),
        "steps_to_success": float(np.mean(steps)) if steps else None,
        "throughput_hz": hz,
        "speedup": None,
        "relative_accuracy": None,
        "latency_ms": percentiles(stream.latency_ms),
        **{k: v for k, v in interval_stats(stream.output_times).items()},
        "staleness_ms": percentiles(staleness_ms),
        "staleness_frames": {
            "mean": float(np.mean(staleness_frames)) if staleness_frames else None,
            "max": int(max(staleness_frames)) if staleness_frames else None,
        },
        "stage_ms_p50": stage_p50,
        "bound_hz": bound,
        "bound_fraction": (hz / bound) if hz and bound else None,
        "startup_ms": stream.startup_ms,
        "rss_mb": _rss_mb(),
        "stream_actions": len(stream.output_times),
    }


def _with_relative_figures(results: list[dict[str, Any]]) -> None:
    """speedup and relative_accuracy against the sequential row of the same task and policy."""
    for row in results:
        base = next(
            (
                r
                for r in results
                if r["mode"] == "sequential" and (r["task"], r["policy"]) == (row["task"], row["policy"])
            ),
            None,
        )
        if base is None:
            continue
        m, b = row["metrics"], base["metrics"]
        if m["throughput_hz"] and b["throughput_hz"]:
            m["speedup"] = m["throughput_hz"] / b["throughput_hz"]
        if b["success_rate"] > 0:
            m["relative_accuracy"] = m["success_rate"] / b["success_rate"]


def _bench_task(config: AurasConfig, progress: ProgressFn | None, recorded: list[Observation]) -> dict[str, Any]:
    """Episodes + stream for one (task, mode). ``recorded`` is the task's observation stream: filled
    during the first mode's episodes and replayed unchanged for every later mode (same inputs)."""
    from auras.agent import AurasAgent
    from auras.envs import make_env

    bench, task = config.bench, config.env.task
    needed = bench.stream_steps + bench.warmup_steps
    label = f"{task} [{config.pipeline.mode}]"

    def record(obs: Observation) -> None:
        if len(recorded) < needed:
            recorded.append(obs)

    env = make_env(
        task,
        horizon=config.env.horizon,
        image_size=config.env.image_size,
        terminate_on_success=config.env.terminate_on_success,
    )
    with AurasAgent(config) as agent, env:
        episodes = []
        for i in range(bench.episodes):
            episodes.append(run_episode(agent, env, bench.seed + i, bench.clock, record))
            if progress:
                progress(f"{label}: episodes", i + 1, bench.episodes + 1)
        stream = run_stream(agent, list(itertools.islice(itertools.cycle(recorded), needed)), bench.warmup_steps)
        if progress:
            progress(f"{label}: throughput", bench.episodes + 1, bench.episodes + 1)
        return {
            "task": task,
            "policy": config.policy.type,
            "privileged": agent.privileged,
            "mode": config.pipeline.mode,
            "backend": config.pipeline.backend,
            "clock": bench.clock,
            "metrics": _summarize(episodes, stream),
            "episodes": [
                {
                    "seed": e.seed,
                    "success": e.success,
                    "steps": e.steps,
                    "steps_to_success": e.steps_to_success,
                }
                for e in episodes
            ],
        }


def run_bench(
    config: AurasConfig,
    tasks: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    modes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Benchmark ``config`` on ``tasks`` (default: ``config.env.task``) in each of ``modes`` (default:
    ``config.pipeline.mode``); return the results document. Every mode of a task sees the same
    episode seeds and the same throughput stream, so speedup is a ratio measured side by side."""
    tasks = list(tasks or [config.env.task])
    modes = list(modes or [config.pipeline.mode])
    base = config.model_dump(mode="json")
    configs = {
        (task, mode): load_config(base=base, overrides=[f"env.task={task}", f"pipeline.mode={mode}"])
        for task in tasks
        for mode in modes
    }  # every combination validated before anything runs
    results = []
    for task in tasks:
        recorded: list[Observation] = []
        for mode in modes:
            results.append(_bench_task(configs[(task, mode)], progress, recorded))
    _with_relative_figures(results)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": now_iso(),
        "command": sys.argv,
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "tasks": tasks,
        "modes": modes,
        "clock": config.bench.clock,
        "episodes": config.bench.episodes,
        "versions": package_versions(),
        "machine": machine_info(),
        "results": results,
    }
