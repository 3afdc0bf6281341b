"""`auras bench`: run cells (policy x task x sweep point x mode), measure them, return one document.

A *cell* is one fully resolved configuration. For each cell two measurements are taken:

- throughput: a pre-recorded stream of observations fed back to back (rendering does not compete
  with inference), warm-up excluded. The stream of a task is recorded once, from the scripted
  expert on held-out seeds, so every policy and mode sees exactly the same inputs;
- accuracy: ``bench.episodes`` closed-loop episodes on held-out seeds (``bench.seed + i``, the same
  for every cell) under ``bench.clock``. Skipped when ``bench.accuracy`` is false.

Each policy starts from its tuned pipeline preset (``configs/pipeline-<policy>.yaml``) when one is
shipped; the user's config file and ``--set`` overrides come on top, then the sweep point, then the
cell's policy, task and mode.
"""

from __future__ import annotations

import collections
import functools
import itertools
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auras.agent import AurasAgent
from auras.bench.episodes import EpisodeRecord, StreamRecord, run_episode, run_stream
from auras.bench.metrics import interval_stats, percentiles, throughput_hz, wilson_interval
from auras.bench.report import SCHEMA_VERSION, machine_info, now_iso, package_versions
from auras.bench.served import measure_accuracy_served
from auras.config import AurasConfig, config_hash, load_config, preset_names
from auras.envs import make_env
from auras.errors import ConfigError
from auras.pipeline import build_engine, build_executor, engine_problem
from auras.pipeline.engine import FrameEngine
from auras.pipeline.pacing import PACING_MARGIN
from auras.staleness import resolve_strategy
from auras.types import Observation

__all__ = [
    "FRAME_KEYS",
    "BenchCell",
    "measure_accuracy",
    "measure_throughput",
    "plan_cells",
    "record_stream",
    "results_document",
    "run_bench",
    "run_cells",
]

ProgressFn = Callable[..., None]  # (label, done, total)
Sweep = Mapping[str, Sequence[Any]]  # dotted config key -> values

FRAME_KEYS = ("pipeline.pp_perception", "pipeline.pp_generation", "pipeline.fetch_offset", "pipeline.alpha",
              "pipeline.emit")
"""Settings that only the frame modes (pipeline, auras) read."""
_FRAME_MODES = ("pipeline", "auras")


@dataclass(frozen=True)
class BenchCell:
    """One configuration to measure; ``point`` is its sweep point (key -> value), ``label`` names it."""

    config: AurasConfig
    point: tuple[tuple[str, Any], ...]
    label: str

    @property
    def key(self) -> tuple[Any, ...]:
        c = self.config
        return (c.policy.type, c.env.task, c.pipeline.mode, self.point)


def _relevant(mode: str, key: str) -> bool:
    if key in FRAME_KEYS:
        return mode in _FRAME_MODES
    if key == "pipeline.workers":
        return mode == "parallel"
    return True


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _label(config: AurasConfig, point: tuple[tuple[str, Any], ...]) -> str:
    p = config.pipeline
    parts = [p.mode]
    if p.mode in _FRAME_MODES:
        parts.append(f"{p.pp_perception}x{p.pp_generation}")
        if p.fetch_offset:
            parts.append(f"off{p.fetch_offset}")
        if p.alpha:
            parts.append(f"a{p.alpha:g}")
    if p.mode == "parallel":
        parts.append(f"w{p.workers}")
    if p.frame_period_ms == "auto":
        parts.append("paced auto")
        if p.pacing_quantile != 0.9:
            parts.append(f"q{p.pacing_quantile:g}")
        if p.pacing_margin != PACING_MARGIN:
            parts.append(f"m{p.pacing_margin:g}")
    elif p.frame_period_ms:
        parts.append(f"paced {p.frame_period_ms:g} ms")
    if p.frame_period_ms and p.release == "on_tick":
        parts.append("on tick")
    fixes = resolve_strategy(config.staleness.strategy, p.mode).robot_side  # mode auras implies the public context
    if fixes.name != "none":
        parts.append(fixes.name)
    if config.bench.served:
        parts.append("served")
    shown = [(k, v) for k, v in point if not k.startswith(("pipeline.", "staleness.strategy", "bench.served"))]
    parts += [f"{_short(k)}={v}" for k, v in shown]
    return " ".join(parts)


