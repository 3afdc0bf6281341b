"""Paced frames: frames start on a fixed period instead of back to back, so actions come out at even
intervals (the period hides the jitter of frames that finish early).

    pacer = FramePacer(0.04)          # a frame every 40 ms
    pacer.wait()                      # returns at the next tick (at once if the last frame overran)
    action = agent.step(newest_observation())

Ticks lie on a grid ``first + k * period``. A frame that overruns its tick starts the next one at once and
re-anchors the grid there: a late frame is never followed by a burst of catch-up frames. A period of 0
means unpaced (``wait`` returns at once). The observation a paced frame admits should be taken after
``wait`` returns, so waiting never makes it older.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["FramePacer"]


class FramePacer:
    def __init__(
        self,
        period_s: float,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not period_s >= 0.0:
            raise ValueError(f"FramePacer: expected a period >= 0 seconds, got {period_s!r}")
        self.period_s = float(period_s)
        self._now, self._sleep = now, sleep
        self._next: float | None = None
        self.waited_s = 0.0  # total time spent waiting for ticks
        self.overruns = 0  # frames that started late (their tick had passed)

    def wait(self) -> float:
        """Block until the next tick; returns the seconds waited. The first call after construction or
        ``reset`` returns at once and starts the grid."""
        now = self._now()
        if self.period_s == 0.0:
            return 0.0
        if self._next is None:
            self._next = now + self.period_s
            return 0.0
        left = self._next - now
        if left > 0:
            self._sleep(left)
            self.waited_s += left
            self._next += self.period_s
            return left
        self.overruns += 1
        self._next = now + self.period_s  # re-anchor: no catch-up burst after a late frame
        return 0.0

    def reset(self) -> None:
        """Forget the grid (a new episode or a new period starts fresh)."""
        self._next = None
