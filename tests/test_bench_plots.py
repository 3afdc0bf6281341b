"""write_plots on synthetic results documents: which figures appear, that they are PNGs, and None-safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from auras.bench.plots import write_plots
from tests.results_documents import results_cell, results_document

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


_row = results_cell


def _document(rows):
    return results_document(rows)


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
    paths = write_plots(_document([row]), tmp_path)
    assert [p.name for p in paths] == ["throughput_success.png"]
    _check_pngs(paths)


def test_write_plots_no_sweeps_and_empty(tmp_path: Path):
    rows = [_row("sequential", hz=20.0), _row("auras", pp=(1, 5), hz=45.0)]
    names = [p.name for p in write_plots(_document(rows), tmp_path)]
    assert names == ["throughput_success.png", "intervals.png", "latency_cdf.png"]
    assert write_plots(_document([]), tmp_path / "empty") == []


def test_the_bars_and_lines_drawn_are_the_documents_figures(tmp_path: Path):
    """What each figure draws, read back from matplotlib: the throughput bars are the cells' throughput_hz
    (0 for a missing one), the success bars their success rates, and each latency curve a
    cell's own samples, sorted (the latency CDF)."""
    rows = [_row("sequential", hz=20.0, success=0.9, seed=1), _row("auras", pp=(1, 5), hz=45.0, success=0.5, seed=2),
            _row("decoupled", hz=None, success=None, samples=False)]
    drawn = {}

    def inspect(name, figure):
        axes = [ax for ax in figure.axes if ax.get_visible()]
        drawn[name] = [([p.get_height() for p in ax.patches if hasattr(p, "get_height")],
                        [list(line.get_xdata()) for line in ax.get_lines()]) for ax in axes]

    write_plots(_document(rows), tmp_path, inspect=inspect)
    (throughput, _), (success, _) = drawn["throughput_success.png"][:2]
    assert throughput == pytest.approx([20.0, 45.0, 0.0])
    assert success[:3] == pytest.approx([0.9, 0.5, 0.0])
    (_, curves), = drawn["latency_cdf.png"]  # one curve per cell with samples, x = its sorted latencies
    assert curves == [sorted(r["samples"]["latency_ms"]) for r in rows if r["samples"]["latency_ms"]]
