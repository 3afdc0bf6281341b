"""The robot's control step: which action chunk runs, what each observation carries, and what the robot
does when the actions stop coming (numpy only).

:class:`RobotRuntime` is one episode of a robot's control loop, step by step. At control step ``t``:

1. :meth:`~RobotRuntime.offer` an action that arrived: it takes over if it ranks fresher than the current
   one (by its newest input, then its request) and is not older than ``ttl_s``; the executor places its
   rows in time from the control step its newest input was captured at (recorded by
   :meth:`~RobotRuntime.sent`), so the landing delay is counted in control steps the robot ran;
2. :meth:`~RobotRuntime.wants_observation`: a camera tick on which the strategy wants a request;
   :meth:`~RobotRuntime.prepare` then gives the state and extras to send (rtc's guide: the rows the robot
   will really apply, fallback included; roll_forward's advanced state);
3. :meth:`~RobotRuntime.row`: the row to apply now.

The deadline contract: a *fresh* row is one of a chunk's own rows for its own step. Past a chunk's end
the robot holds the chunk's last row; once it has run ``deadline_s`` without a fresh row it applies its
:class:`Fallback` (hold the last row, decay to a rest command over ``decay_s``, or stop: the rest command
and a user callback), counts one deadline miss, and resumes with the first fresh row that arrives.
Without a ``deadline_s`` the TTL rule decides instead: the fallback starts once the current action's
newest input is older than ``ttl_s`` plus its chunk's duration (the action is stale, rows and all).
Before the first action of an episode the robot applies the rest command; that counts as a miss too
once an answer came that was too old to apply (the agent answers, but never in time). A pipeline that
is still filling is no miss: its first answers may carry a newer observation's context. Times come
from the robot's own clock (``clock``, monotonic by default); nothing is compared with the server's
clock. Rows handed out are the caller's to keep (copies).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from auras_client.staleness import ChunkExecutor

__all__ = ["FALLBACKS", "ControlStats", "Fallback", "RobotRuntime"]

FALLBACKS = ("hold", "decay", "stop")


@dataclass(frozen=True)
class Fallback:
    """What the robot applies once it has run its deadline without a fresh row.

    ``hold``: the last row applied, unchanged. ``decay``: from the last row to ``rest`` linearly over
    ``decay_s`` (0: at once), then ``rest``. ``stop``: ``rest`` at once, and ``on_stop(stats)`` is called
    once per miss (an emergency stop, a brake). ``rest``: the rest command (default zeros: no motion under
    delta control)."""

    kind: str = "decay"
    decay_s: float = 0.0
    rest: tuple[float, ...] | None = None
    on_stop: Callable[[ControlStats], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FALLBACKS:
            raise ValueError(f"fallback: expected one of {', '.join(FALLBACKS)}, got {self.kind!r}")
        if not (math.isfinite(self.decay_s) and self.decay_s >= 0):
            raise ValueError(f"fallback.decay_s: expected seconds >= 0, got {self.decay_s}")

    def rest_row(self, action_dim: int) -> np.ndarray:
        if self.rest is None:
            return np.zeros(action_dim, np.float32)
        rest = np.asarray(self.rest, np.float32)
        if rest.shape != (action_dim,):
            raise ValueError(f"fallback.rest: expected {action_dim} values (the action's size), got {rest.shape}")
        return rest

    def row(self, last: np.ndarray, rest: np.ndarray, elapsed_s: float) -> np.ndarray:
        """The row ``elapsed_s`` into the fallback, from ``last`` (the row applied before it)."""
        if self.kind == "hold":
            return last
        if self.kind == "stop" or self.decay_s == 0 or elapsed_s >= self.decay_s:
            return rest
        w = max(0.0, elapsed_s) / self.decay_s
        return ((1.0 - w) * last + w * rest).astype(np.float32)


@dataclass
class ControlStats:
    """One episode's control loop as the robot saw it (times in seconds on the robot's clock)."""

    steps: int = 0
    actions_applied: int = 0  # distinct actions that took over
    expired: int = 0  # distinct actions older than the TTL when the robot saw them
    not_newer: int = 0  # actions offered that ranked no fresher than the current one (repeats, reordered)
    idle_steps: int = 0  # steps with no chunk row at all: before the first action, or in the fallback
    held_steps: int = 0  # steps that held a chunk's last row past its end, within the deadline
    fallback_steps: int = 0
    deadline_misses: int = 0  # gaps that outlasted the deadline (one per gap)
    fallback_s: float = 0.0  # time spent in the fallback
    longest_gap_s: float = 0.0  # the longest run without a fresh row (after the episode's first action)
    resumed_at: list[float] = field(default_factory=list)  # clock time of the first fresh row after each miss
    action_age_ms: list[float] = field(default_factory=list)  # newest input's capture -> takeover
    staleness_steps: list[int] = field(default_factory=list)  # control steps since the newest input, at takeover
    latency_ms: list[float] = field(default_factory=list)  # the agent's latency of each applied action

    def summary(self) -> dict[str, Any]:
        """JSON-ready counters with action-age percentiles."""
        data = asdict(self)
        ages = data.pop("action_age_ms")
        for name in ("staleness_steps", "latency_ms", "resumed_at"):
            data.pop(name)
        data["action_age_ms_p50"] = float(np.percentile(ages, 50)) if ages else None
        data["action_age_ms_p99"] = float(np.percentile(ages, 99)) if ages else None
        return data


class RobotRuntime:
    """One robot's control loop, step by step (see the module doc).

    ``executor``: the staleness strategy's robot side; ``control_dt``: seconds per control step;
    ``camera_every``: send an observation at most every this many steps; ``ttl_s``: never take over an
    action older than this (its newest input's age); ``deadline_s``: the longest the robot runs without
    a fresh row before the fallback (None: the TTL rule, see the module doc); ``clock``: the robot's
    clock (seconds).
    """

    def __init__(
        self,
        executor: ChunkExecutor,
        control_dt: float,
        *,
        camera_every: int = 1,
        ttl_s: float = 0.25,
        deadline_s: float | None = None,
        fallback: Fallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not control_dt > 0:
            raise ValueError(f"control_dt: expected seconds > 0, got {control_dt}")
        if camera_every < 1:
            raise ValueError(f"camera_every: expected >= 1 control steps, got {camera_every}")
        if deadline_s is not None and not deadline_s >= 0:
            raise ValueError(f"deadline_s: expected seconds >= 0, got {deadline_s}")
        self.executor, self.control_dt, self.camera_every = executor, float(control_dt), int(camera_every)
        self.ttl_s, self.clock = float(ttl_s), clock
        self.deadline_s = None if deadline_s is None else float(deadline_s)
        self.fallback = fallback if fallback is not None else Fallback()
        self.rest = self.fallback.rest_row(executor.action_dim)
        self.rest.flags.writeable = False
        self.reset()

    def reset(self) -> None:
        """A new episode: no chunk, nothing sent, fresh counters."""
        self.executor.reset()
        self.stats = ControlStats()
        self._captured: dict[int, int] = {}  # observation id -> the control step it was captured at
        self._current: tuple[int, int] | None = None  # order of the action that took over
        self._expired: tuple[int, int] | None = None
        self._gap_start: float | None = None  # clock time of the first step without a fresh row
        self._fallback_start: float | None = None  # clock time the fallback under way began
        self._captured_at: float | None = None  # clock time the current action's newest input was captured
        self._refused_at_startup = False  # an answer came before the episode's first action, too old to apply
        self._last_row = self.rest

    # -- actions in -----------------------------------------------------------------------------------
    def offer(self, t: int, chunk: np.ndarray, request_id: int, context_id: int, age_s: float,
              latency_ms: float | None = None) -> bool:
        """An action arrived by control step ``t``: ``chunk`` (H, A) answers observation ``request_id``, its
        newest input was observation ``context_id`` (ids given to :meth:`sent`), captured ``age_s`` ago.
        True if it took over."""
        order = (int(context_id), int(request_id))
        if self._current is not None and order <= self._current:
            if order != self._current:
                self.stats.not_newer += 1
            return False
        if age_s > self.ttl_s:
            if order != self._expired:
                self._expired = order
                self.stats.expired += 1
            self._refused_at_startup = self._refused_at_startup or self.executor.chunk is None
            return False
        source = self._captured.get(order[0], self._captured.get(order[1], t))
        self.executor.accept_chunk(chunk, source, t)
        self._current, self._captured_at = order, self.clock() - age_s
        self.stats.actions_applied += 1
        self.stats.action_age_ms.append(age_s * 1e3)
        self.stats.staleness_steps.append(t - source)
        if latency_ms is not None:
            self.stats.latency_ms.append(float(latency_ms))
        return True

    # -- observations out -----------------------------------------------------------------------------
    def wants_observation(self, t: int) -> bool:
        """Step ``t`` is a camera tick and the strategy wants a request (chunk_blend waits for a short
        queue, rtc with an execution horizon for that many rows to run)."""
        return t % self.camera_every == 0 and self.executor.wants_request(t)

    def prepare(self, t: int, state: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The state and extras to send with the observation of step ``t``; the guide rows are the rows
        the robot will apply if nothing lands (the fallback's included)."""
        count = max(self.executor.horizon, self.executor.delay_steps)
        return self.executor.prepare_inputs(t, state, self.planned(t, count))

    def sent(self, obs_id: int, t: int) -> None:
        """Observation ``obs_id`` went out at control step ``t``."""
        self._captured[int(obs_id)] = int(t)
        if len(self._captured) > 4096:  # ids only grow: forget the oldest
            for key in sorted(self._captured)[:1024]:
                del self._captured[key]

    # -- the row to apply -----------------------------------------------------------------------------
    def row(self, t: int) -> np.ndarray:
        """The row to apply at control step ``t`` (a copy; never None: the rest command before any action)."""
        now = self.clock()
        values, kind, gap_start, begins = self._decide(t, now, self._gap_start, self._last_row)
        stats = self.stats
        stats.steps += 1
        if kind == "fresh":
            if self._gap_start is not None:
                stats.longest_gap_s = max(stats.longest_gap_s, now - self._gap_start)
            if self._fallback_start is not None:
                stats.fallback_s += now - self._fallback_start
                stats.resumed_at.append(now)
            self._gap_start, self._fallback_start = None, None
            self._last_row = values
        elif kind == "startup":
            stats.idle_steps += 1
        else:
            self._gap_start = gap_start
            if gap_start is not None:
                stats.longest_gap_s = max(stats.longest_gap_s, now - gap_start)
            if kind == "held":
                stats.held_steps += 1
                self._last_row = values
            else:
                stats.idle_steps += 1
                stats.fallback_steps += 1
                if self._fallback_start is None:
                    self._fallback_start = begins  # when the deadline passed (a step may come a little later)
                    stats.deadline_misses += 1
                    if self.fallback.kind == "stop" and self.fallback.on_stop is not None:
                        self.fallback.on_stop(stats)
        return np.array(values, np.float32)

    def planned(self, t: int, count: int) -> np.ndarray:
        """The rows of steps ``t .. t + count - 1`` if no action lands meanwhile (each step one
        ``control_dt`` later on the clock)."""
        now, gap_start, last = self.clock(), self._gap_start, self._last_row
        rows = []
        for i in range(count):
            values, kind, gap_start, _ = self._decide(t + i, now + i * self.control_dt, gap_start, last)
            if kind in ("fresh", "held"):
                last = values
            rows.append(values)
        return np.stack(rows) if rows else np.zeros((0, self.executor.action_dim), np.float32)

    def _decide(self, t: int, now: float, gap_start: float | None,
                last: np.ndarray) -> tuple[np.ndarray, str, float | None, float]:
        """(row, kind, gap start, when a fallback began) at step ``t``, time ``now``: kind is fresh (a chunk's own
        row), startup (no action yet this episode), held (a chunk's last row within the deadline) or fallback."""
        executor = self.executor
        if executor.covers(t):
            return executor.row(t), "fresh", None, now
        if executor.chunk is None:
            if not self._refused_at_startup:  # no answer yet, or none refused: the pipeline may still be filling
                return self.rest, "startup", None, now
            begins = self._fallback_start if self._fallback_start is not None else now
            return self.fallback.row(last, self.rest, now - begins), "fallback", None, begins
        gap_start = now if gap_start is None else gap_start
        if self.deadline_s is not None:
            due = gap_start + self.deadline_s
        else:  # the TTL rule: the current action is stale once its newest input is older than TTL + its rows
            due = max(gap_start, self._captured_at + self.ttl_s + len(executor.chunk) * self.control_dt)
        if now < due:
            return executor.row(t), "held", gap_start, now
        begins = self._fallback_start if self._fallback_start is not None else due
        return self.fallback.row(last, self.rest, now - begins), "fallback", gap_start, begins

    def summary(self) -> dict[str, Any]:
        """:meth:`ControlStats.summary`, with a fallback still under way counted up to now."""
        data = self.stats.summary()
        if self._fallback_start is not None:
            data["fallback_s"] += self.clock() - self._fallback_start
        return data
