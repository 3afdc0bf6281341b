"""Benchmark: metric formulas, results.json schema, CLI."""

from __future__ import annotations

import json
import time
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
    assert "host figure: one sequential expert request takes" in result.output
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


@pytest.mark.mujoco
def test_virtual_clock_lets_the_robot_keep_moving_while_a_slow_agent_computes():
    """On a fake clock each step of the agent takes exactly 40 ms. Under the virtual clock an action lands
    ceil(40 / 12.5) = 4 control steps after its frame (the robot keeps running the old chunk meanwhile), so
    there is one action per 4 steps, each exactly 4 steps stale; under the frame clock the env waits, one
    step per action."""
    from auras import AurasAgent, load_config
    from auras.bench.episodes import run_episode
    from auras.clock import FakeClock
    from auras.envs import make_env
    from auras.pipeline import build_executor
    from tests.fakes import HookedExecutor

    clock = FakeClock()
    config = load_config(overrides=["env.task=reach-v3"])
    executor = HookedExecutor(build_executor(config), before=lambda obs: clock.sleep(0.04))
    with AurasAgent(config, executor=executor, clock=clock) as agent, make_env("reach-v3", horizon=40) as env:
        frame = run_episode(agent, env, seed=100_000, clock="frame")
        virtual = run_episode(agent, env, seed=100_000, clock="virtual")
    assert len(frame.latency_ms) == frame.steps  # one action per step
    # robot time: the env waits for the agent, so an action's newest input is its frames x 12.5 ms old,
    # whatever the agent's 40 ms of compute (a wall-clock age would make the frame clock's results timing's)
    assert frame.staleness_ms == [f * 12.5 for f in frame.staleness_frames] and max(frame.staleness_ms) < 40
    assert virtual.steps == 40 and len(virtual.latency_ms) == 10  # exactly one action per 4 steps
    assert set(virtual.staleness_frames) == {4}  # each lands exactly 4 steps after its frame
    with pytest.raises(ValueError, match="clock: expected 'frame', 'virtual' or 'realtime', got 'sundial'"):
        run_episode(agent, env, seed=0, clock="sundial")


@pytest.mark.mujoco
def test_realtime_clock_keeps_the_robot_moving_at_its_control_rate_while_the_agent_computes():
    """The env steps on its own wall-clock schedule whatever the agent does. Here the agent "computes"
    until the robot has taken LAG more control steps past the frame it was given, so the test does not
    depend on how fast this machine is: every action lands at least LAG steps after its frame, and at
    most one lands per LAG - 1 steps (the agent then takes the newest frame, at least LAG - 1 past the old).

    The bug it catches: a realtime clock that waits for the agent (the frame clock's behaviour) never
    takes those steps, so the agent's wait runs out (``starved``) and each action lands on its own frame
    (staleness 0), one per step."""
    import threading

    from auras import AurasAgent, load_config
    from auras.bench.episodes import run_episode
    from auras.envs import make_env
    from auras.pipeline import build_executor
    from tests.fakes import HookedExecutor

    lag, horizon = 4, 48
    config = load_config(overrides=["env.task=reach-v3"])
    stepped = threading.Condition()
    env_steps, starved = [0], []

    def slow(obs) -> None:  # returns once the robot is lag steps on (or the episode is over)
        target = min(obs.step_id + lag, horizon)
        with stepped:  # 60 s only bounds a hang: a robot that waits for this agent never gets there
            if not starved and not stepped.wait_for(lambda: env_steps[0] >= target, timeout=60):
                starved.append(obs.step_id)

    executor = HookedExecutor(build_executor(config), before=slow)
    with AurasAgent(config, executor=executor) as agent, \
            make_env("reach-v3", horizon=horizon, terminate_on_success=False) as env:
        inner_env_step = env.advance

        def counting_env_step(values):
            out = inner_env_step(values)
            with stepped:
                env_steps[0] += 1
                stepped.notify_all()
            return out

        env.advance = counting_env_step
        start = time.perf_counter()
        record = run_episode(agent, env, seed=100_000, clock="realtime")
        wall = time.perf_counter() - start
    assert not starved, f"the robot stopped stepping while the agent computed on frame {starved[0]}"
    assert record.steps == horizon
    assert wall >= horizon * env.control_dt * 0.95  # never faster than real time
    assert 1 <= len(record.latency_ms) <= horizon // (lag - 1)  # about one action per lag steps, not one per step
    assert min(record.staleness_frames) >= lag  # applied lag or more steps after the frame it was computed on
    assert record.overruns >= 0 and record.late_ms_max >= 0.0