def policy_preset(policy: str) -> dict[str, Any]:
    """The tuned pipeline and staleness settings shipped for ``policy`` (``configs/pipeline-<policy>.yaml``),
    if any; the mode is left to the caller (the bench compares modes with the same settings)."""
    name = f"pipeline-{policy}"
    if name not in preset_names():
        return {}
    preset = load_config(name).model_dump(mode="json")
    pipeline = dict(preset["pipeline"])
    pipeline.pop("mode")
    return {"pipeline": pipeline, "staleness": preset["staleness"]}


def plan_cells(
    source: str | Path | None = None, overrides: Sequence[str] = (), sweep: Sweep | None = None
) -> tuple[AurasConfig, list[BenchCell]]:
    """Resolve and validate every cell before anything runs; returns (run config, cells)."""
    run = load_config(source, overrides)
    policies = list(run.bench.policies or [run.policy.type])
    tasks = list(run.bench.tasks or [run.env.task])
    modes = list(run.bench.modes or [run.pipeline.mode])
    sweep = {k: list(v) for k, v in (sweep or {}).items()}
    for key, values in sweep.items():
        if not values:
            raise ConfigError(f"sweep {key}: expected at least one value")
    points = [tuple(zip(sweep, values, strict=True)) for values in itertools.product(*sweep.values())]
    cells: dict[tuple[Any, ...], BenchCell] = {}
    for policy, task, point, mode in itertools.product(policies, tasks, points, modes):
        relevant = tuple((k, v) for k, v in point if _relevant(mode, k))
        cell_overrides = [*overrides, *(f"{k}={v}" for k, v in relevant)]
        cell_overrides += [f"policy.type={policy}", f"env.task={task}", f"pipeline.mode={mode}"]
        config = load_config(source, cell_overrides, base=policy_preset(policy))
        cell = BenchCell(config, relevant, _label(config, relevant))
        cells.setdefault(cell.key, cell)  # a setting a mode ignores does not make a new cell
    return run, list(cells.values())


def record_stream(config: AurasConfig, task: str, length: int) -> list[Observation]:
    """``length`` observations of ``task`` from the scripted expert on held-out seeds: the input
    stream every throughput measurement of this task replays."""
    base = config.model_dump(mode="json")
    base["policy"] = {**base["policy"], "model": {}, "checkpoint": None}  # the benchmarked policy's, not the expert's
    expert = load_config(base=base, overrides=[
        "policy.type=expert", "policy.device=cpu", "policy.dtype=float32", "pipeline.mode=sequential",
        "pipeline.backend=local", f"env.task={task}",
        "staleness.strategy=auto",
        "policy.delay_perception_ms=0", "policy.delay_generation_ms=0", "policy.scale_perception=1",
        "policy.scale_generation=1",
    ])
    recorded: list[Observation] = []

    def keep(obs: Observation) -> None:
        if len(recorded) < length:
            recorded.append(obs)

    env = make_env(task, horizon=config.env.horizon, image_size=config.env.image_size, terminate_on_success=True)
    with AurasAgent(expert) as agent, env:
        for seed in itertools.count(config.bench.seed):
            run_episode(agent, env, seed, "frame", keep)
            if len(recorded) >= length:
                return recorded
    raise AssertionError("unreachable")


def measure_throughput(agent: AurasAgent, config: AurasConfig, stream: Sequence[Observation]) -> StreamRecord:
    """Replay ``stream`` (cycled to stream + warm-up steps) through ``agent`` (reset first)."""
    needed = config.bench.stream_steps + config.bench.warmup_steps
    return run_stream(agent, list(itertools.islice(itertools.cycle(stream), needed)), config.bench.warmup_steps)


