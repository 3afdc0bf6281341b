"""Paced frames: ticks on a fixed grid, re-anchored after an overrun, never a catch-up burst."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from auras.pipeline.pacing import FramePacer, make_pacer


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.t += seconds


def test_frames_start_on_the_period_whatever_each_frame_took():
    clock = FakeClock()
    pacer = FramePacer(0.05, clock.now, clock.sleep)
    starts = []
    for work in (0.01, 0.03, 0.045, 0.0, 0.02):
        pacer.wait()
        starts.append(clock.t)
        clock.t += work  # the frame runs
    assert [round(b - a, 9) for a, b in itertools.pairwise(starts)] == [0.05] * 4
    assert pacer.overruns == 0 and pacer.waited_s == pytest.approx(4 * 0.05 - (0.01 + 0.03 + 0.045 + 0.0))


def test_a_late_frame_starts_the_next_at_once_and_the_grid_moves_with_it():
    clock = FakeClock()
    pacer = FramePacer(0.05, clock.now, clock.sleep)
    pacer.wait()
    clock.t += 0.12  # overran by more than two periods
    assert pacer.wait() == 0.0 and pacer.overruns == 1
    late_start = clock.t
    clock.t += 0.01
    pacer.wait()
    assert clock.t == pytest.approx(late_start + 0.05)  # one period after the late frame, not three quick ones


@pytest.mark.parametrize("on_tick", [False, True])
def test_on_tick_hands_actions_out_exactly_a_period_apart_whatever_each_frame_took(on_tick):
    clock = FakeClock()
    pacer = FramePacer(0.05, clock.now, clock.sleep, on_tick=on_tick)
    out = []
    for work in (0.01, 0.03, 0.045, 0.002, 0.02, 0.04):
        pacer.wait()
        clock.t += work  # the frame runs
        pacer.release()
        out.append(clock.t)  # the action goes out
    intervals = [round(b - a, 9) for a, b in itertools.pairwise(out)]
    if on_tick:  # held to the tick: no jitter left, and no frame lost its slot
        assert intervals == [0.05] * 5 and pacer.overruns == 0
        assert pacer.held_s == pytest.approx(6 * 0.05 - (0.01 + 0.03 + 0.045 + 0.002 + 0.02 + 0.04))
    else:  # paced starts alone: each frame's compute jitter shows in the intervals
        assert len(set(intervals)) > 1 and pacer.held_s == 0.0


def test_an_overrun_frame_is_not_held_and_overshoot_below_the_tolerance_keeps_the_grid():
    clock = FakeClock()
    pacer = FramePacer(0.05, clock.now, clock.sleep, on_tick=True)
    pacer.wait()
    clock.t += 0.07  # overran its period
    assert pacer.release() == 0.0  # handed out at once
    pacer.wait()
    assert pacer.overruns == 1
    grid = clock.t + 0.05
    clock.t += 0.0502  # late by 0.2 ms: sleep overshoot, not an overrun
    pacer.wait()
    clock.t += 0.01
    pacer.release()
    assert pacer.overruns == 1 and clock.t == pytest.approx(grid + 0.05)  # the grid did not move


def test_period_zero_is_unpaced_and_reset_restarts_the_grid():
    clock = FakeClock()
    unpaced = FramePacer(0.0, clock.now, clock.sleep)
    assert [unpaced.wait() for _ in range(3)] == [0.0, 0.0, 0.0] and clock.t == 100.0
    pacer = FramePacer(0.05, clock.now, clock.sleep)
    pacer.wait()
    pacer.reset()
    assert pacer.wait() == 0.0 and clock.t == 100.0  # the first frame after reset starts at once


@pytest.mark.parametrize("period", [-0.1, float("nan")])
def test_a_negative_or_nan_period_is_refused(period):
    with pytest.raises(ValueError, match="period >= 0"):
        FramePacer(period)


def test_an_adaptive_pacer_sets_its_period_a_little_above_the_slow_frames_and_follows_them():
    clock = FakeClock()
    pacer = make_pacer("auto", now=clock.now, sleep=clock.sleep)
    rng = np.random.default_rng(0)
    for _ in range(9):
        pacer.record(0.010)
    assert pacer.period_s == 0.0  # unpaced until it has measured enough frames
    for work in rng.uniform(0.008, 0.012, 60):
        pacer.wait()
        clock.t += work
        pacer.record(work)
    assert 1.05 * 0.0115 <= pacer.period_s <= 1.05 * 0.012  # 1.05 x the p90 of U(8, 12) ms
    for _ in range(50):  # generation got 3x slower (a bigger model, a second robot)
        pacer.wait()
        clock.t += 0.030
        pacer.record(0.030)
    assert pacer.period_s == pytest.approx(1.05 * 0.030)


def test_pipeline_frame_period_ms_takes_milliseconds_or_auto_and_names_what_it_expected():
    from auras import load_config
    from auras.errors import ConfigError

    assert load_config(overrides=["pipeline.frame_period_ms=auto"]).pipeline.frame_period_ms == "auto"
    assert make_pacer(load_config(overrides=["pipeline.frame_period_ms=25"]).pipeline.frame_period_ms).period_s == 0.025
    with pytest.raises(ConfigError, match=r"expected milliseconds in \[0, 60000\] or 'auto', got 'fast'"):
        load_config(overrides=["pipeline.frame_period_ms=fast"])


def test_the_pacing_settings_reach_the_pacer_and_the_adaptive_controller():
    """pacing_margin and pacing_quantile set the auto period (pacer_for) and the adaptive controller's
    rate model and period: margin 1.0 x the median of frames of 10 and 20 ms is 15 ms, where the
    defaults (1.05 x p90) give 19.95 ms."""
    from auras import AurasAgent, load_config
    from auras.pipeline.pacing import pacer_for
    from auras.policies.base import Policy
    from tests.fakes import FakeDiffusion, FakeStagedPerception

    settings = ["pipeline.frame_period_ms=auto", "pipeline.pacing_margin=1.0", "pipeline.pacing_quantile=0.5"]
    policy = Policy("fake-dp", FakeStagedPerception(2), FakeDiffusion(12))
    with AurasAgent(load_config(None, ["pipeline.mode=auras", *settings]), policy=policy) as agent:
        pacer = pacer_for(agent)
    for frame in [0.010, 0.020] * 5:
        pacer.record(frame)
    assert pacer.period_s == pytest.approx(0.015)
    adaptive = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.target_hz=100", *settings[1:]]
    with AurasAgent(load_config(None, adaptive), policy=policy) as agent:
        controller = agent.executor.controller
    for frame in [0.010, 0.020] * 5:
        controller.observe(frame, 1.0)
    assert controller.period_s == pytest.approx(0.015)
    with pytest.raises(Exception, match="pacing_margin"):
        load_config(overrides=["pipeline.pacing_margin=0.9"])
