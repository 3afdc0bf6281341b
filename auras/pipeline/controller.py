"""The adaptive pipeline (``pipeline.controller: adaptive``): it holds a target action rate by
choosing the generation depth online, and re-plans when the stage times change.

:class:`DepthController` is the decision (no clock, no threads): it is fed each frame's wall time
and the action's staleness, and at the end of every ``window`` measured frames (or as soon as three
frames in a row each take 1.5x the target's period or more) it compares the rate the current depth
``pp_generation`` holds when paced, 1 / (margin x the quantile of its frame times;
``pipeline.pacing_margin`` and ``pacing_quantile``, 1.05 x p90 by default), with ``target_hz``:

- too slow (below 97% of the target): deeper, by as many stages as the shortfall asks for if frame
  time fell in proportion to depth (d x target / rate, rounded up; frame time falls no faster than
  that, so the estimate does not overshoot), at most twice as deep per re-plan, short of a depth
  recently measured no faster or too stale; not at all if a recent measurement says the next depth
  was no faster or broke the staleness bound;
- fast enough with room (at least ``slack`` times the target): shallower (fresher actions, fewer
  requests in flight), to the proportional estimate again (a shallower pipeline's frame time grows
  no faster than depth falls, so it still holds the target), at most halving the depth per re-plan,
  and not to a depth recently measured below the target;
- ``target_hz`` 0: the fastest depth, climbing while a deeper pipeline is measured faster.

Measurements expire after ``memory`` windows, so when the load changes back (a robot leaves, the
machine calms down) a depth is tried again. ``staleness_bound_ms`` (0: none) rules out depths whose
actions were measured older than the bound. ``pp_perception`` stays as configured: on every backend
here one device runs all of a frame's perception stages, so more of them add staleness and no rate.

:class:`AdaptiveFrameExecutor` carries the decision out without dropping an admitted request's
action or emitting one twice: on a switch the old pipeline stops admitting and drains, one action per
frame; the new pipeline starts admitting when its first action will land right after the old one's
last (going shallower, observations offered before that are not admitted), so going shallower never
misses a frame and going deeper leaves a gap of (new depth - old depth) frames in which ``step``
returns the previous action again. While the old pipeline drains, the contexts the new one perceives
are lent to it (:meth:`FrameExecutor.lend`; the new pipeline runs first in a transition frame), so in
mode ``auras`` its last requests read the newest observation's context, as a request of a steady
pipeline does, instead of one that ages every frame. Frames of a transition are not measured. The
controller also sets the frame period: margin x the quantile of the current depth's measured frames, never below
1 / target_hz (:attr:`DepthController.period_s`; the caller's pacer reads it, see
:func:`auras.pipeline.pacing.pacer_for`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from auras.clock import SYSTEM_CLOCK, Clock
from auras.errors import ConfigError, WorkerDiedError
from auras.pipeline.base import Executor
from auras.pipeline.engine import FrameEngine
from auras.pipeline.frames import FrameExecutor, FrameShape
from auras.pipeline.pacing import PACING_MARGIN
from auras.types import Action, Observation

__all__ = ["AdaptiveFrameExecutor", "DepthController", "Replan"]

URGENT_FRAMES = 3  # consecutive frames far too slow for the target that close a window early


@dataclass(frozen=True, slots=True)
class Replan:
    """One decision: at ``frame``, depth ``old`` measured ``rate_hz`` -> ``new`` (``reason``)."""

    frame: int
    old: int
    new: int
    rate_hz: float
    staleness_ms: float
    reason: str


class DepthController:
    """Chooses ``pp_generation`` from measured frames (see the module doc)."""

    def __init__(
        self,
        target_hz: float,
        max_depth: int,
        start: int = 1,
        *,
        window: int = 20,
        memory: int = 10,
        slack: float = 1.15,
        staleness_bound_ms: float = 0.0,
        margin: float = PACING_MARGIN,
        quantile: float = 0.9,
    ) -> None:
        if not 1 <= start <= max_depth:
            raise ConfigError(f"controller: expected a starting depth in 1..{max_depth}, got {start}")
        if target_hz < 0 or window < 2 or memory < 1 or slack < 1.0 or staleness_bound_ms < 0:
            raise ConfigError(
                f"controller: expected target_hz >= 0, window >= 2, memory >= 1, slack >= 1 and a bound >= 0, "
                f"got {target_hz}, {window}, {memory}, {slack}, {staleness_bound_ms}"
            )
        self.target_hz, self.max_depth, self.depth = float(target_hz), int(max_depth), int(start)
        self.window, self.memory, self.slack, self.bound_ms = window, memory, slack, staleness_bound_ms
        self.margin, self.quantile = margin, quantile  # the pacing the rate model assumes
        self.measured: dict[int, tuple[float, float, int]] = {}  # depth -> (rate Hz, staleness ms, window no.)
        self.replans: list[Replan] = []
        self._frames: list[float] = []
        self._staleness: list[float] = []
        self._period_frames: collections.deque[float] = collections.deque(maxlen=50)  # this depth's frames
        self._windows = 0
        self._frame = 0

    def observe(self, frame_s: float, staleness_ms: float, measured: bool = True) -> int | None:
        """One frame of the current depth took ``frame_s``; its action was ``staleness_ms`` old. Returns
        the new depth when the window closes with a decision to switch, else None. ``measured`` False:
        a frame of a transition (counted, not measured)."""
        self._frame += 1
        if not measured:
            return None
        self._period_frames.append(frame_s)
        self._frames.append(frame_s)
        self._staleness.append(staleness_ms)
        if len(self._frames) < self.window and not self._far_too_slow():
            return None
        rate = 1.0 / self._paced(self._frames)  # the rate it holds, paced
        staleness = float(np.median(self._staleness))
        self._frames, self._staleness = [], []
        self._windows += 1
        self.measured[self.depth] = (rate, staleness, self._windows)
        new, reason = self._decide(rate, staleness)
        if new == self.depth:
            return None
        self.replans.append(Replan(self._frame, self.depth, new, rate, staleness, reason))
        self.depth = new
        self._period_frames.clear()  # the new depth's frames take different times
        return new

    def _far_too_slow(self) -> bool:
        """The last ``URGENT_FRAMES`` frames each missed the target's period by half or more: close
        the window early (a sudden slow-down is acted on in a few frames, not a whole window)."""
        recent = self._frames[-URGENT_FRAMES:]
        period = 1.0 / self.target_hz if self.target_hz else 0.0
        return bool(period) and len(recent) == URGENT_FRAMES and min(recent) * self.margin > 1.5 * period

    @property
    def period_s(self) -> float:
        """The frame period to pace at: margin x the quantile of this depth's measured frames (once 5 are
        measured), never below 1 / target_hz."""
        floor = 1.0 / self.target_hz if self.target_hz else 0.0
        if len(self._period_frames) < 5:
            return floor
        return max(floor, self._paced(self._period_frames))

    def _paced(self, frames: Any) -> float:
        return self.margin * float(np.quantile(frames, self.quantile))

    def _recent(self, depth: int) -> tuple[float, float] | None:
        seen = self.measured.get(depth)
        if seen is None or self._windows - seen[2] >= self.memory:
            return None
        return seen[0], seen[1]

    def _fits_bound(self, seen: tuple[float, float] | None) -> bool:
        return seen is None or not self.bound_ms or seen[1] <= self.bound_ms

    def _deep_enough(self, rate: float) -> int:
        """The depth to try when depth ``self.depth`` holds only ``rate`` (below the target): the
        proportional estimate, at most twice as deep (or two stages) per re-plan, so one window of
        stalls (a pause of the machine) cannot send it to the deepest pipeline. A depth recently
        measured to hold the target does not stop it: that measurement may predate the load change
        that made this one slow, and the estimate does not overshoot."""
        d = self.depth
        want = min(self.max_depth, max(2 * d, d + 2), max(d + 1, math.ceil(d * self.target_hz / rate)))
        for depth in range(d + 1, want + 1):  # a depth measured too stale or no faster stops it short
            seen = self._recent(depth)
            if seen is not None and (not self._fits_bound(seen) or seen[0] <= rate * 1.03):
                return max(d + 1, depth - 1)
        return want

    def _decide(self, rate: float, staleness: float) -> tuple[int, str]:
        d = self.depth
        deeper = self._recent(d + 1) if d < self.max_depth else None
        shallower = self._recent(d - 1) if d > 1 else None
        if self.bound_ms and staleness > self.bound_ms and d > 1:
            return d - 1, f"staleness {staleness:.0f} ms above the bound {self.bound_ms:g} ms"
        if self.target_hz == 0.0:  # as fast as possible: climb while deeper is (or may be) faster
            if d < self.max_depth and (deeper is None or deeper[0] > rate * 1.03) and self._fits_bound(deeper):
                return d + 1, "looking for a faster depth"
            if shallower is not None and shallower[0] > rate * 1.03:
                return d - 1, "the shallower depth was faster"
            return d, "fastest measured"
        if rate < 0.97 * self.target_hz:
            if d < self.max_depth and (deeper is None or deeper[0] > rate * 1.03) and self._fits_bound(deeper):
                return self._deep_enough(rate), f"{rate:.1f} Hz below the target {self.target_hz:g} Hz"
            return d, "below the target, and deeper was measured no faster"
        room = shallower is None or shallower[0] >= 0.97 * self.target_hz
        if rate >= self.slack * self.target_hz and d > 1 and room:
            return self._shallow_enough(rate), f"{rate:.1f} Hz leaves room above the target {self.target_hz:g} Hz"
        return d, "on target"

    def _shallow_enough(self, rate: float) -> int:
        """The depth to try when depth ``self.depth`` holds ``rate`` with room above the target: the
        proportional estimate (a shallower pipeline's frame time grows no faster than depth falls, so
        it still holds the target), at most halving the depth per re-plan, stopping above a depth
        recently measured below the target."""
        d = self.depth
        want = max(1, (d + 1) // 2, math.ceil(d * self.target_hz / rate))
        want = min(want, d - 1)
        for depth in range(d - 2, want - 1, -1):  # d - 1 has room (checked by the caller)
            seen = self._recent(depth)
            if seen is not None and seen[0] < 0.97 * self.target_hz:
                return depth + 1
        return want


class AdaptiveFrameExecutor(Executor):
    """A frame pipeline whose generation depth a :class:`DepthController` changes while it runs."""

    def __init__(self, make_frames: Callable[[FrameShape], FrameExecutor], shape: FrameShape,
                 controller: DepthController, clock: Clock = SYSTEM_CLOCK, first: FrameExecutor | None = None,
                 engine: FrameEngine | None = None) -> None:
        """``make_frames(shape)``: a FrameExecutor of that shape, a new session of the engine the pipeline
        runs on (whose finished contexts come back to this process: a draining pipeline reads them), so a
        re-plan places no new workers. ``first``: the pipeline to start with, if already built (else
        ``make_frames``); ``clock``: what each frame's time is measured with; ``engine``: an engine of this
        executor's own, closed with it (a shared engine outlives it)."""
        self.make_frames, self.controller, self.base, self._own_engine = make_frames, controller, shape, engine
        self.current = first if first is not None else make_frames(self._shape(controller.depth))
        super().__init__(self.current.spec)
        self.current.incidents = self.incidents  # a pipeline's worker replacements count as this executor's
        self.clock = clock
        self.draining: FrameExecutor | None = None
        self._admitting = True  # the current pipeline admits (false while a shallower one waits its turn)
        self._settle = 0  # frames after a transition that are not measured (the new pipeline fills)
        self._last: Action | None = None

    @property
    def clock(self) -> Clock:
        """The time frames are measured with; setting it reaches the pipelines it runs."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        for frames in (self.current, getattr(self, "draining", None)):
            if frames is not None:
                frames.clock = clock

    def _shape(self, depth: int) -> FrameShape:
        return FrameShape(self.base.pp_perception, depth, self.base.fetch_offset)

    @property
    def shape(self) -> FrameShape:
        return self.current.shape

    @property
    def engine(self) -> FrameEngine:
        """The engine every depth of this pipeline is a session of."""
        return self.current.engine

    def hold(self, target_hz: float | None, staleness_bound_ms: float | None) -> None:
        """Hold this rate and staleness bound from now on (a served robot's contract); None keeps the
        configured one."""
        if target_hz is not None:
            self.controller.target_hz = float(target_hz)
        if staleness_bound_ms is not None:
            self.controller.bound_ms = float(staleness_bound_ms)

    @property
    def frame_period_s(self) -> float:
        """The controller's frame period (what the caller's pacer waits for)."""
        return self.controller.period_s

    def step(self, obs: Observation) -> Action:
        start = self.clock.now()
        filling = self._last is None  # the first step after construction or reset fills the pipeline
        if self.draining is None:
            action = self.current.step(obs)  # replaces dead workers itself (WorkerRestartedError)
        else:
            try:
                action = self._transition_frame(obs)
            except WorkerDiedError as exc:  # mid re-plan: drop the draining pipeline, start the new one afresh
                raise self.recover(exc, obs.step_id, self._abandon_transition, frame=self.current.frame) from exc
        self._last = action
        settling = filling or self.draining is not None or self._settle > 0
        self._settle = max(0, self._settle - 1)
        staleness = action.staleness_ms if action.staleness_ms is not None else 0.0
        new = self.controller.observe(self.clock.now() - start, staleness, measured=not settling)
        if new is not None:
            self.switch(new)
        return action

    def switch(self, depth: int) -> None:
        """Re-plan to generation depth ``depth`` now: a new pipeline of that depth takes over while the
        current one drains (no admitted request is lost or answered twice). The controller calls it. If
        the new pipeline cannot be built, the current one runs on and the controller stays at its depth."""
        try:
            new = self.make_frames(self._shape(depth))
        except BaseException:
            self.controller.depth = self.current.shape.pp_generation
            raise
        new.clock, new.incidents = self.clock, self.incidents
        new.same_robot_as(self.current)  # the engine's frames wait for this robot once, not for both halves
        # the robot's workers are those the current pipeline ran on: should they have been replaced meanwhile
        # (another robot's recovery), the new session learns it with the old one, and no second replacement runs
        new.adopt_incarnation(self.current)
        self.draining, self.current = self.current, new
        self._admitting = False

    def _abandon_transition(self) -> None:
        """A worker died during a transition: the draining pipeline is closed (its requests are lost) and
        the new one starts again on fresh workers, empty."""
        if self.draining is not None:
            with contextlib.suppress(Exception):
                self.draining.close()
        self.draining, self._admitting, self._settle, self._last = None, True, 0, None
        self.current.replace_workers()

    def _transition_frame(self, obs: Observation) -> Action:
        old, new = self.draining, self.current
        assert old is not None
        pending = old.inflight  # the old pipeline emits one of these in each of the next frames
        # admit into the new pipeline once its first action (lifetime - 1 frames after admission)
        # lands right after the old one's last (pending - 1 frames from now)
        if not self._admitting and pending <= new.shape.lifetime - 1:
            self._admitting = True
        emitted_new = new.run_frame(obs) if self._admitting else None
        if self._admitting and pending:  # the old pipeline's last requests read the newest context
            old.lend(new.finished_contexts(), new.frame - 1)  # perceived in this very frame
        emitted_old = old.run_frame(None) if pending else None
        if emitted_old is not None and emitted_new is not None:  # by construction they never share a frame
            raise RuntimeError("adaptive pipeline: the old and the new pipeline emitted in the same frame")
        if old.inflight == 0 and new.emitted:  # the old one is empty and the new one is delivering
            old.close()
            self.draining = None
            self._admitting = True
            self._settle = new.shape.lifetime
        action = emitted_old or emitted_new or self._last
        assert action is not None, "a transition starts only after the first action"
        return action

    def reset(self) -> None:
        if self.draining is not None:
            self.draining.close()
            self.draining = None
        self._admitting = True
        self._settle = 0
        self._last = None
        self.current.reset()

    def close(self) -> None:
        try:
            if self.draining is not None:
                self.draining.close()
            self.current.close()
        finally:
            if self._own_engine is not None:
                self._own_engine.close()

    @property
    def hosted_policy(self) -> Any:
        return self.current.hosted_policy

    def workers(self) -> list[dict[str, Any]]:
        return self.current.workers()

    @property
    def context_transport(self) -> str:
        return self.current.context_transport

    @property
    def startup_ms(self) -> float | None:
        return self.current.startup_ms

    def controller_stats(self) -> dict[str, Any]:
        """The depth now, the rate and staleness measured per depth, and every re-plan so far."""
        c = self.controller
        return {
            "pp_perception": self.base.pp_perception,
            "pp_generation": self.current.shape.pp_generation,
            "target_hz": c.target_hz,
            "measured": {d: {"rate_hz": r, "staleness_ms": s} for d, (r, s, _) in sorted(c.measured.items())},
            "replans": [dataclasses.asdict(r) for r in c.replans],
        }
