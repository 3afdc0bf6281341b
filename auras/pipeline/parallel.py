"""`parallel` mode: N independent workers, each running the whole policy, with no coordination.

The baseline that shows what uncontrolled concurrency costs. ``step(obs)`` hands ``obs`` to a free
worker (when none is free the observation is dropped and counted) and returns the newest finished
action (older finished ones it overtook are counted as ``superseded``). It blocks for the first
action, and whenever every worker is busy until one finishes; while the pool fills (fewer than N
requests in flight and nothing new finished) it returns the previous action again (counted as
``repeats``). Once full, N requests are in flight and each call waits for the oldest: nothing
spaces the workers out, so actions come in bursts (high ``interval_cv``), each from an observation
about N calls old.

A worker that dies or misses ``pipeline.worker_timeout_s`` is replaced alone (the others keep their
requests); that step raises WorkerRestartedError and the dead worker's request is lost. On the Ray backend
the worker is an actor and is killed; a thread cannot be killed, so a hung thread is abandoned.

Frames here are ``step`` calls: ``Action.frame`` is the call's index and ``staleness_frames`` the
number of calls since the action's observation was handed over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from auras.errors import StepFailedError, WorkerDiedError
from auras.pipeline.backend import Backend, WorkerRecipe, as_backend
from auras.pipeline.base import Executor
from auras.policies.base import Policy
from auras.types import Action, Observation, StepTimings

__all__ = ["ParallelExecutor", "PoolWorkerDiedError", "WholePolicyWorker", "WorkerPool"]


class WholePolicyWorker:
    """What each worker of the pool runs: the whole policy, one observation at a time."""

    def __init__(self, policy: Policy, *, device: str = "cpu", transport: str = "in-process") -> None:
        self.policy = policy

    def run(self, obs: Observation) -> Action:
        start = time.perf_counter()
        context = self.policy.perception.perceive([obs])
        perceived = time.perf_counter()
        values = self.policy.generation.generate(context)[0]
        done = time.perf_counter()
        stages = {"perception": (perceived - start) * 1e3, "generation": (done - perceived) * 1e3}
        return Action(values, obs.step_id, obs.capture_time, StepTimings(stages, (done - start) * 1e3),
                      context_step_id=obs.step_id)

    def reset(self) -> None:
        self.policy.reset()

    def describe(self) -> dict[str, Any]:
        return {"worker": "whole policy"}

    def close(self) -> None:
        """Nothing to release."""


class PoolWorkerDiedError(WorkerDiedError):
    """Worker ``worker`` of a pool died or missed its deadline; ``step_id``: the request it held."""

    def __init__(self, message: str, worker: int, step_id: int) -> None:
        super().__init__(message)
        self.worker, self.step_id = worker, step_id


class WorkerPool:
    """``size`` :class:`WholePolicyWorker` s placed on ``backend`` (threads over the one in-process policy,
    or Ray actors each with its own copy), each turning one observation into one action.

    A worker that dies, or holds a request longer than the backend's deadline, is reported by
    ``collect`` as a :class:`PoolWorkerDiedError` (results of the other workers collected in the same
    call are kept for the next call) and ``replace(worker)`` starts a fresh one in its place.
    """

    def __init__(self, backend: Backend, size: int) -> None:
        self.size = size
        self.group = backend.place([WorkerRecipe(f"worker {i}", WholePolicyWorker) for i in range(size)],
                                   threads=size)
        self.spec, self.timeout_s = self.group.spec, self.group.timeout_s
        self._busy: dict[int, Any] = {}  # worker -> pending result
        self._held: dict[int, tuple[int, float]] = {}  # worker -> (step id, monotonic when handed)
        self._kept: list[Action] = []  # finished alongside a failure; returned by the next collect

    @property
    def busy(self) -> int:
        """Workers computing now."""
        return len(self._busy)

    def free(self) -> int:
        """Index of an idle worker, or -1 when all are busy."""
        return next((i for i in range(self.size) if i not in self._busy), -1)

    def workers(self) -> list[dict[str, Any]]:
        return self.group.describe()

    def submit(self, worker: int, obs: Observation) -> None:
        self._busy[worker] = self.group.submit(worker, obs)
        self._held[worker] = (obs.step_id, time.monotonic())

    def collect(self, block: bool) -> list[Action]:
        """Actions finished since the last call (waits for at least one when ``block`` and any is busy)."""
        if not self._busy:
            return self._take_kept()
        pending = list(self._busy.values())
        oldest = min(self._held[i][1] for i in self._busy)
        wait_s = max(0.0, oldest + self.timeout_s - time.monotonic()) if block and not self._kept else 0.0
        ready = self.group.finished(pending, wait_s, first=bool(wait_s))
        done = [i for i, p in self._busy.items() if any(p is r for r in ready)]
        failed: PoolWorkerDiedError | None = None
        for i in done:
            result = self._busy.pop(i)
            step_id, _ = self._held.pop(i)
            try:
                self._kept.append(self.group.result(result))
            except WorkerDiedError as exc:
                failed = failed or PoolWorkerDiedError(str(exc), i, step_id)
        now = time.monotonic()
        overdue = [i for i in self._busy if now - self._held[i][1] >= self.timeout_s]
        if failed is None and overdue:  # a request held past the deadline: that worker hangs
            hung = min(overdue, key=lambda i: self._held[i][1])
            failed = PoolWorkerDiedError(
                f"parallel mode: worker {hung} did not answer within {self.timeout_s:.1f} s", hung, self._held[hung][0]
            )
        if failed is not None:
            raise failed
        return self._take_kept()

    def _take_kept(self) -> list[Action]:
        kept, self._kept = self._kept, []
        return kept

    def replace(self, worker: int) -> None:
        """Start a fresh worker for ``worker`` (its request, if any, is lost)."""
        self._busy.pop(worker, None)
        self._held.pop(worker, None)
        self.group.replace(worker)

    def reset(self) -> list[PoolWorkerDiedError]:
        """Wait for busy workers, then reset every worker; returns the dead ones (for ``replace``)."""
        dead: list[PoolWorkerDiedError] = []
        for i in range(self.size):
            try:
                if i in self._busy:
                    self.group.result(self._busy[i])
                self.group.reset(i)
            except WorkerDiedError as exc:
                dead.append(PoolWorkerDiedError(str(exc), i, self._held.get(i, (-1, 0.0))[0]))
            except Exception:  # a request that failed in the worker: the reset discards it anyway
                pass
        self._busy.clear()
        self._held.clear()
        self._kept.clear()
        return dead

    def close(self) -> None:
        self.group.close()


@dataclass
class _Handed:
    call: int
    at: float  # perf_counter when handed to a worker


class ParallelExecutor(Executor):
    def __init__(self, backend: Backend | Policy, workers: int) -> None:
        """``workers`` copies of the whole policy on ``backend`` (a Policy: threads in this process)."""
        pool = WorkerPool(as_backend(backend), workers)
        super().__init__(pool.spec)
        self.pool = pool
        self.calls = 0
        self.dropped = self.superseded = self.repeats = 0
        self.max_inflight = 0
        self._handed: dict[int, _Handed] = {}  # step_id -> when it was handed over
        self._last: Action | None = None

    def step(self, obs: Observation) -> Action:
        try:
            return self._step(obs)
        except PoolWorkerDiedError as exc:
            raise self.recover(exc, exc.step_id, partial(self.pool.replace, exc.worker), worker=exc.worker) from exc

    def _step(self, obs: Observation) -> Action:
        call = self.calls
        self.calls += 1
        if (worker := self.pool.free()) >= 0:
            self._hand(worker, obs, call)
        else:
            self.dropped += 1
        self.max_inflight = max(self.max_inflight, self.pool.busy)
        newest = self._last.step_id if self._last is not None else -1
        while True:
            must_wait = self._last is None or self.pool.free() < 0  # first action, or every worker busy
            if must_wait and not self.pool.busy:
                raise StepFailedError("parallel mode: no worker is busy and no new action arrived")
            fresh = [a for a in self.pool.collect(block=must_wait) if a.step_id > newest]
            if fresh:
                fresh.sort(key=lambda a: a.step_id)
                self.superseded += len(fresh) - 1
                return self._finish(fresh[-1], call)
            if not must_wait:  # filling: a worker is idle and nothing new finished yet
                self.repeats += 1
                return self._last  # type: ignore[return-value]

    def _hand(self, worker: int, obs: Observation, call: int) -> None:
        self._handed[obs.step_id] = _Handed(call, self.clock.now())
        self.pool.submit(worker, obs)

    def _finish(self, action: Action, call: int) -> Action:
        handed = self._handed.pop(action.step_id, None)
        for step_id in [s for s in self._handed if s < action.step_id]:
            del self._handed[step_id]  # overtaken; keeps the table small
        now = self.clock.now()
        self._last = replace(
            action,
            timings=StepTimings(
                stages_ms=dict(action.timings.stages_ms),
                latency_ms=(now - handed.at) * 1e3 if handed else action.timings.latency_ms,
            ),
            context_step_id=action.step_id,
            staleness_frames=call - handed.call if handed else None,
            staleness_ms=(now - action.capture_time) * 1e3,
            frame=call,
        )
        return self._last

    @property
    def hosted_policy(self) -> Policy | None:
        return self.pool.group.hosted_policy

    def workers(self) -> list[dict[str, Any]]:
        return self.pool.workers()  # each worker hosts the whole policy: contexts stay in-process

    def reset(self) -> None:
        for dead in self.pool.reset():  # no step to fail: the replacement is only recorded
            self.recover(dead, dead.step_id, partial(self.pool.replace, dead.worker), worker=dead.worker)
        self._handed.clear()
        self._last = None

    def close(self) -> None:
        self.pool.close()