@pytest.mark.mujoco
def test_realtime_clock_surfaces_an_agent_error_instead_of_running_on_blind():
    from auras import AurasAgent, load_config
    from auras.bench.episodes import run_episode
    from auras.envs import make_env
    from auras.policies.base import Policy
    from tests.fakes import FakeGeneration, FakePerception

    class Broken(FakeGeneration):
        def generate(self, context):
            raise RuntimeError("generation actor died")

    broken = Policy("broken", FakePerception(image_size=84), Broken())
    config = load_config(overrides=["env.task=reach-v3", "staleness.strategy=none"])
    with (
        AurasAgent(config, policy=broken) as agent,
        make_env("reach-v3", horizon=40) as env,
        pytest.raises(RuntimeError, match="generation actor died"),
    ):
        run_episode(agent, env, seed=100_000, clock="realtime")


def test_a_paced_agent_streams_on_its_period():
    """The bench's throughput stream with frame_period_ms 30, on a fake clock where a frame takes 2 ms:
    outputs come exactly 30 ms apart (unpaced: 2 ms apart)."""
    from auras import AurasAgent, load_config
    from auras.bench.episodes import run_stream
    from auras.clock import FakeClock
    from auras.policies.base import Policy
    from auras.policies.delay import with_injected_delay
    from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation

    for period_ms, expected_s in ((30, 0.030), (0, 0.002)):
        clock = FakeClock()
        policy = with_injected_delay(Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12)), 0.0, 6.0,
                                     sleep=clock.sleep)  # 6 ms per request over 3 frames: 2 ms per frame
        config = load_config(overrides=["pipeline.mode=auras", "pipeline.pp_generation=3",
                                         f"pipeline.frame_period_ms={period_ms}"])
        with AurasAgent(config, policy=policy, clock=clock) as agent:
            record = run_stream(agent, [fake_observation(i) for i in range(12)], warmup=4)
        intervals = np.diff(record.output_times)
        assert len(intervals) == 7 and intervals == pytest.approx([expected_s] * 7, abs=1e-9), (period_ms, intervals)


@pytest.mark.mujoco
def test_under_the_virtual_clock_a_paced_frame_takes_its_period():
    """frame_period_ms 50 with a fast agent: each action lands after ceil(50 / 12.5) = 4 control steps."""
    from auras import AurasAgent, load_config
    from auras.bench.episodes import run_episode
    from auras.envs import make_env

    config = load_config(overrides=["env.task=reach-v3", "pipeline.frame_period_ms=50"])
    with AurasAgent(config) as agent, make_env("reach-v3", horizon=40) as env:
        virtual = run_episode(agent, env, seed=100_000, clock="virtual")
    assert len(virtual.latency_ms) == 10 and min(virtual.staleness_frames) >= 4


@pytest.mark.mujoco
def test_episodes_run_through_the_staleness_strategy():
    """tiny-dp (chunks of 16, 8 executed): chunk_blend with a 0.25 threshold asks only when 4 rows or
    fewer are pending, every 12 steps instead of every 8 (frame clock); rtc, roll_forward and
    chunk_blend all run real episodes under the virtual clock, and the bench labels rows by strategy."""
    from auras import AurasAgent, load_config
    from auras.bench.episodes import run_episode
    from auras.bench.runner import _label, _settings
    from auras.envs import make_env

    requests = {}
    for strategy in ("none", "chunk_blend", "rtc", "roll_forward"):
        overrides = ["policy.type=tiny-dp", "pipeline.mode=sequential", "staleness.queue_threshold=0.25"]
        config = load_config(overrides=[*overrides, f"staleness.strategy={strategy}"])
        with AurasAgent(config) as agent, make_env("push-v3", horizon=48) as env:
            requests[strategy] = len(run_episode(agent, env, seed=100_000, clock="frame").latency_ms)
            assert run_episode(agent, env, seed=100_001, clock="virtual").steps == 48
        assert _label(config, ()) == ("sequential" if strategy == "none" else f"sequential {strategy}")
        assert _settings(config)["staleness_strategy"] == strategy
    assert requests["none"] == 6 and requests["chunk_blend"] == 4, requests
