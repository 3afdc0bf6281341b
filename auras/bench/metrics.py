"""Metric formulas (names as in docs/bench.md). Pure functions over recorded times and outcomes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["interval_stats", "percentiles", "throughput_hz", "wilson_interval"]


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float | None]:
    """{"p50", "p90", "p99"} (or the percentiles ``qs``) of ``values``; None when there are none."""
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    found = np.percentile(np.asarray(values, dtype=np.float64), list(qs))
    return {f"p{q}": float(v) for q, v in zip(qs, found, strict=True)}


def interval_stats(times: Sequence[float]) -> dict[str, float | None]:
    """Stability of the action stream from output timestamps (seconds).

    interval_cv = std/mean of consecutive intervals; interval_spread = (max - min)/mean.
    """
    if len(times) < 3:
        return {"interval_cv": None, "interval_spread": None, "interval_ms_mean": None}
    intervals = np.diff(np.asarray(times, dtype=np.float64))
    mean = float(intervals.mean())
    return {
        "interval_cv": float(intervals.std() / mean) if mean > 0 else None,
        "interval_spread": float((intervals.max() - intervals.min()) / mean) if mean > 0 else None,
        "interval_ms_mean": mean * 1e3,
    }


def throughput_hz(times: Sequence[float]) -> float | None:
    """Actions per second over the span of the output timestamps (seconds)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success proportion (sound for small n and p near 0 or 1)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
