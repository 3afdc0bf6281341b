"""`auras tune`: the Auras paper's hierarchical search for a policy's pipeline settings.

1. Grid over (pp_perception, pp_generation) with pp_perception + pp_generation <= L_max (and each
   within what the policy can split: its natural perception stages, its generation iterations).
2. Throughput first, for every point (cheap: a replayed observation stream, no rendering).
3. Keep the points that reach the target rate; evaluate accuracy (closed-loop episodes) only on the
   fastest ``max_accuracy`` of them, and on sequential as the reference.
4. For a diffusion policy, tune alpha (the step skew) on the most accurate point. A skew puts more
   denoising steps into the later stages, which read fresher contexts, but a frame's batched call
   runs as many iterations as its heaviest stage, so it costs rate: each alpha is reported with the
   accuracy it bought and the rate it paid against alpha 0 (``alpha_trade``).
5. The Pareto set over (throughput, success); the chosen point (most successful among those that
   meet the target and cost at most ``max_rate_cost`` of the fastest evaluated point's rate, then
   fastest) is written as a YAML preset that `auras bench -c FILE` takes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auras.agent import AurasAgent
from auras.bench.episodes import EpisodeRecord
from auras.bench.metrics import throughput_hz, wilson_interval
from auras.bench.runner import measure_accuracy, measure_throughput, policy_preset, record_stream
from auras.config import AurasConfig, config_hash, load_config
from auras.errors import ConfigError
from auras.generation.families import driver_for

__all__ = ["TunePoint", "grid", "pareto", "tune", "write_preset"]

Log = Callable[[str], None]


@dataclass
class TunePoint:
    """One candidate setting and what was measured for it (success None: not evaluated)."""

    mode: str
    pp_perception: int
    pp_generation: int
    alpha: float = 0.0
    fetch_offset: int = 0
    throughput_hz: float | None = None
    successes: int | None = None
    episodes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def degree(self) -> int:
        return self.pp_perception + self.pp_generation

    @property
    def success_rate(self) -> float | None:
        return None if self.successes is None or not self.episodes else self.successes / self.episodes

    def overrides(self) -> list[str]:
        return [f"pipeline.mode={self.mode}", f"pipeline.pp_perception={self.pp_perception}",
                f"pipeline.pp_generation={self.pp_generation}", f"pipeline.alpha={self.alpha}",
                f"pipeline.fetch_offset={self.fetch_offset}"]

    def as_dict(self) -> dict[str, Any]:
        lo_hi = wilson_interval(self.successes, self.episodes) if self.successes is not None else None
        return {"mode": self.mode, "pp_perception": self.pp_perception, "pp_generation": self.pp_generation,
                "alpha": self.alpha, "fetch_offset": self.fetch_offset, "throughput_hz": self.throughput_hz,
                "success_rate": self.success_rate, "success_ci95": lo_hi, "episodes": self.episodes}


def _limits(config: AurasConfig) -> tuple[int, int, bool]:
    """(most perception stages, most generation stages) the policy can be cut into, and whether its
    generation family has a step skew (alpha) to tune; asked of the policy's own workers."""
    with AurasAgent(config.model_copy(update={"pipeline": config.pipeline.model_copy(update={"mode": "sequential"})})
                    ) as agent:
        spec = agent.policy_spec
    driver = driver_for(spec.family)
    if spec.generation_iterations < 2 and spec.perception_stages < 2:
        raise ConfigError(
            f"auras tune: policy {config.policy.type!r} ({spec.family} generation, one perception stage) has "
            "nothing to pipeline"
        )
    return spec.perception_stages, spec.generation_iterations, driver.tunes_alpha


def grid(max_perception: int, max_generation: int, l_max: int) -> list[tuple[int, int]]:
    """Every (pp_perception, pp_generation) with both >= 1, within the policy's limits, and sum <= l_max."""
    pairs = itertools.product(range(1, max_perception + 1), range(1, max_generation + 1))
    return [(p, g) for p, g in pairs if p + g <= l_max]


