"""The frame engine: one policy's perception and generation workers serving the frames of many sessions.

    engine = FrameEngine(backend)                      # the workers are placed once: one model per device
    robot_a = FrameExecutor(engine, FrameShape(2, 3))  # a session: one robot's (or one episode's) pipeline
    robot_b = FrameExecutor(engine, FrameShape(2, 3))
    robot_a.step(obs_a)  # from robot a's thread; robot b's thread steps at the same time

A session (a :class:`~auras.pipeline.frames.FrameExecutor` attached to the engine) keeps its own
frames, requests, public context, accounting and noise; it only plans. Its ``step`` hands its frame's
plan to :meth:`FrameEngine.run` and waits. The engine gathers the plans of every session waiting and
runs them as one frame of its workers (a :class:`~auras.pipeline.workers.FrameBatch`): one batched
perception call per stage and one batched generation call over every session's in-flight requests,
each request at its own stage (continuous batching: requests join and leave at stage boundaries).

When a frame runs: as soon as every *active* session (one that asked for a frame within
``active_window_s``) has a plan waiting, or the oldest waiting plan has waited ``wait_ms`` (counted from
the end of the last frame for a plan that waited behind it). A lone
session never waits, and sessions whose steps line up share one frame. Whoever's plan completes the
batch runs it in its own thread (no hand-off; with one session, a frame runs exactly as a private
pipeline's would). Every waiting session takes part in every frame, so equal demands get equal rates.

Failures: a session whose rows raise gets its exception alone (the workers retry a failed batched
call row group by row group, :class:`~auras.pipeline.workers.SessionFailure`); the others' frame goes
on. A dead or hung worker fails the frame for every session in it: the first session to recover
replaces the workers (:meth:`replace`), and every session notices at its next frame that the engine's
workers changed (:class:`~auras.errors.WorkerDiedError`), forgets its requests and goes on: each robot
sees exactly one restart.

Sessions of one engine share ``fetch_offset`` (whether perception and generation run concurrently is
a property of the workers' frame graph); they may differ in ``pp_perception``, ``pp_generation``,
``public``, ``alpha`` and ``emit``. Sessions that differ in ``fetch_offset`` need engines of their own.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auras.errors import AgentClosedError, StepFailedError, WorkerDiedError
from auras.pipeline.backend import Backend, WorkerGroup, WorkerRecipe, as_backend, closing_on_error
from auras.pipeline.workers import (
    ContextMessage,
    Emitted,
    FrameBatch,
    FramePlan,
    GenerationWorker,
    PerceptionWorker,
    SessionFailure,
)
from auras.policies.base import Policy, PolicySpec

__all__ = ["EngineStats", "FrameEngine"]

REPLACED = "the engine's workers were replaced (a frame found one dead); this session's requests went with them"
WAIT_MS = 2.0
ACTIVE_WINDOW_S = 0.5


@dataclass
class _Call:
    plan: FramePlan
    incarnation: int
    arrived: float = field(default_factory=time.monotonic)
    done: bool = False
    result: tuple[tuple[ContextMessage, ...], Emitted | None] | None = None
    error: BaseException | None = None
    failed_in_worker: bool = False  # error: what the session's own work raised (SessionFailure)


@dataclass
class EngineStats:
    """What the engine did: frames run, plans served (the sum of the frames' sizes), the largest frame."""

    frames: int = 0
    plans: int = 0
    largest: int = 0
    replacements: int = 0
    busy_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "plans": self.plans, "largest_frame": self.largest,
                "mean_frame_sessions": round(self.plans / self.frames, 2) if self.frames else 0.0,
                "replacements": self.replacements, "busy_s": round(self.busy_s, 3)}


