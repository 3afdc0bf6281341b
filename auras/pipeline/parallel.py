"""`parallel` mode: N independent workers, each running the whole policy, with no coordination.

The baseline that shows what uncontrolled concurrency costs. ``step(obs)`` hands ``obs`` to a free
worker (when none is free the observation is dropped and counted) and returns the newest finished
action (older finished ones it overtook are counted as ``superseded``). It blocks for the first
action, and whenever every worker is busy until one finishes; while the pool fills (fewer than N
requests in flight and nothing new finished) it returns the previous action again (counted as
``repeats``). Once full, N requests are in flight and each call waits for the oldest: nothing
spaces the workers out, so actions come in bursts (high ``interval_cv``), each from an observation
about N calls old.

On the Ray backend a worker that dies or misses ``pipeline.worker_timeout_s`` is replaced alone (the
others keep their requests); that step raises WorkerRestartedError and the dead worker's request is lost.

Frames here are ``step`` calls: ``Action.frame`` is the call's index and ``staleness_frames`` the
number of calls since the action's observation was handed over.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

from auras.compiled import compile_stats
from auras.errors import StepFailedError, WorkerDiedError
from auras.pipeline.base import Executor, local_worker
from auras.pipeline.ray_backend import (
    LOCAL_CLUSTER,
    RayCluster,
    WorkerActor,
    actor_workers,
    place_actors,
    release,
    replace_actor,
    worker_errors,
)
from auras.pipeline.sequential import SequentialExecutor
from auras.policies.base import Policy, PolicySpec
from auras.types import Action, Observation, StepTimings

__all__ = ["ParallelExecutor", "PoolWorkerDiedError", "RayWorkerPool", "ThreadWorkerPool", "WorkerPool"]

RESULT_TIMEOUT_S = 300.0


class WorkerPool(Protocol):
    """N workers that each turn one observation into one action; ``spec``: the policy they host."""

    size: int
    spec: PolicySpec

    @property
    def busy(self) -> int:
        """Workers computing now."""

    def free(self) -> int:
        """Index of an idle worker, or -1 when all are busy."""

    def submit(self, worker: int, obs: Observation) -> None: ...

    def collect(self, block: bool) -> list[Action]:
        """Actions finished since the last call (waits for at least one when ``block`` and any is busy)."""

    def reset(self) -> list[PoolWorkerDiedError]:
        """Drop every request; returns the workers found dead on the way (the caller replaces them)."""

    def replace(self, worker: int) -> None:
        """Start a fresh worker after ``collect`` raised PoolWorkerDiedError for it."""

    def workers(self) -> list[dict[str, Any]]:
        """Where the workers run (entries as in ``Executor.workers``)."""

    def close(self) -> None: ...


class _Slots:
    """Which of ``size`` workers are busy (``_busy``: worker index -> its pending result)."""

    size: int
    _busy: dict[int, Any]

    @property
    def busy(self) -> int:
        return len(self._busy)

    def free(self) -> int:
        return next((i for i in range(self.size) if i not in self._busy), -1)


class ThreadWorkerPool(_Slots):
    """``size`` threads in this process sharing one policy (inference only, so no shared mutation)."""

    def __init__(self, policy: Policy, size: int) -> None:
        self.size, self.policy = size, policy
        self._sequential = SequentialExecutor(policy)
        self.spec = self._sequential.spec
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="auras-parallel")
        self._busy: dict[int, Future[Action]] = {}
        self.built_at = compile_stats()

    def submit(self, worker: int, obs: Observation) -> None:
        self._busy[worker] = self._pool.submit(self._sequential.step, obs)

    def collect(self, block: bool) -> list[Action]:
        if block and self._busy:
            wait(list(self._busy.values()), timeout=RESULT_TIMEOUT_S, return_when=FIRST_COMPLETED)
        done = [i for i, f in self._busy.items() if f.done()]
        return [self._busy.pop(i).result() for i in done]

    def reset(self) -> list[PoolWorkerDiedError]:
        wait(list(self._busy.values()))
        self._busy.clear()
        self._sequential.reset()
        return []  # threads of this process do not die on their own

    def replace(self, worker: int) -> None:
        raise NotImplementedError("thread workers are never reported dead")

    def workers(self) -> list[dict[str, Any]]:
        return [local_worker(f"{self.size} threads", self.built_at)]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _SequentialWorker:
    """What each Ray actor of the parallel pool runs: the whole policy, one observation at a time."""

    def __init__(self, policy: Policy) -> None:
        self.executor = SequentialExecutor(policy)

    def run(self, obs: Observation | None) -> Action | None:
        if obs is None:  # reset
            self.executor.reset()
            return None
        return self.executor.step(obs)


def _make_sequential_worker(policy: Policy, device: str) -> _SequentialWorker:
    return _SequentialWorker(policy)


class PoolWorkerDiedError(WorkerDiedError):
    """Worker ``worker`` of a pool died or missed its deadline; ``step_id``: the request it held."""

    def __init__(self, message: str, worker: int, step_id: int) -> None:
        super().__init__(message)
        self.worker, self.step_id = worker, step_id


class RayWorkerPool(_Slots):
    """``size`` Ray actors, each with its own copy of the policy, in one placement group.

    A worker that dies, or holds a request longer than ``timeout_s``, is reported by ``collect`` as a
    :class:`PoolWorkerDiedError` (results of the other workers collected in the same call are kept
    for the next call) and ``replace(worker)`` starts a fresh actor in its bundle.
    """

    def __init__(self, source: Any, size: int, timeout_s: float = RESULT_TIMEOUT_S,
                 cluster: RayCluster = LOCAL_CLUSTER) -> None:
        """``source``: the :class:`~auras.pipeline.ray_backend.PolicySource` each actor builds from;
        ``cluster``: where the actors go."""
        self.size, self.timeout_s, self.cluster = size, timeout_s, cluster
        self._args = (source, _make_sequential_worker)
        self.placement, self.actors = place_actors(WorkerActor, [self._args for _ in range(size)], source.device,
                                                   cluster=cluster)
        self.spec = cluster.connect().get(self.actors[0].spec.remote(), timeout=timeout_s)
        self._busy: dict[int, Any] = {}  # worker -> ObjectRef
        self._held: dict[int, tuple[int, float]] = {}  # worker -> (step id, monotonic when handed)
        self._kept: list[Action] = []  # finished alongside a failure; returned by the next collect

    def workers(self) -> list[dict[str, Any]]:
        return actor_workers(self.actors, [f"worker {i}" for i in range(self.size)], self.timeout_s)

    def submit(self, worker: int, obs: Observation) -> None:
        self._busy[worker] = self.actors[worker].run.remote(obs)
        self._held[worker] = (obs.step_id, time.monotonic())

    def collect(self, block: bool) -> list[Action]:
        ray = self.cluster.connect()
        if not self._busy:
            return self._take_kept()
        refs = list(self._busy.values())
        oldest = min(self._held[i][1] for i in self._busy)
        wait_s = max(0.0, oldest + self.timeout_s - time.monotonic()) if block and not self._kept else 0
        ready, _ = ray.wait(refs, num_returns=1 if wait_s else len(refs), timeout=wait_s)
        done = [i for i, ref in self._busy.items() if ref in ready]
        failed: PoolWorkerDiedError | None = None
        for i in done:
            ref = self._busy.pop(i)
            step_id, _ = self._held.pop(i)
            try:
                with worker_errors("parallel mode: a request"):
                    self._kept.append(ray.get(ref))
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
        """Start a fresh actor for ``worker`` (its request, if any, is lost)."""
        self._busy.pop(worker, None)
        self._held.pop(worker, None)
        self.actors[worker] = replace_actor(WorkerActor, self.placement, worker, self._args, self.actors[worker])

    def reset(self) -> list[PoolWorkerDiedError]:
        """Wait for busy workers, then reset every worker; returns the dead ones (for ``replace``)."""
        ray = self.cluster.connect()
        dead: list[PoolWorkerDiedError] = []
        for i in range(self.size):
            try:
                with worker_errors("parallel mode: reset"):
                    if i in self._busy:
                        ray.get(self._busy[i], timeout=self.timeout_s)
                    ray.get(self.actors[i].run.remote(None), timeout=self.timeout_s)
            except WorkerDiedError as exc:
                dead.append(PoolWorkerDiedError(str(exc), i, self._held.get(i, (-1, 0.0))[0]))
            except StepFailedError:
                pass  # a request that failed in the worker: its result is discarded by the reset anyway
        self._busy.clear()
        self._held.clear()
        self._kept.clear()
        return dead

    def close(self) -> None:
        release(self.placement, self.actors)
        self.actors = []


@dataclass
class _Handed:
    call: int
    at: float  # perf_counter when handed to a worker


class ParallelExecutor(Executor):
    def __init__(self, pool: WorkerPool) -> None:
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
        return self.pool.policy if isinstance(self.pool, ThreadWorkerPool) else None

    def workers(self) -> list[dict[str, Any]]:
        return self.pool.workers()  # each worker hosts the whole policy: contexts stay in-process

    def reset(self) -> None:
        for dead in self.pool.reset():  # no step to fail: the replacement is only recorded
            self.recover(dead, dead.step_id, partial(self.pool.replace, dead.worker), worker=dead.worker)
        self._handed.clear()
        self._last = None

    def close(self) -> None:
        self.pool.close()
