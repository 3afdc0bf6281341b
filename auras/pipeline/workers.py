"""The two workers of the frame executor and the messages between them.

A frame's work is described by a :class:`FramePlan`, made by the driver (``frames.py``), and carried
out by a :class:`PerceptionWorker` and a :class:`GenerationWorker`. Each worker owns its per-request
state (perception carries; generation states kept by the family driver), so only small, plain
messages cross between them: the plan (observations in), :class:`ContextMessage` (perception ->
generation) and :class:`Emitted` (generation -> driver). The same classes run in-process (``local``
backend) and inside Ray actors (``ray`` backend, ``transport`` ``host`` or ``pinned-host``: contexts
leave perception as host numpy arrays, which Ray channels move without pickling tensor storage, and
generation puts them on its own device; see :mod:`auras.context.tensors`).

How generation advances a request is its family driver's business
(:mod:`auras.generation.families`); the worker only batches the frame's stages, feeds each the
context it reads (the public store's freshest, or the request's own) and collects actions.

Request ids increase with admission, so the newest context is the one from the highest request id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auras.context.store import PublicContextStore
from auras.context.tensors import as_numpy, as_torch
from auras.errors import ConfigError
from auras.generation.families import driver_for
from auras.partition import split_evenly
from auras.perception.base import Context
from auras.policies.base import Policy, PolicySpec
from auras.types import Observation

__all__ = [
    "ContextMessage",
    "Emitted",
    "FramePlan",
    "GenerationWorker",
    "PerceptionTask",
    "PerceptionWorker",
    "check_pipelinable",
]

OBSERVATION_KEY = "observation"


@dataclass(frozen=True, slots=True)
class PerceptionTask:
    request: int
    stage: int  # perception stage this request runs this frame
    obs: Observation | None = None  # stage 0 only


@dataclass(frozen=True, slots=True)
class ContextMessage:
    """A context finished by perception in ``frame`` for ``request``."""

    request: int
    frame: int
    context: Context
    perception_ms: float


@dataclass(frozen=True, slots=True)
class FramePlan:
    """One frame's work. ``generation``: (request, generation stage); ``finishing``: the request whose
    last generation stage runs this frame; ``read_frame``: the newest context frame generation may read
    (``frame + fetch_offset``); ``carried``: contexts finished in the previous frame (fetch_offset -1,
    where perception and generation run concurrently); ``lent``: contexts another pipeline over the
    same policy perceived (a re-plan: the draining pipeline reads the new one's), published in the
    public context and owned by no request (ignored when generation is private). ``reset``: forget
    every request first."""

    frame: int
    perception: tuple[PerceptionTask, ...] = ()
    generation: tuple[tuple[int, int], ...] = ()
    finishing: int | None = None
    read_frame: int = 0
    carried: tuple[ContextMessage, ...] = ()
    lent: tuple[ContextMessage, ...] = ()
    reset: bool = False
    withdrawn: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Emitted:
    """The finishing request's action chunk (H, A) and where its inputs came from."""

    request: int
    values: np.ndarray
    context_request: int  # newest request whose context generation read for this action
    perception_ms: float
    generation_ms: float
    startup_ms: float | None = None  # set in the frame that ran the startup


def check_pipelinable(spec: PolicySpec, pp_perception: int, pp_generation: int, emit: str = "own") -> None:
    """Raise ConfigError unless a policy of ``spec`` can run in frames with these settings."""
    if not 1 <= pp_perception <= spec.perception_stages:
        raise ConfigError(
            f"pp_perception: expected 1..{spec.perception_stages} (policy {spec.name!r} has "
            f"{spec.perception_stages} perception stage(s)), got {pp_perception}"
        )
    if emit not in ("own", "public"):
        raise ConfigError(f"emit: expected 'own' or 'public', got {emit!r}")
    driver_for(spec.family).check_stages(spec.generation_iterations, pp_generation)


class PerceptionWorker:
    """Runs perception stages; the policy's natural stages are grouped into ``pp_perception`` groups."""

    def __init__(self, policy: Policy, *, pp_perception: int, device: str = "cpu",
                 transport: str = "in-process") -> None:
        natural = policy.perception.stages()
        if not 1 <= pp_perception <= len(natural):
            raise ConfigError(
                f"pp_perception: expected 1..{len(natural)} (policy {policy.name!r} has {len(natural)} "
                f"perception stage(s)), got {pp_perception}"
            )
        self.policy = policy
        self.stages = [_compose(natural[r.start : r.stop]) for r in split_evenly(len(natural), pp_perception)]
        self.transport = transport  # contexts leave as host numpy arrays unless in-process
        self._carry: dict[int, Any] = {}
        self._spent: dict[int, float] = {}

    def run(self, plan: FramePlan) -> tuple[ContextMessage, ...]:
        """Run this frame's perception tasks, oldest request first; return the finished contexts."""
        if plan.reset:
            self.reset()
        for request in plan.withdrawn:
            self._carry.pop(request, None)
            self._spent.pop(request, None)
        finished = []
        last = len(self.stages) - 1
        for task in sorted(plan.perception, key=lambda t: -t.stage):
            start = time.perf_counter()
            carry = self.stages[task.stage]([task.obs] if task.stage == 0 else self._carry.pop(task.request))
            spent = self._spent.pop(task.request, 0.0) + (time.perf_counter() - start) * 1e3
            if task.stage < last:
                self._carry[task.request], self._spent[task.request] = carry, spent
                continue
            if self.transport != "in-process":
                carry = as_numpy(carry, pinned=self.transport == "pinned-host")
            context = carry
            finished.append(ContextMessage(task.request, plan.frame, context, spent))
        return tuple(finished)

    def reset(self) -> None:
        self._carry.clear()
        self._spent.clear()
        self.policy.perception.reset()

    def describe(self) -> dict[str, Any]:
        return {"worker": "perception", "stages": len(self.stages), "in_flight": len(self._carry)}

    def close(self) -> None:
        """Nothing to release (the policy belongs to whoever hosts it)."""


class GenerationWorker:
    """Advances every request in generation by one stage per frame, in one batched call.

    Holds the generation side of the public context: a :class:`PublicContextStore` fed with the
    contexts perception finished (``public=True``; the family driver may keep its own public state
    there too, e.g. the autoregressive action tokens), or each request's own context
    (``public=False``). Reads are local, so the hot path takes no lock round trip to another process.
    ``device``: the hosting policy's device, where contexts that crossed processes are put.
    """

    def __init__(self, policy: Policy, *, pp_generation: int, public: bool, alpha: float = 0.0, emit: str = "own",
                 device: str = "cpu", transport: str = "in-process") -> None:
        self.policy, self.public = policy, public
        self.device = None if transport == "in-process" or device == "cpu" else device
        self.pinned = transport == "pinned-host"
        self.store = PublicContextStore()
        self.store.claim(OBSERVATION_KEY, "perception")
        self.driver = driver_for(policy.generation)(
            policy.generation, pp_generation, alpha, emit, self.store if public else None
        )
        self._own: dict[int, Context] = {}  # private contexts (public=False)
        self._state: dict[int, Any] = {}
        self._newest: dict[int, int] = {}
        self._spent: dict[int, float] = {}
        self._perception_ms: dict[int, float] = {}
        self.started = False

    def run(self, plan: FramePlan, incoming: Sequence[ContextMessage] = ()) -> Emitted | None:
        """Ingest ``incoming`` contexts (and ``plan.carried``, ``plan.lent``), run the frame's generation
        stages and return the finishing request's action, if one finishes this frame. Contexts are
        published oldest frame first, the newest request last within a frame, so the store's newest
        version is the freshest observation's."""
        if plan.reset:
            self.reset()
        for request in plan.withdrawn:
            for table in (self._own, self._state, self._newest, self._spent, self._perception_ms):
                table.pop(request, None)
        startup_ms = None
        lent = {m.request for m in plan.lent} if self.public else set()
        messages = (*plan.carried, *incoming, *(plan.lent if self.public else ()))
        for message in sorted(messages, key=lambda m: (m.frame, m.request)):
            context = as_torch(message.context, self.device, pinned=self.pinned)
            if self.public:
                self.store.write(OBSERVATION_KEY, context, message.frame, "perception", message.request)
            if message.request in lent:
                continue
            self._perception_ms[message.request] = message.perception_ms
            if not self.public:
                self._own[message.request] = context
            if not self.started:
                start = time.perf_counter()
                self.driver.startup(context)
                startup_ms, self.started = (time.perf_counter() - start) * 1e3, True
        if plan.generation:
            self._generate(plan)
        if plan.finishing is None:
            return None
        request = plan.finishing
        values = np.asarray(self.driver.finish(self._state.pop(request)), dtype=np.float32)
        self._own.pop(request, None)
        return Emitted(
            request,
            values,
            self._newest.pop(request, request),
            self._perception_ms.pop(request, 0.0),
            self._spent.pop(request, 0.0),
            startup_ms,
        )

    def _generate(self, plan: FramePlan) -> None:
        start = time.perf_counter()
        states, contexts = [], []
        snapshot = self.store.read(OBSERVATION_KEY, plan.read_frame) if self.public else None
        for request, stage in plan.generation:
            if stage == 0:
                self._state[request] = self.driver.start()
            if snapshot is not None:  # public: every request reads the one freshest context
                context, source = snapshot.value, snapshot.source
            else:
                context, source = self._own[request], request
            contexts.append(context)
            self._newest[request] = max(self._newest.get(request, -1), source)
            states.append(self._state[request])
        stages = [stage for _, stage in plan.generation]
        advanced = self.driver.run(states, stages, contexts)
        for (request, _), state in zip(plan.generation, advanced, strict=True):
            self._state[request] = state
        spent = (time.perf_counter() - start) * 1e3 / len(plan.generation)
        for request, _ in plan.generation:
            self._spent[request] = self._spent.get(request, 0.0) + spent

    def reset(self) -> None:
        self.store.clear()
        for table in (self._own, self._state, self._newest, self._spent, self._perception_ms):
            table.clear()
        self.started = False
        self.driver.reset()
        self.policy.generation.reset()

    def describe(self) -> dict[str, Any]:
        return {"worker": "generation", "public": self.public, "in_flight": len(self._state)}

    def close(self) -> None:
        """Nothing to release (the policy belongs to whoever hosts it)."""


def _compose(stages: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def run(x: Any) -> Any:
        for stage in stages:
            x = stage(x)
        return x

    return run