class FrameEngine:
    """One perception and one generation worker over one policy, placed by ``backend`` (a Policy: in this
    process, on the CPU), serving every attached session (see the module docstring).
    ``contexts_to_caller``: every frame's finished contexts come back to this process (a re-planning
    pipeline lends them; free in-process, a copy per frame on Ray)."""

    def __init__(self, backend: Backend | Policy, fetch_offset: int = 0, contexts_to_caller: bool = False,
                 wait_ms: float = WAIT_MS, active_window_s: float = ACTIVE_WINDOW_S) -> None:
        if wait_ms < 0 or active_window_s <= 0:
            raise ValueError(f"wait_ms >= 0 and active_window_s > 0 expected, got {wait_ms}, {active_window_s}")
        self.backend = as_backend(backend)
        self.fetch_offset, self.contexts_to_caller = fetch_offset, contexts_to_caller
        self.wait_s, self.active_window_s = wait_ms / 1e3, active_window_s
        self.recipes = (WorkerRecipe("perception", PerceptionWorker, {}),
                        WorkerRecipe("generation", GenerationWorker, {}))
        self.incarnation = 0  # bumped each time the workers are replaced
        self.counters = EngineStats()
        self._cv = threading.Condition()
        self._ids = itertools.count()
        self._seen: dict[int, float] = {}  # attached session -> when it last asked for a frame
        self._robot: dict[int, int] = {}  # session -> the session that stands for its robot (if not itself)
        self._waiting: dict[int, _Call] = {}
        self._leaving: list[int] = []
        self._running = False
        self._closed = False
        self._costs: dict[int, collections.deque[float]] = {}  # frame size (sessions) -> recent frame seconds
        self._last_frame_end = 0.0
        self._place()

    @property
    def spec(self) -> PolicySpec:
        return self.group.spec

    @property
    def hosted_policy(self) -> Policy | None:
        return self.group.hosted_policy

    @property
    def sessions(self) -> int:
        """Robots attached now (a robot's two sessions during a re-plan count once: see :meth:`same_robot`)."""
        with self._cv:
            return len({self._robot.get(s, s) for s in self._seen})

    def _place(self) -> None:
        self.group: WorkerGroup = self.backend.place(self.recipes)
        with closing_on_error(self.group):
            self.graph = self.group.frame_graph(0, 1, self.fetch_offset == -1, self.contexts_to_caller)

    # -- sessions ---------------------------------------------------------------------------------------
    def attach(self) -> int:
        """A new session's id (its plans carry it)."""
        with self._cv:
            if self._closed:
                raise AgentClosedError("FrameEngine.attach: the engine is closed")
            session = next(self._ids)
            self._seen[session] = time.monotonic()
            return session

    def detach(self, session: int) -> None:
        """``session`` leaves: the workers drop its state with the next frame."""
        with self._cv:
            if self._seen.pop(session, None) is not None:
                self._leaving.append(session)
            self._robot.pop(session, None)
            self._cv.notify_all()  # the others may now be complete

    def same_robot(self, session: int, other: int) -> None:
        """``session`` belongs to the robot of ``other`` (an adaptive pipeline's new session beside the one
        it replaces, both stepped in turn by one thread): a frame runs when every robot has a plan waiting
        in one of its sessions, never waiting for the session that steps second."""
        with self._cv:
            self._robot[session] = self._robot.get(other, other)
            self._cv.notify_all()

    def reset_session(self, session: int) -> bool:
        """Workers in this process forget ``session``'s requests now (True); actors cannot be called
        between frames (False: the session's next plan says ``reset``)."""
        if self.group.hosted_policy is None:
            return False
        with self._cv:
            while self._running:  # never under a frame that is running in another thread
                self._cv.wait()
            if self._closed:
                return True  # nothing left to forget
            self._running = True
            leaving, self._leaving = tuple(self._leaving), []
        try:
            for worker in self.group.instances:
                worker.drop(leaving)  # sessions that left are gone first: "the only session" counts live ones
                worker.reset_session(session)
        finally:
            with self._cv:
                self._running = False
                self._cv.notify_all()
        return True

    # -- frames -----------------------------------------------------------------------------------------
    def run(self, plan: FramePlan, incarnation: int) -> tuple[tuple[ContextMessage, ...], Emitted | None]:
        """Run ``plan`` in the next frame of the engine (with whatever other sessions are waiting) and
        return the session's finished contexts and emitted action. Raises what the session's work raised,
        and WorkerDiedError when a worker died or when the workers were replaced since ``incarnation``
        (the session's requests are gone with them)."""
        call = _Call(plan, incarnation)
        self._cv.acquire()
        try:
            if self._closed:
                raise AgentClosedError("FrameEngine.run: the engine is closed")
            if incarnation != self.incarnation:
                raise WorkerDiedError(REPLACED)
            if plan.session not in self._seen:
                raise AgentClosedError(f"FrameEngine.run: session {plan.session} left the engine")
            self._seen[plan.session] = call.arrived
            self._waiting[plan.session] = call
            self._cv.notify_all()
            while not call.done:
                if self._closed:
                    raise AgentClosedError("FrameEngine.run: the engine was closed")
                wait = self._wait_s()
                if wait is None:
                    self._lead()
                else:
                    self._cv.wait(timeout=wait)
        finally:
            if not call.done:  # interrupted while waiting: the plan leaves the queue
                self._waiting.pop(plan.session, None)
            self._cv.release()
        if call.error is not None:
            if call.failed_in_worker and self.group.hosted_policy is None:  # raised in an actor
                raise StepFailedError(f"frame {plan.frame} failed in a worker: {call.error!r}") from call.error
            raise call.error
        assert call.result is not None
        return call.result

    def _wait_s(self) -> float | None:
        """None when a frame should run now (called with the lock held), else how long to wait."""
        if self._running or not self._waiting:
            return 0.05
        now = time.monotonic()
        # a plan that waited behind a running frame starts its wait when that frame ended
        oldest = max(min(c.arrived for c in self._waiting.values()), self._last_frame_end)
        left = self.wait_s - (now - oldest)
        if left <= 0:
            return None
        robot = self._robot.get
        active = {robot(s, s) for s, seen in self._seen.items() if now - seen <= self.active_window_s}
        if active <= {robot(s, s) for s in self._waiting}:
            return None
        return left

    def _lead(self) -> None:
        """Run one frame of every waiting plan (called with the lock held; released while it runs). A plan
        made before the workers were replaced, or of a session that has left, does not run."""
        calls = list(self._waiting.values())
        self._waiting.clear()
        leaving, self._leaving = tuple(self._leaving), []
        for call in calls:
            if call.incarnation != self.incarnation:
                call.error, call.done = WorkerDiedError(REPLACED), True
            elif call.plan.session not in self._seen:
                call.error, call.done = AgentClosedError(f"session {call.plan.session} left the engine"), True
        calls = [call for call in calls if not call.done]
        if not calls:
            self._leaving.extend(leaving)
            self._cv.notify_all()
            return
        self._running = True
        graph = self.graph
        self._cv.release()
        start = time.perf_counter()
        try:
            finished, emitted = graph(FrameBatch(tuple(c.plan for c in calls), leaving))
        except BaseException as exc:
            for call in calls:
                call.error = exc
        else:
            self._deliver(calls, finished, emitted)
        finally:
            busy = time.perf_counter() - start
            self._cv.acquire()
            self._running = False
            self.counters.frames += 1
            self.counters.plans += len(calls)
            self.counters.largest = max(self.counters.largest, len(calls))
            self.counters.busy_s += busy
            self._costs.setdefault(len(calls), collections.deque(maxlen=64)).append(busy)
            self._last_frame_end = time.monotonic()
            for call in calls:
                call.done = True
            self._cv.notify_all()

    @staticmethod
    def _deliver(calls: list[_Call], finished: tuple[Any, ...], emitted: tuple[Any, ...]) -> None:
        contexts: dict[int, list[ContextMessage]] = {}
        actions: dict[int, Emitted] = {}
        failures: dict[int, BaseException] = {}
        for message in (*finished, *emitted):
            if isinstance(message, SessionFailure):
                failures.setdefault(message.session, message.error)
            elif isinstance(message, ContextMessage):
                contexts.setdefault(message.session, []).append(message)
            elif isinstance(message, Emitted):
                actions[message.session] = message
        for call in calls:
            session = call.plan.session
            if session in failures:
                call.error, call.failed_in_worker = failures[session], True
            else:
                call.result = (tuple(contexts.get(session, ())), actions.get(session))

    # -- workers ----------------------------------------------------------------------------------------
    def replace(self, incarnation: int) -> None:
        """New workers, unless they were already replaced since ``incarnation`` (another session's recovery
        did it). Every session's requests are gone; each notices at its next frame. Raises
        WorkerDiedError if no worker can be started."""
        with self._cv:
            while self._running:
                self._cv.wait()
            if self._closed:
                raise AgentClosedError("FrameEngine.replace: the engine is closed")
            if incarnation != self.incarnation:
                return
            # from here on, plans made for the old workers are refused (at entry and in _lead)
            self.incarnation += 1
            self._running = True
        try:
            self._close_workers()
            self._place()
            self.counters.replacements += 1
        finally:
            with self._cv:
                self._leaving.clear()
                self._running = False
                self._cv.notify_all()

    def predicted_rate_hz(self, sessions: int) -> float | None:
        """The per-session action rate the engine can sustain with ``sessions`` sessions in every frame (one
        action per session per frame once their pipelines are full): 1 / the predicted frame time, from the
        frames it ran (the median cost of each frame size; a line through them for other sizes, at least
        the largest cost measured with no more sessions). None when no frame ran yet."""
        with self._cv:
            costs = {size: float(np.median(times)) for size, times in self._costs.items() if times}
        if not costs:
            return None
        if sessions in costs:
            seconds = costs[sessions]
        elif len(costs) >= 2:
            slope, intercept = np.polyfit(list(costs), list(costs.values()), 1)
            smaller = [cost for size, cost in costs.items() if size <= sessions]
            seconds = max(intercept + slope * sessions, max(smaller, default=min(costs.values())))
        else:
            (size, cost), = costs.items()
            seconds = cost * max(1.0, sessions / size)  # one size measured: no better than linear beyond it
        return 1.0 / seconds if seconds > 0 else None

    def admission_rate_hz(self) -> float | None:
        """The per-session rate predicted with one more session than are attached now."""
        return self.predicted_rate_hz(self.sessions + 1)

    stats_key = "engine"  # where a server's stats reply puts :meth:`stats`

    def stats(self) -> dict[str, Any]:
        """Robots attached (as :attr:`sessions` counts them), frames run, plans served, mean and largest frame
        (in sessions), worker replacements and the time the workers were busy."""
        with self._cv:
            return {"sessions": len({self._robot.get(s, s) for s in self._seen}), **self.counters.as_dict()}

    def workers(self) -> list[dict[str, Any]]:
        return self.group.describe()

    def close(self) -> None:
        """Release the workers; idempotent. Sessions still attached get AgentClosedError."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            while self._running:
                self._cv.wait()
        self._close_workers()

    def _close_workers(self) -> None:
        with contextlib.suppress(Exception):  # a dead worker's graph may fail to tear down
            self.graph.close()
        self.group.close()
