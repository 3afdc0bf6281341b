"""Paced frames: frames start on a fixed period instead of back to back, so actions come out at even
intervals (the period hides the jitter of frames that finish early).

    pacer = make_pacer(40.0)          # a frame every 40 ms; make_pacer("auto") picks the period itself
    pacer.wait()                      # returns at the next tick (at once if the last frame overran)
    start = time.monotonic()
    action = agent.step(newest_observation())
    pacer.record(time.monotonic() - start)   # what an adaptive pacer plans from
    pacer.release()                   # on_tick: hold the action until the next tick, then hand it out

Ticks lie on a grid ``first + k * period``. A frame that overruns its tick starts the next one at once and
re-anchors the grid there: a late frame is never followed by a burst of catch-up frames; a frame late by
less than the sleep's own precision (``TOLERANCE_S``) keeps the grid. A period of 0 means unpaced
(``wait`` returns at once). The observation a paced frame admits should be taken after ``wait``
returns, so waiting never makes it older.

Paced starts alone leave each frame's compute jitter in the output intervals. With ``on_tick``
(``pipeline.release: on_tick``) ``release`` holds each frame's action until the next tick, the moment
the next frame starts: actions come out exactly a period apart (frames that overrun excepted), each
held for the rest of its period (at most period - compute of added latency, no throughput).

Adaptive pacing (``"auto"``) takes each frame's compute time (``record``) and sets the period to
``margin`` (``pipeline.pacing_margin``) times the ``quantile`` (``pipeline.pacing_quantile``) of the
last ``window`` frames: a little above the slow frames, so nearly every frame fits its slot, and it
follows the frames when they get slower or faster (a second robot, a busier machine). Until
``warmup`` frames are measured it runs unpaced. A pacer with a ``source`` reads its period from it at
every tick (the adaptive controller's period, which follows the depth it picks and never goes below
its target rate's).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PACING_MARGIN", "FramePacer", "make_pacer", "pacer_for"]

PACING_MARGIN = 1.05  # auto, by default: the period is this times a quantile of recent frame times

TOLERANCE_S = 0.0005  # lateness below this is sleep overshoot, not an overrun: the grid stays


class FramePacer:
    def __init__(
        self,
        period_s: float,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        adaptive: bool = False,
        margin: float = PACING_MARGIN,
        quantile: float = 0.9,
        window: int = 50,
        warmup: int = 10,
        source: Callable[[], float] | None = None,
        on_tick: bool = False,
    ) -> None:
        if not period_s >= 0.0:
            raise ValueError(f"FramePacer: expected a period >= 0 seconds, got {period_s!r}")
        if adaptive and not (margin >= 1.0 and 0.0 < quantile <= 1.0 and window >= warmup >= 1):
            raise ValueError(
                f"FramePacer: expected margin >= 1, 0 < quantile <= 1 and window >= warmup >= 1, got "
                f"margin={margin}, quantile={quantile}, window={window}, warmup={warmup}"
            )
        self._period_s = float(period_s)
        self.source = source  # where the period comes from (an adaptive controller), if anywhere
        self.adaptive, self.margin, self.quantile, self.warmup = adaptive, margin, quantile, warmup
        self._now, self._sleep = now, sleep
        self._next: float | None = None
        self._frames: collections.deque[float] = collections.deque(maxlen=window)
        self.on_tick = on_tick  # release() holds each action until the next tick
        self.waited_s = 0.0  # total time spent waiting for ticks
        self.held_s = 0.0  # total time actions were held for their tick (on_tick)
        self.overruns = 0  # frames that started late (their tick had passed)

    @property
    def period_s(self) -> float:
        """The period now (a pacer with a ``source`` asks it)."""
        return float(self.source()) if self.source is not None else self._period_s

    @period_s.setter
    def period_s(self, value: float) -> None:
        self._period_s = float(value)

    def record(self, frame_s: float) -> None:
        """One frame took ``frame_s`` seconds of compute (time waiting for a tick or an observation
        excluded); an adaptive pacer re-plans its period from the recent frames."""
        self._frames.append(frame_s)
        if self.adaptive and len(self._frames) >= self.warmup:
            self.period_s = self.margin * float(np.quantile(self._frames, self.quantile))

    def wait(self) -> float:
        """Block until the next tick; returns the seconds waited. The first call after construction or
        ``reset`` returns at once and starts the grid."""
        now = self._now()
        if self.period_s == 0.0:
            self._next = None
            return 0.0
        if self._next is None:
            self._next = now + self.period_s
            return 0.0
        left = self._next - now
        if left > -TOLERANCE_S:
            if left > 0:
                self._sleep(left)
                self.waited_s += left
            self._next += self.period_s
            return max(left, 0.0)
        self.overruns += 1
        self._next = now + self.period_s  # re-anchor: no catch-up burst after a late frame
        return 0.0

    def release(self) -> float:
        """After a frame: with ``on_tick``, block until the next tick (when the next frame starts) so
        actions come out a period apart; returns the seconds held. Without it, or unpaced, at once."""
        if not self.on_tick or self._next is None or self.period_s == 0.0:
            return 0.0
        left = self._next - self._now()
        if left <= 0:
            return 0.0  # the frame overran its period: hand the action out now
        self._sleep(left)
        self.held_s += left
        return left

    def reset(self) -> None:
        """Forget the grid (a new episode starts fresh); an adaptive pacer keeps what it learnt of frame
        times."""
        self._next = None


def make_pacer(frame_period_ms: float | str, **kwargs: object) -> FramePacer:
    """The pacer for ``pipeline.frame_period_ms``: a number of ms (0: unpaced) or ``"auto"``."""
    if frame_period_ms == "auto":
        return FramePacer(0.0, adaptive=True, **kwargs)  # type: ignore[arg-type]
    return FramePacer(float(frame_period_ms) / 1e3, **kwargs)  # type: ignore[arg-type]


def pacer_for(agent: Any) -> FramePacer:
    """The pacer of an agent on the agent's clock: its ``pipeline.frame_period_ms``; with the adaptive
    controller and no fixed period, the controller's period (read at every tick: it follows the depth the
    controller picks)."""
    pipeline = agent.config.pipeline
    period = pipeline.frame_period_ms
    clock = agent.clock
    on_tick = pipeline.release == "on_tick"
    if pipeline.controller == "adaptive" and period in (0, 0.0, "auto") and agent.frame_period_s is not None:
        return FramePacer(0.0, clock.now, clock.sleep, source=lambda: agent.frame_period_s, on_tick=on_tick)
    return make_pacer(period, now=clock.now, sleep=clock.sleep, on_tick=on_tick, quantile=pipeline.pacing_quantile,
                      margin=pipeline.pacing_margin)
