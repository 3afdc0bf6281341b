"""Benchmark: metric formulas, results.json schema, CLI."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from auras.bench.metrics import interval_stats, percentiles, throughput_hz, wilson_interval
from auras.cli import app


def test_wilson_interval_brackets_the_proportion():
    lo, hi = wilson_interval(10, 10)
    assert 0.69 < lo < 0.73 and hi == 1.0
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.18
    lo, hi = wilson_interval(10, 20)
    assert lo < 0.5 < hi
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_interval_stats_and_throughput():
    steady = np.arange(11) * 0.1
    stats = interval_stats(steady)
    assert stats["interval_cv"] == pytest.approx(0.0, abs=1e-9)
    assert stats["interval_spread"] == pytest.approx(0.0, abs=1e-9)
    assert throughput_hz(steady) == pytest.approx(10.0)
    jittery = [0.0, 0.1, 0.3, 0.4, 0.6]
    assert interval_stats(jittery)["interval_spread"] == pytest.approx((0.2 - 0.1) / 0.15)
    assert interval_stats([0.0])["interval_cv"] is None and throughput_hz([1.0]) is None


def test_percentiles():
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}
    p = percentiles(list(range(101)))
    assert (p["p50"], p["p90"], p["p99"]) == (50.0, 90.0, 99.0)


def _schema() -> dict:
    return json.loads(resources.files("auras.bench").joinpath("results.schema.json").read_text())


@pytest.mark.mujoco
def test_bench_cli_writes_results_that_match_the_schema(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--env",
            "mujoco",
            "-c",
            "quick",
            "--episodes",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "reach-v3" in result.output and "100% (2/2)" in result.output
    document = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(document, _schema())
    row = document["results"][0]
    assert row["privileged"] is True and row["mode"] == "sequential"
    metrics = row["metrics"]
    assert metrics["success_rate"] == 1.0 and metrics["speedup"] == 1.0
    assert metrics["throughput_hz"] > 0 and metrics["stream_actions"] == 50
    assert metrics["staleness_frames"]["max"] == 0  # frame clock: the env waits for every action
    assert [e["seed"] for e in row["episodes"]] == [100_000, 100_001]


def test_schema_rejects_a_document_missing_metrics():
    with pytest.raises(jsonschema.ValidationError, match="'results' is a required property"):
        jsonschema.validate({"schema_version": 1}, _schema() | {"required": ["results"]})


def test_bench_rejects_unknown_task_before_running(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--task", "psuh-v3", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "did you mean 'push-v3'" in result.output
    assert not (tmp_path / "results.json").exists()


def test_config_show_and_list():
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "--set", "bench.episodes=3"])
    assert shown.exit_code == 0 and "episodes: 3" in shown.output and "# config hash:" in shown.output
    bad = runner.invoke(app, ["config", "show", "--set", "bench.episodes=-1"])
    assert bad.exit_code == 2 and "bench.episodes: got -1; Input should be greater than or equal to 1" in bad.output
    listed = runner.invoke(app, ["config", "list"])
    assert "default" in listed.output.split()


def test_envs_lists_tasks():
    out = CliRunner().invoke(app, ["envs"]).output
    assert "push-v3" in out and "track-target-v0" in out
