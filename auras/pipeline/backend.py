"""The seam between executors and where their workers run.

An executor (``frames.py``, ``parts.py``, ``parallel.py``) only schedules: it decides what each worker
runs and when. A :class:`Worker` owns its half of the policy on its device and does the computation. A
:class:`Backend` places workers (from :class:`WorkerRecipe`s) as a :class:`WorkerGroup`, and the group is
all an executor talks to: submit a call, wait for it, reset or replace a worker, describe where each runs,
and run a frame through a perception/generation pair. Two backends implement it:

- :class:`ThreadBackend` (``local``): the workers live in this process and share the one policy it hosts;
  a call runs in the caller's thread, or in a pool of threads when the executor wants them concurrently
  (parallel mode). Contexts stay torch tensors (transport ``in-process``).
- :class:`~auras.pipeline.ray_backend.RayBackend` (``ray``): each worker is a Ray actor that builds its own
  copy of the policy on the device Ray assigned it; contexts travel as host numpy arrays.

The executors are one implementation each over this seam, so a mode behaves the same on both backends.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

from auras.compiled import compile_stats
from auras.errors import WorkerDiedError
from auras.pipeline.base import local_worker
from auras.pipeline.streams import StagePairStreams
from auras.pipeline.workers import ContextMessage
from auras.policies.base import Policy, PolicySpec

__all__ = [
    "Backend",
    "FrameGraph",
    "ThreadBackend",
    "ThreadGroup",
    "Worker",
    "WorkerGroup",
    "WorkerRecipe",
    "as_backend",
]

WORKER_TIMEOUT_S = 300.0


class Worker(Protocol):
    """One worker: built where it runs, over the policy hosted there. ``run`` does one unit of work (a
    frame's stages, one request's perception, one whole request); ``reset`` forgets per-episode state
    (a new episode); ``describe`` says what it is; ``close`` releases what it holds."""

    def run(self, *args: Any) -> Any: ...

    def reset(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerRecipe:
    """How to build one worker where it runs: ``kind(policy, device=..., transport=..., **settings)``.
    Picklable, so a Ray actor can build the worker itself. ``role`` names it in reports."""

    role: str
    kind: Callable[..., Worker]
    settings: dict[str, Any] = field(default_factory=dict)

    def build(self, policy: Policy, device: str, transport: str) -> Worker:
        return self.kind(policy, device=device, transport=transport, **self.settings)


class FrameGraph(Protocol):
    """A perception worker and a generation worker wired for frames: ``plan -> (contexts perception
    finished, what generation emitted)``. ``concurrent`` (fetch_offset -1): both get the plan at once;
    otherwise perception's contexts go straight to generation. Contexts come back to the caller when
    the graph was made with ``contexts_to_caller`` or is concurrent (they ride along with the next plan)."""

    def __call__(self, plan: Any) -> tuple[tuple[Any, ...], Any]: ...

    def close(self) -> None: ...


class WorkerGroup(ABC):
    """Workers placed by one backend, addressed by index (the order of their recipes).

    ``spec``: the hosted policy's description; ``context_transport``: how contexts travel between the
    workers (a key of ``auras.context.tensors.TRANSPORTS``); ``hosted_policy``: the policy object when
    this process hosts it, else None. A call answers with a pending result (``submit``) that may be passed
    as an argument to another worker's call; ``result`` waits for it. Errors: a worker that died or missed
    ``timeout_s`` raises WorkerDiedError (``replace`` starts a fresh one); an exception raised by a worker's
    code is raised as it is in this process, or as StepFailedError naming it from another process."""

    spec: PolicySpec
    context_transport: str
    timeout_s: float

    @property
    def hosted_policy(self) -> Policy | None:
        return None

    @abstractmethod
    def submit(self, index: int, *args: Any) -> Any:
        """Start worker ``index``'s ``run(*args)``; return its pending result."""

    @abstractmethod
    def result(self, pending: Any, timeout_s: float | None = None) -> Any:
        """Wait for ``pending`` (at most ``timeout_s``, default the group's deadline) and return it."""

    @abstractmethod
    def finished(self, pending: Sequence[Any], timeout_s: float, first: bool = True) -> list[Any]:
        """Those of ``pending`` that are done, after waiting up to ``timeout_s`` for the first of them
        (``first``) or for all."""

    @abstractmethod
    def reset(self, index: int) -> None:
        """Worker ``index`` forgets per-episode state (a new episode)."""

    @abstractmethod
    def replace(self, index: int) -> None:
        """Kill worker ``index`` (dead, hung or alive) and start a fresh one in its place."""

    @abstractmethod
    def frame_graph(self, perception: int, generation: int, concurrent: bool,
                    contexts_to_caller: bool = False) -> FrameGraph:
        """Wire workers ``perception`` and ``generation`` (a PerceptionWorker and a GenerationWorker)
        for frames."""

    @abstractmethod
    def describe(self) -> list[dict[str, Any]]:
        """``Executor.workers`` entries: where each worker runs."""

    @abstractmethod
    def close(self) -> None:
        """Release every worker; idempotent."""


class Backend(ABC):
    """Places workers: in this process (threads) or as Ray actors."""

    name: str

    @property
    def spec(self) -> PolicySpec | None:
        """The policy's description when known before any worker exists (local), else None."""
        return None

    @abstractmethod
    def place(self, recipes: Sequence[WorkerRecipe], threads: int = 0) -> WorkerGroup:
        """Build one worker per recipe. ``threads`` (thread backend): run calls in a pool of that many
        threads instead of the caller's thread (Ray actors always run concurrently with the caller)."""


