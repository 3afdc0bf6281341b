"""Paced frames: ticks on a fixed grid, re-anchored after an overrun, never a catch-up burst."""

from __future__ import annotations

import itertools

import pytest

from auras.pipeline.pacing import FramePacer


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