def pareto(points: Sequence[TunePoint]) -> list[TunePoint]:
    """Evaluated points not dominated in (throughput, success): none is at least as fast and as
    accurate and strictly better in one. Sorted by throughput."""
    done = [p for p in points if p.success_rate is not None and p.throughput_hz is not None]

    def dominated(p: TunePoint) -> bool:
        return any(
            q.throughput_hz >= p.throughput_hz
            and q.success_rate >= p.success_rate
            and (q.throughput_hz > p.throughput_hz or q.success_rate > p.success_rate)
            for q in done
        )

    return sorted((p for p in done if not dominated(p)), key=lambda p: p.throughput_hz)


def _measure_throughput(config: AurasConfig, stream: list) -> float | None:
    with AurasAgent(config) as agent:
        return throughput_hz(measure_throughput(agent, config, stream).output_times)


def _measure_success(config: AurasConfig) -> tuple[int, int]:
    with AurasAgent(config) as agent:
        episodes: list[EpisodeRecord] = measure_accuracy(agent, config)
    return sum(e.success for e in episodes), len(episodes)


def tune(
    policy: str,
    target_hz: float,
    *,
    task: str = "button-press-v3",
    l_max: int = 8,
    episodes: int = 10,
    max_accuracy: int = 4,
    alphas: Sequence[float] = (0.5, 1.0, 2.0),
    fetch_offsets: Sequence[int] = (0,),
    max_rate_cost: float = 1.0,
    source: str | Path | None = None,
    overrides: Sequence[str] = (),
    log: Log = print,
) -> dict[str, Any]:
    """Run the search; return a document with every point, the Pareto set, the alpha trade and the
    chosen point. ``max_rate_cost``: the largest fraction of the fastest evaluated point's rate a more
    accurate point may give up (1: any)."""
    if not 0.0 <= max_rate_cost <= 1.0:
        raise ConfigError(f"--max-rate-cost: expected a fraction in [0, 1], got {max_rate_cost}")
    if l_max < 2:
        raise ConfigError(f"--l-max: expected >= 2 (one perception and one generation stage), got {l_max}")
    base = load_config(
        source, [*overrides, f"policy.type={policy}", f"env.task={task}", f"bench.episodes={episodes}"],
        base=policy_preset(policy),
    )
    if base.bench.served:
        raise ConfigError("bench.served: auras tune evaluates agents in its own process; measure a served "
                          "setting with `auras bench --served`")

    def config_for(point: TunePoint) -> AurasConfig:
        return load_config(base=base.model_dump(mode="json"), overrides=point.overrides())

    max_p, max_g, skewed = _limits(base)
    stream = record_stream(base, task, base.bench.stream_steps + base.bench.warmup_steps)
    sequential = TunePoint("sequential", 1, 1)
    sequential.throughput_hz = _measure_throughput(config_for(sequential), stream)
    log(f"sequential: {sequential.throughput_hz:.1f} Hz")
    shapes = itertools.product(grid(max_p, max_g, l_max), fetch_offsets)
    candidates = [TunePoint("auras", p, g, fetch_offset=f) for (p, g), f in shapes]
    for i, point in enumerate(candidates):  # stage 1: throughput of every point
        point.throughput_hz = _measure_throughput(config_for(point), stream)
        log(f"[{i + 1}/{len(candidates)}] auras {point.pp_perception}x{point.pp_generation} "
            f"offset {point.fetch_offset}: {point.throughput_hz:.1f} Hz")
    fast = sorted((p for p in candidates if (p.throughput_hz or 0) >= target_hz), key=lambda p: -p.throughput_hz)
    if not fast:
        best = max(candidates, key=lambda p: p.throughput_hz or 0)
        log(f"no setting reaches {target_hz} Hz (fastest: {best.throughput_hz:.1f} Hz); evaluating the fastest")
        fast = [best]
    for point in [sequential, *fast[:max_accuracy]]:  # stage 2: accuracy only where throughput is met
        point.successes, point.episodes = _measure_success(config_for(point))
        log(f"accuracy {point.mode} {point.pp_perception}x{point.pp_generation}: {point.successes}/{point.episodes}")
    evaluated = [p for p in fast if p.success_rate is not None]
    best = max(evaluated, key=lambda p: (p.success_rate, p.throughput_hz))
    tuned_alpha: list[TunePoint] = []
    if skewed and best.pp_generation > 1:  # stage 3: alpha for families with a step skew (denoising)
        for alpha in alphas:
            point = TunePoint("auras", best.pp_perception, best.pp_generation, alpha, best.fetch_offset)
            point.throughput_hz = _measure_throughput(config_for(point), stream)
            if (point.throughput_hz or 0) >= target_hz:
                point.successes, point.episodes = _measure_success(config_for(point))
            evaluated_text = (f"success {point.successes}/{point.episodes}" if point.successes is not None
                              else f"below {target_hz:g} Hz, success not evaluated")
            log(f"alpha {alpha}: {point.throughput_hz:.1f} Hz, {evaluated_text}")
            tuned_alpha.append(point)
    trade = [
        {"alpha": p.alpha, "success_gain": p.success_rate - best.success_rate, "rate_paid_hz": best.throughput_hz
         - p.throughput_hz, "rate_paid": 1.0 - p.throughput_hz / best.throughput_hz}
        for p in tuned_alpha if p.success_rate is not None and best.throughput_hz
    ]
    for t in trade:
        log(f"alpha {t['alpha']:g} against 0: {t['success_gain']:+.0%} success for {t['rate_paid_hz']:.1f} Hz "
            f"({t['rate_paid']:.0%} of the rate)")
    everything = [sequential, *candidates, *tuned_alpha]
    meeting = [p for p in everything if p.mode == "auras" and p.success_rate is not None]
    meeting = [p for p in meeting if p.throughput_hz >= target_hz] or meeting
    fastest = max(p.throughput_hz for p in meeting)
    affordable = [p for p in meeting if p.throughput_hz >= (1.0 - max_rate_cost) * fastest]
    chosen = max(affordable, key=lambda p: (p.success_rate, p.throughput_hz))
    return {
        "policy": policy,
        "task": task,
        "target_hz": target_hz,
        "l_max": l_max,
        "episodes": episodes,
        "config_hash": config_hash(base),
        "sequential": sequential.as_dict(),
        "points": [p.as_dict() for p in everything],
        "pareto": [p.as_dict() for p in pareto(everything)],
        "alpha_trade": trade,
        "max_rate_cost": max_rate_cost,
        "chosen": chosen.as_dict(),
        "meets_target": bool((chosen.throughput_hz or 0) >= target_hz),
    }


def write_preset(result: dict[str, Any], path: str | Path) -> Path:
    """The chosen point as a YAML preset (with the measured figures as comments)."""
    c, s = result["chosen"], result["sequential"]
    seq_rate = f"{s['success_rate']:.0%}" if s["success_rate"] is not None else "-"
    rate = f"{c['success_rate']:.0%}" if c["success_rate"] is not None else "-"
    header = (
        f"# written by `auras tune --policy {result['policy']} --target-hz {result['target_hz']}` "
        f"on {result['task']} (L_max {result['l_max']}, {result['episodes']} episodes per evaluation)\n"
        f"# measured: {c['throughput_hz']:.1f} Hz, success {rate}; sequential {s['throughput_hz']:.1f} Hz, "
        f"success {seq_rate}\n"
    )
    body = {
        "policy": {"type": result["policy"]},
        "env": {"task": result["task"]},
        "bench": {"policies": [result["policy"]], "tasks": [result["task"]]},
        "pipeline": {key: c[key] for key in ("mode", "pp_perception", "pp_generation", "fetch_offset", "alpha")},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return path