class ThreadBackend(Backend):
    """Workers in this process over one hosted ``policy`` (on ``device``); see the module docstring."""

    name = "local"

    def __init__(self, policy: Policy, device: str = "cpu", timeout_s: float = WORKER_TIMEOUT_S) -> None:
        self.policy, self.device, self.timeout_s = policy, device, timeout_s

    @property
    def spec(self) -> PolicySpec:
        return self.policy.spec

    def place(self, recipes: Sequence[WorkerRecipe], threads: int = 0) -> ThreadGroup:
        return ThreadGroup(self.policy, self.device, recipes, threads, self.timeout_s)


class ThreadGroup(WorkerGroup):
    """Workers as objects of this process (``instances``). Without ``threads`` a call runs at once in the
    caller's thread (its exception is raised by ``submit``); with them, in a pool. A thread cannot be
    killed: ``replace`` builds a fresh worker and abandons a hung call's thread."""

    context_transport = "in-process"

    def __init__(self, policy: Policy, device: str, recipes: Sequence[WorkerRecipe], threads: int = 0,
                 timeout_s: float = WORKER_TIMEOUT_S) -> None:
        self.policy, self.device, self.recipes, self.timeout_s = policy, device, list(recipes), timeout_s
        self.spec = policy.spec
        self.instances = [r.build(policy, device, self.context_transport) for r in self.recipes]
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="auras-worker") if threads else None
        self.threads = threads
        self.built_at = compile_stats()

    @property
    def hosted_policy(self) -> Policy:
        return self.policy

    def submit(self, index: int, *args: Any) -> Future[Any]:
        args = tuple(a.result() if isinstance(a, Future) else a for a in args)
        if self._pool is not None:
            return self._pool.submit(self.instances[index].run, *args)
        done: Future[Any] = Future()
        done.set_result(self.instances[index].run(*args))
        return done

    def result(self, pending: Future[Any], timeout_s: float | None = None) -> Any:
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            return pending.result(timeout=wait_s)
        except FutureTimeout as exc:
            raise WorkerDiedError(f"local backend: no answer within the worker deadline ({wait_s:.1f} s)") from exc

    def finished(self, pending: Sequence[Future[Any]], timeout_s: float, first: bool = True) -> list[Future[Any]]:
        done, _ = wait(list(pending), timeout=timeout_s, return_when=FIRST_COMPLETED if first else ALL_COMPLETED)
        return [p for p in pending if p in done]

    def reset(self, index: int) -> None:
        self.instances[index].reset()

    def replace(self, index: int) -> None:
        """A fresh worker in slot ``index``. With a pool, later calls go to a fresh pool too: the old one
        may hold the replaced worker's hung call on one of its threads (left to finish; never waited for)."""
        with contextlib.suppress(Exception):
            self.instances[index].close()
        self.instances[index] = self.recipes[index].build(self.policy, self.device, self.context_transport)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="auras-worker")

    def frame_graph(self, perception: int, generation: int, concurrent: bool,
                    contexts_to_caller: bool = False) -> ThreadFrameGraph:
        return ThreadFrameGraph(self.instances[perception], self.instances[generation], concurrent, self.device)

    def describe(self) -> list[dict[str, Any]]:
        roles = [r.role for r in self.recipes]
        label = f"{len(roles)} threads" if self.threads else "+".join(dict.fromkeys(roles))
        return [{**local_worker(label, self.built_at), "workers": [w.describe() for w in self.instances]}]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for worker in self.instances:
            worker.close()


def as_backend(where: Backend | Policy) -> Backend:
    """``where`` itself, or a policy as the thread backend hosting it in this process (on the CPU)."""
    return where if isinstance(where, Backend) else ThreadBackend(where)


class ThreadFrameGraph:
    """Frames in this process. Sequential: perception, then generation with its contexts, in the caller's
    thread. Concurrent: perception runs in a worker thread while generation runs in the caller's, and on a
    GPU each on its own CUDA stream (``streams``); every context perception finished comes back."""

    def __init__(self, perception: Worker, generation: Worker, concurrent: bool, device: str = "cpu") -> None:
        self.perception, self.generation, self.concurrent = perception, generation, concurrent
        self.streams = StagePairStreams(device if concurrent else "cpu")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auras-perception") if concurrent else None

    def __call__(self, plan: Any) -> tuple[tuple[Any, ...], Any]:
        if self._pool is None:
            finished = self.perception.run(plan)
            return finished, self.generation.run(plan, finished)
        pending = self._pool.submit(self._perceive, plan)
        try:
            with self.streams.on("generation"):
                emitted = self.generation.run(plan)
        finally:
            finished = pending.result()
        return finished, emitted

    def _perceive(self, plan: Any) -> tuple[Any, ...]:
        with self.streams.on("perception"):
            finished = self.perception.run(plan)
        self.streams.hand_over(m.context for m in finished if isinstance(m, ContextMessage))  # read next frame
        return finished

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@contextlib.contextmanager
def closing_on_error(group: WorkerGroup) -> Iterator[WorkerGroup]:
    """Close ``group`` if the block raises (a check after placement failed: leave nothing running)."""
    try:
        yield group
    except BaseException:
        group.close()
        raise
