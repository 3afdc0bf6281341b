"""write_plots on synthetic results documents: which figures appear, that they are PNGs, and None-safety."""

from __future__ import annotations

import random
from pathlib import Path

from auras.bench.plots import write_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(
    mode,
    *,
    pp=(1, 1),
    scale_g=1.0,
    delay_g=0.0,
    hz=40.0,
    success=0.8,
    policy="tiny-dp",
    task="button-press-v3",
    samples=True,
    seed=0,
):
    """One results row; hz/success None give a row with missing metrics."""
    rng = random.Random(seed)
    episodes = 10 if success is not None else 0
    settings = {
        "pp_perception": pp[0],
        "pp_generation": pp[1],
        "fetch_offset": 0,
        "alpha": 0.0,
        "emit": "own",
        "workers": 2,
        "delay_ms_perception": 0.0,
        "delay_ms_generation": delay_g,
        "scale_perception": 1.0,
        "scale_generation": scale_g,
    }
    mean = 1000.0 / hz if hz else 25.0
    return {
        "task": task,
        "policy": policy,
        "privileged": False,
        "mode": mode,
        "backend": "local",
        "clock": "virtual",
        "label": f"{mode} {pp[0]}x{pp[1]} s{scale_g} d{delay_g}",
        "settings": settings,
        "metrics": {
            "episodes": episodes,
            "successes": None if success is None else round(success * episodes),
            "success_rate": success,
            "success_ci95": None if success is None else [max(0.0, success - 0.2), min(1.0, success + 0.1)],
            "steps_to_success": None,
            "throughput_hz": hz,
            "speedup": None,
            "relative_accuracy": None,
            "latency_ms": {"p50": None, "p90": None, "p99": None},
            "interval_cv": 0.05 if hz else None,
            "interval_spread": None,
            "interval_ms_mean": mean,
            "staleness_ms": {"p50": None, "p90": None, "p99": None},
            "staleness_frames": {"mean": None, "max": None},
            "stage_ms_p50": {"perception": 1.0, "generation": None},
            "bound_hz": None,
            "bound_fraction": None,
            "startup_ms": None,
            "rss_mb": None,
            "stream_actions": 50,
        },
        "samples": {
            "intervals_ms": [rng.gauss(mean, 1.0) for _ in range(50)] if samples else [],
            "latency_ms": [rng.gauss(2 * mean, 3.0) for _ in range(50)] if samples else [],
        },
        "episodes": [],
    }


def _document(rows):
    return {"schema_version": 1, "clock": "virtual", "episodes": 10, "results": rows}


def _check_pngs(paths):
    for path in paths:
        assert path.is_file()
        data = path.read_bytes()
        assert len(data) > 8
        assert data[:8] == PNG_SIGNATURE


def test_write_plots_full_document(tmp_path: Path):
    rows = [_row("sequential", hz=20.0, success=0.9)]
    for L, hz in ((2, 35.0), (4, 45.0), (6, 50.0)):  # degree sweep: pipeline and auras at L = 2, 4, 6
        rows.append(_row("pipeline", pp=(1, L - 1), hz=hz, success=0.9 - 0.1 * L / 2, seed=L))
        rows.append(_row("auras", pp=(1, L - 1), hz=hz + 2, success=0.88, seed=L + 10))
    rows.append(_row("auras", pp=(2, 2), hz=48.0, success=None))  # grid: pp_perception varies too
    rows.append(_row("auras", pp=(2, 4), hz=52.0, success=None, samples=False))
    for scale in (2.0, 4.0):  # scale sweep (paired with sequential at the same scale)
        rows.append(_row("sequential", scale_g=scale, hz=20.0 / scale, success=None))
        rows.append(_row("auras", pp=(1, 5), scale_g=scale, hz=50.0 / scale, success=None))
    for delay in (5.0, 10.0):  # delay sweep
        rows.append(_row("sequential", delay_g=delay, hz=15.0, success=None))
        rows.append(_row("auras", pp=(1, 5), delay_g=delay, hz=40.0, success=None))
    rows.append(_row("decoupled", hz=None, success=None, samples=False))  # all-None metrics
    rows.append(_row("sequential", hz=30.0, success=0.5, policy="tiny-vla"))  # a second (policy, task) group

    paths = write_plots(_document(rows), tmp_path / "plots")

    assert [p.name for p in paths] == [
        "throughput_success.png",
        "intervals.png",
        "latency_cdf.png",
        "degree_sweep.png",
        "scale_sweep.png",
        "delay_sweep.png",
        "grid.png",
    ]
    _check_pngs(paths)


def test_write_plots_single_row_with_none_metrics(tmp_path: Path):
    """One sequential row without throughput or samples: no error, and the bar chart (showing n/a) is written."""
    row = _row("sequential", hz=None, success=None, samples=False)
    row["samples"] = None
    row["settings"] = {}
    paths = write_plots(_document([row]), tmp_path)
    assert [p.name for p in paths] == ["throughput_success.png"]
    _check_pngs(paths)


def test_write_plots_no_sweeps_and_empty(tmp_path: Path):
    rows = [_row("sequential", hz=20.0), _row("auras", pp=(1, 5), hz=45.0)]
    names = [p.name for p in write_plots(_document(rows), tmp_path)]
    assert names == ["throughput_success.png", "intervals.png", "latency_cdf.png"]
    assert write_plots(_document([]), tmp_path / "empty") == []
