"""Small, complete results documents (schema version 2) for the tests of report, compare and plots."""

from __future__ import annotations

import random
from typing import Any

CONTEXT = {"env": {}, "policy": {}, "pipeline": {}, "bench": {}}


def results_cell(
    mode: str,
    *,
    label: str | None = None,
    pp: tuple[int, int] = (1, 1),
    scale_g: float = 1.0,
    delay_g: float = 0.0,
    hz: float | None = 40.0,
    success: float | None = 0.8,
    policy: str = "tiny-dp",
    task: str = "button-press-v3",
    samples: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """One results row; ``hz`` / ``success`` None give a row with those metrics missing, ``samples`` False
    one without raw samples."""
    rng = random.Random(seed)
    episodes = 10 if success is not None else 0
    mean = 1000.0 / hz if hz else 25.0
    return {
        "task": task,
        "policy": policy,
        "privileged": False,
        "mode": mode,
        "backend": "local",
        "clock": "virtual",
        "label": label or f"{mode} {pp[0]}x{pp[1]} s{scale_g} d{delay_g}",
        "point": {},
        "settings": {
            "pp_perception": pp[0], "pp_generation": pp[1], "fetch_offset": 0, "alpha": 0.0, "emit": "own",
            "workers": 2, "delay_ms_perception": 0.0, "delay_ms_generation": delay_g, "scale_perception": 1.0,
            "scale_generation": scale_g,
        },
        "config_hash": "0123456789ab",
        "config": CONTEXT,
        "metrics": {
            "episodes": episodes,
            "successes": None if success is None else round(success * episodes),
            "success_rate": success,
            "success_ci95": None if success is None else [max(0.0, success - 0.2), min(1.0, success + 0.1)],
            "steps_to_success": None,
            "throughput_hz": hz,
            "speedup": None,
            "relative_accuracy": None,
            "latency_ms": {"p50": 10.0, "p90": 12.0, "p99": None},
            "interval_cv": 0.05 if hz else None,
            "interval_spread": None,
            "interval_ms_mean": mean,
            "staleness_ms": {"p50": None, "p90": None, "p99": None},
            "staleness_frames": {"mean": 2.0, "max": 6},
            "stage_ms_p50": {"perception": 1.0, "generation": None},
            "bound_hz": None,
            "bound_fraction": None,
            "startup_ms": 0.0,
            "rss_mb": 100.0,
            "stream_actions": 50,
            "overruns": 0,
            "late_ms_max": 0.0,
        },
        "samples": {
            "intervals_ms": [rng.gauss(mean, 1.0) for _ in range(50)] if samples else [],
            "latency_ms": [rng.gauss(2 * mean, 3.0) for _ in range(50)] if samples else [],
        },
        "episodes": [],
    }


def results_document(cells: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
    """A whole results.json around ``cells``; ``context`` replaces top-level fields."""
    document = {
        "schema_version": 2,
        "created": "2026-01-01T00:00:00+00:00",
        "command": ["auras", "bench"],
        "config": CONTEXT,
        "config_hash": "0123456789ab",
        "tasks": list(dict.fromkeys(c["task"] for c in cells)) or ["button-press-v3"],
        "clock": "virtual",
        "episodes": 10,
        "versions": {"auras": "0.1.0", "torch": "2.4.0"},
        "machine": {"platform": "Linux", "python": "3.11", "cpu_model": "X", "cpu_count": 16, "memory_gb": 8.0},
        "results": cells,
        "modes": list(dict.fromkeys(c["mode"] for c in cells)) or ["sequential"],
        "policies": list(dict.fromkeys(c["policy"] for c in cells)) or ["tiny-dp"],
        "sweep": {},
    }
    document.update(context)
    return document