def measure_accuracy(
    agent: AurasAgent, config: AurasConfig, progress: Callable[[int], None] | None = None,
    engine: FrameEngine | None = None,
) -> list[EpisodeRecord]:
    """``config.bench.episodes`` closed-loop episodes of ``agent`` on seeds ``bench.seed + i`` under
    ``bench.clock`` (each episode resets the agent). With ``engine`` and ``bench.envs`` > 1 the episodes
    run ``envs`` at a time, each env with an agent of its own that is a session of ``engine``."""
    if engine is not None and config.bench.envs > 1:
        return measure_accuracy_together(engine, config, progress)
    env = _make_env(config)
    episodes: list[EpisodeRecord] = []
    with env:
        for i in range(config.bench.episodes):
            episodes.append(run_episode(agent, env, config.bench.seed + i, config.bench.clock))
            if progress:
                progress(i + 1)
    return episodes


def _make_env(config: AurasConfig) -> Any:
    return make_env(
        config.env.task,
        horizon=config.env.horizon,
        image_size=config.env.image_size,
        terminate_on_success=config.env.terminate_on_success,
    )


def measure_accuracy_together(
    engine: FrameEngine, config: AurasConfig, progress: Callable[[int], None] | None = None
) -> list[EpisodeRecord]:
    """The episodes of :func:`measure_accuracy`, ``bench.envs`` at a time: each env runs in a thread of its
    own (its env built there: a rendering context belongs to its thread) with an agent that is a session of
    ``engine``, taking the next seed when its episode ends. Returned in seed order."""
    seeds = collections.deque(config.bench.seed + i for i in range(config.bench.episodes))
    done: dict[int, EpisodeRecord] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def env_loop() -> None:
        try:
            with AurasAgent(config, executor=build_executor(config, engine=engine)) as agent, _make_env(config) as env:
                while not errors:
                    with lock:
                        if not seeds:
                            return
                        seed = seeds.popleft()
                    record = run_episode(agent, env, seed, config.bench.clock)
                    with lock:
                        done[seed] = record
                        if progress:
                            progress(len(done))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=env_loop, name=f"auras-bench-env-{k}", daemon=True)
               for k in range(min(config.bench.envs, config.bench.episodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [done[seed] for seed in sorted(done)]


FRAME_CLOCK_WAIT_MS = 40.0


def bench_engine_wait_ms(config: AurasConfig) -> float:
    """How long the frames of envs run together wait for every env: under the frame clock, whose results
    do not depend on timing, long enough for every env to finish its simulation step and join (fuller
    frames, a shorter run); under the other clocks the served default (``serve.engine_wait_ms``)."""
    wait = config.serve.engine_wait_ms
    return max(wait, FRAME_CLOCK_WAIT_MS) if config.bench.clock == "frame" else wait


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _summarize(episodes: list[EpisodeRecord], stream: StreamRecord, ttl_ms: float = 250.0) -> dict[str, Any]:
    """The cell's metrics. Besides throughput and success, what realtime evaluations report: the latency of
    the episodes' requests (p50 / p95 / p99), the effective control rate (new actions taken over per second
    of robot time), the stale-action ratio (actions whose newest input was older than ``ttl_ms`` when
    stamped), deadline misses (realtime: actions too old to apply plus control steps that started late);
    success lost against the zero-delay run is filled in by :func:`with_relative_figures`."""
    n = len(episodes)
    episode_latency = [v for e in episodes for v in e.latency_ms]
    robot_s = sum(e.steps * e.control_dt_s for e in episodes if e.control_dt_s)
    successes = sum(e.success for e in episodes)
    steps = [e.steps_to_success for e in episodes if e.steps_to_success is not None]
    staleness_ms = [v for e in episodes for v in e.staleness_ms]
    staleness_frames = [v for e in episodes for v in e.staleness_frames]
    stage_p50 = {stage: float(np.median(v)) for stage, v in stream.stage_ms.items()}
    slowest = max(stage_p50.values(), default=0.0)
    hz = throughput_hz(stream.output_times)
    bound = 1e3 / slowest if slowest > 0 else None
    return {
        "episodes": n,
        "successes": successes if n else None,
        "success_rate": successes / n if n else None,
        "success_ci95": list(wilson_interval(successes, n)) if n else None,
        "steps_to_success": float(np.mean(steps)) if steps else None,
        "throughput_hz": hz,
        "speedup": None,
        "relative_accuracy": None,
        "latency_ms": percentiles(stream.latency_ms),
        **interval_stats(stream.output_times),
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
        "episode_latency_ms": percentiles(episode_latency, (50, 95, 99)),
        "control_rate_hz": (sum(len(e.latency_ms) for e in episodes) / robot_s) if robot_s else None,
        "stale_action_ratio": (sum(v > ttl_ms for v in staleness_ms) / len(staleness_ms)) if staleness_ms else None,
        "deadline_misses": sum(e.deadline_misses for e in episodes),
        "fallback_s": sum(e.fallback_s for e in episodes),
        "overruns": sum(e.overruns for e in episodes),
        "late_ms_max": max((e.late_ms_max for e in episodes), default=0.0),
        "idle_steps": sum(e.idle_steps for e in episodes),
        "expired_actions": sum(e.expired for e in episodes),
    }


def _settings(config: AurasConfig) -> dict[str, Any]:
    p, q = config.pipeline, config.policy
    return {
        "pp_perception": p.pp_perception, "pp_generation": p.pp_generation, "fetch_offset": p.fetch_offset,
        "alpha": p.alpha, "emit": p.emit, "workers": p.workers, "frame_period_ms": p.frame_period_ms,
        "release": p.release,
        "delay_ms_perception": q.delay_perception_ms,
        "delay_ms_generation": q.delay_generation_ms, "scale_perception": q.scale_perception,
        "scale_generation": q.scale_generation,
        "staleness_strategy": resolve_strategy(config.staleness.strategy, p.mode).name,
        "envs": (min(config.bench.envs, config.bench.episodes)
                 if config.bench.accuracy and not config.bench.served and engine_problem(config) is None else 1),
    }


def _row(
    cell: BenchCell, privileged: bool, episodes: list[EpisodeRecord], stream: StreamRecord, runtime: dict[str, Any]
) -> dict[str, Any]:
    c = cell.config
    intervals = np.diff(np.asarray(stream.output_times)) * 1e3
    return {
        "task": c.env.task,
        "policy": c.policy.type,
        "privileged": privileged,
        "mode": c.pipeline.mode,
        "backend": c.pipeline.backend,
        "clock": c.bench.clock,
        "served": c.bench.served,
        "label": cell.label,
        "point": {k: v for k, v in cell.point},
        "settings": _settings(c),
        "config_hash": config_hash(c),
        "config": c.model_dump(mode="json"),
        "metrics": {
            **_summarize(episodes, stream, c.bench.action_ttl_ms),
            "compile_ms": runtime["compile_ms"],
            "context_transport": runtime["context_transport"],
            **({"engine": runtime["engine"]} if "engine" in runtime else {}),
        },
        "samples": {
            "intervals_ms": [round(float(v), 3) for v in intervals],
            "latency_ms": [round(float(v), 3) for v in stream.latency_ms],
        },
        "episodes": [
            {"seed": e.seed, "success": e.success, "steps": e.steps, "steps_to_success": e.steps_to_success,
             "actions_sha": e.actions_sha}
            for e in episodes
        ],
    }


def _pair_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    point = tuple(sorted((k, v) for k, v in row["point"].items() if not k.startswith("pipeline.")))
    return (row["task"], row["policy"], point)


def with_relative_figures(results: list[dict[str, Any]]) -> None:
    """speedup and relative_accuracy against the sequential row of the same task, policy and
    non-pipeline sweep point (same injected delay, same model size)."""
    base = {_pair_key(r): r for r in results if r["mode"] == "sequential"}
    for row in results:
        b = base.get(_pair_key(row))
        if b is None:
            continue
        m, s = row["metrics"], b["metrics"]
        if m["throughput_hz"] and s["throughput_hz"]:
            m["speedup"] = m["throughput_hz"] / s["throughput_hz"]
        if m["success_rate"] is not None and s["success_rate"]:
            m["relative_accuracy"] = m["success_rate"] / s["success_rate"]
    zero_delay = {_clockless_key(r): r for r in results if r.get("clock") == "frame"}
    for row in results:
        z = zero_delay.get(_clockless_key(row))
        m = row["metrics"]
        if z is not None and m["success_rate"] is not None and z["metrics"]["success_rate"] is not None:
            m["success_lost"] = z["metrics"]["success_rate"] - m["success_rate"]


def _clockless_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's cell without its clock: its frame-clock twin is its zero-delay run (the env waits for
    every action, as if inference took no time)."""
    point = tuple(sorted((k, v) for k, v in row["point"].items() if k != "bench.clock"))
    return (row["task"], row["policy"], row["mode"], row.get("backend"), point)


def run_cells(run: AurasConfig, cells: Sequence[BenchCell], progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Measure every cell; return result rows with speedup and relative accuracy filled in."""
    streams: dict[str, list[Observation]] = {}
    length = run.bench.stream_steps + run.bench.warmup_steps
    rows = []
    for i, cell in enumerate(cells):
        c = cell.config
        name = f"[{i + 1}/{len(cells)}] {c.policy.type} {c.env.task} {cell.label}"
        total = (c.bench.episodes if c.bench.accuracy else 0) + 1
        report = functools.partial(progress, f"{name}: episodes", total=total) if progress else None
        if c.env.task not in streams:
            streams[c.env.task] = record_stream(run, c.env.task, length)
        served = c.bench.accuracy and c.bench.served
        together = c.bench.accuracy and c.bench.envs > 1 and not served and engine_problem(c) is None
        engine = build_engine(c, wait_ms=bench_engine_wait_ms(c)) if together else None
        try:
            executor = build_executor(c, engine=engine) if engine is not None else None
            with AurasAgent(c, executor=executor) as agent:  # one policy load, one set of actors per cell
                episodes = measure_accuracy(agent, c, report, engine) if c.bench.accuracy and not served else []
                stream = measure_throughput(agent, c, streams[c.env.task])
                privileged = agent.privileged
                runtime = agent.stats()
                if engine is not None:
                    runtime["engine"] = engine.stats()
        finally:
            if engine is not None:
                engine.close()
        if served:  # after the in-process agent is gone: the server's agent gets the machine (and its GPUs)
            log = Path(run.bench.out) / f"serve-{i + 1}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            episodes = measure_accuracy_served(c, privileged, report, log)
        if progress:
            progress(f"{name}: throughput", total, total)
        rows.append(_row(cell, privileged, episodes, stream, runtime))
    with_relative_figures(rows)
    return rows


def run_bench(
    source: str | Path | None = None,
    overrides: Sequence[str] = (),
    sweep: Sweep | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Plan, validate and measure every cell of a benchmark; return the results document."""
    run, cells = plan_cells(source, overrides, sweep)
    results = run_cells(run, cells, progress)
    return results_document(run, results, sweep)


def results_document(run: AurasConfig, results: list[dict[str, Any]], sweep: Sweep | None = None) -> dict[str, Any]:
    """The results.json document around ``results`` rows."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": now_iso(),
        "command": sys.argv,
        "config": run.model_dump(mode="json"),
        "config_hash": config_hash(run),
        "sweep": {k: list(v) for k, v in (sweep or {}).items()},
        "policies": list(dict.fromkeys(r["policy"] for r in results)),
        "tasks": list(dict.fromkeys(r["task"] for r in results)),
        "modes": list(dict.fromkeys(r["mode"] for r in results)),
        "clock": run.bench.clock,
        "episodes": run.bench.episodes if run.bench.accuracy else 0,
        "versions": package_versions(),
        "machine": machine_info(),
        "results": results,
    }
