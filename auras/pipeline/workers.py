"""The two workers of a frame engine and the messages between them.

A frame's work is a :class:`FrameBatch`: one :class:`FramePlan` per session (a robot's pipeline,
planned by its :class:`~auras.pipeline.frames.FrameExecutor`) that takes part in the frame, carried out
by one :class:`PerceptionWorker` and one :class:`GenerationWorker` over one policy (see
:mod:`auras.pipeline.engine`). The workers keep every session's state apart (perception carries;
generation's public context store, family driver, request states and noise generator), and batch the
frame's work across sessions: one perception call per stage over every session's requests at that
stage, and one generation call (:meth:`~auras.generation.families.FamilyDriver.run_jobs`) over every
session's requests in generation. A session's rows are computed exactly as when it runs alone; only
the batch they share a kernel call with differs. Only small, plain messages cross between the workers:
the batch (observations in), :class:`ContextMessage` (perception -> generation) and :class:`Emitted`
(generation -> driver), each naming its session, and a :class:`SessionFailure` where a session's rows
raised (retried alone first, so one robot's failure never fails another robot's frame).

The same classes run in-process (``local`` backend) and inside Ray actors (``ray`` backend,
``transport`` ``host`` or ``pinned-host``: contexts leave perception as host numpy arrays, which Ray
channels move without pickling tensor storage, and generation puts them on its own device; see
:mod:`auras.context.tensors`).

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
from auras.context.tensors import as_numpy, as_torch, concat_rows, split_rows
from auras.errors import ConfigError, InvalidInputError
from auras.generation.families import FamilyDriver, GenerationJob, driver_for
from auras.partition import split_evenly
from auras.perception.base import Context
from auras.policies.base import Policy, PolicySpec
from auras.types import Observation

__all__ = [
    "ContextMessage",
    "Emitted",
    "FrameBatch",
    "FramePlan",
    "GenerationWorker",
    "PerceptionTask",
    "PerceptionWorker",
    "SessionFailure",
    "SessionSettings",
    "check_pipelinable",
]

OBSERVATION_KEY = "observation"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session's workers need to know of its pipeline: perception degree, generation degree,
    public (``auras``) or private (``pipeline``) contexts, step skew and what it emits."""

    pp_perception: int = 1
    pp_generation: int = 1
    public: bool = True
    alpha: float = 0.0
    emit: str = "own"


@dataclass(frozen=True, slots=True)
class PerceptionTask:
    request: int
    stage: int  # perception stage this request runs this frame
    obs: Observation | None = None  # stage 0 only


@dataclass(frozen=True, slots=True)
class ContextMessage:
    """A context finished by perception in ``frame`` for ``request`` of ``session``."""

    request: int
    frame: int
    context: Context
    perception_ms: float
    session: int = 0


@dataclass(frozen=True, slots=True)
class FramePlan:
    """One session's share of a frame. ``generation``: (request, generation stage); ``finishing``: the
    request whose last generation stage runs this frame; ``read_frame``: the newest context frame
    generation may read (``frame + fetch_offset``); ``carried``: contexts finished in the session's
    previous frame (fetch_offset -1, where perception and generation run concurrently); ``lent``: contexts
    another pipeline over the same policy perceived (a re-plan: the draining pipeline reads the new
    one's), published in the public context and owned by no request (ignored when generation is
    private). ``reset``: forget the session's requests first; ``withdrawn``: requests to forget.
    Frame numbers and request ids are the session's own."""

    frame: int
    perception: tuple[PerceptionTask, ...] = ()
    generation: tuple[tuple[int, int], ...] = ()
    finishing: int | None = None
    read_frame: int = 0
    carried: tuple[ContextMessage, ...] = ()
    lent: tuple[ContextMessage, ...] = ()
    reset: bool = False
    withdrawn: tuple[int, ...] = ()
    session: int = 0
    settings: SessionSettings = SessionSettings()


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """One frame of an engine: the plans of the sessions taking part (at most one per session), and the
    sessions that left since the last frame (their state is dropped)."""

    plans: tuple[FramePlan, ...] = ()
    closed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Emitted:
    """The finishing request's action chunk (H, A) and where its inputs came from."""

    request: int
    values: np.ndarray
    context_request: int  # newest request whose context generation read for this action
    perception_ms: float
    generation_ms: float
    startup_ms: float | None = None  # set in the frame that ran the startup
    session: int = 0


@dataclass(frozen=True, slots=True)
class SessionFailure:
    """A session's work raised in a worker this frame (alone, after a batched call failed): ``error``
    is the exception. The session's other work this frame did not run."""

    session: int
    error: BaseException


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


def as_batch(work: FrameBatch | FramePlan) -> FrameBatch:
    """A frame's work as a batch (a lone plan is a batch of one session)."""
    return work if isinstance(work, FrameBatch) else FrameBatch((work,))


def run_alone_on_failure(call: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
    """``call(items)``, a batched call returning one result per item; if it raises and holds more than one
    item, each item is run alone, and an item that still raises gets its exception as its result."""
    try:
        return call(items)
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    results = []
    for item in items:
        try:
            results.extend(call([item]))
        except Exception as exc:
            results.append(exc)
    return results


class _PerceptionSession:
    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.carry: dict[int, Any] = {}
        self.spent: dict[int, float] = {}

    def forget(self, requests: Sequence[int] | None = None) -> None:
        for request in requests if requests is not None else list(self.carry):
            self.carry.pop(request, None)
            self.spent.pop(request, None)


class PerceptionWorker:
    """Runs perception stages of every session; the policy's natural stages are grouped into each
    session's ``pp_perception`` groups. Requests at the same stage (of sessions with the same degree)
    run as one batched call; the carries of later stages are joined and split by rows
    (:func:`~auras.context.tensors.concat_rows`), or run one by one where they are not batch-first."""

    def __init__(self, policy: Policy, *, device: str = "cpu", transport: str = "in-process") -> None:
        self.policy = policy
        self.natural = policy.perception.stages()
        self.transport = transport  # contexts leave as host numpy arrays unless in-process
        self._stages: dict[int, list[Callable[[Any], Any]]] = {}
        self.sessions: dict[int, _PerceptionSession] = {}

    def stages(self, pp_perception: int) -> list[Callable[[Any], Any]]:
        """The policy's natural stages grouped into ``pp_perception`` stages."""
        if pp_perception not in self._stages:
            if not 1 <= pp_perception <= len(self.natural):
                raise ConfigError(
                    f"pp_perception: expected 1..{len(self.natural)} (policy {self.policy.name!r} has "
                    f"{len(self.natural)} perception stage(s)), got {pp_perception}"
                )
            self._stages[pp_perception] = [
                _compose(self.natural[r.start : r.stop]) for r in split_evenly(len(self.natural), pp_perception)
            ]
        return self._stages[pp_perception]

    def run(self, work: FrameBatch | FramePlan) -> tuple[ContextMessage | SessionFailure, ...]:
        """Run this frame's perception tasks, later stages first; return the finished contexts (and a
        failure per session whose work raised)."""
        batch = as_batch(work)
        self.drop(batch.closed)
        groups: dict[tuple[int, int], list[tuple[FramePlan, PerceptionTask]]] = {}
        for plan in batch.plans:
            state = self._session(plan)
            if plan.reset:
                self.reset_session(plan.session)
            state.forget(plan.withdrawn)
            for task in plan.perception:
                groups.setdefault((plan.settings.pp_perception, task.stage), []).append((plan, task))
        failed: dict[int, BaseException] = {}
        finished: list[ContextMessage] = []
        for (pp, stage), items in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
            items = [(plan, task) for plan, task in items if plan.session not in failed]
            if not items:
                continue
            start = time.perf_counter()
            outputs = run_alone_on_failure(lambda group, pp=pp, stage=stage: self._run_stage(pp, stage, group), items)
            each_ms = (time.perf_counter() - start) * 1e3 / len(items)
            last = stage == len(self.stages(pp)) - 1
            for (plan, task), carry in zip(items, outputs, strict=True):
                state = self.sessions[plan.session]
                if isinstance(carry, BaseException):
                    failed[plan.session] = carry
                    state.forget([task.request])
                    continue
                state.carry.pop(task.request, None)
                spent = state.spent.pop(task.request, 0.0) + each_ms
                if not last:
                    state.carry[task.request], state.spent[task.request] = carry, spent
                    continue
                if self.transport != "in-process":
                    try:
                        carry = as_numpy(carry, pinned=self.transport == "pinned-host")
                    except Exception as exc:  # this session's context cannot travel: it fails alone
                        failed[plan.session] = exc
                        continue
                finished.append(ContextMessage(task.request, plan.frame, carry, spent, plan.session))
        out: list[ContextMessage | SessionFailure] = [m for m in finished if m.session not in failed]
        out += [SessionFailure(session, error) for session, error in failed.items()]
        return tuple(out)

    def _run_stage(self, pp: int, stage: int, items: list[tuple[FramePlan, PerceptionTask]]) -> list[Any]:
        """One call of stage ``stage`` over every item's request (rows in item order); one output each."""
        call = self.stages(pp)[stage]
        if stage == 0:
            inputs: Any = [task.obs for _, task in items]
        else:
            carries = [self.sessions[plan.session].carry[task.request] for plan, task in items]
            if len(carries) == 1:
                return [call(carries[0])]
            try:
                inputs = concat_rows(carries)
            except (TypeError, InvalidInputError):  # not batch-first: one call per request
                return [call(carry) for carry in carries]
        output = call(inputs)
        if len(items) == 1:
            return [output]
        try:
            return split_rows(output, [1] * len(items))
        except TypeError:  # an output that is not batch-first: one call per request
            if stage == 0:
                return [call([task.obs]) for _, task in items]
            return [call(self.sessions[plan.session].carry[task.request]) for plan, task in items]

    def _session(self, plan: FramePlan) -> _PerceptionSession:
        state = self.sessions.get(plan.session)
        if state is None or state.settings != plan.settings:
            self.stages(plan.settings.pp_perception)  # checks the degree
            state = self.sessions[plan.session] = _PerceptionSession(plan.settings)
        return state

    def drop(self, sessions: Sequence[int]) -> None:
        """Sessions that left the engine: their state goes."""
        for session in sessions:
            self.sessions.pop(session, None)

    def reset_session(self, session: int) -> None:
        """Forget ``session``'s requests; the policy's per-episode state too when it is the only session."""
        state = self.sessions.get(session)
        if state is not None:
            state.forget()
        if set(self.sessions) <= {session}:
            self.policy.perception.reset()

    def reset(self) -> None:
        for state in self.sessions.values():
            state.forget()
        self.policy.perception.reset()

    def describe(self) -> dict[str, Any]:
        sessions = list(self.sessions.values())  # frames may add or drop sessions meanwhile
        return {"worker": "perception", "sessions": len(sessions), "in_flight": sum(len(s.carry) for s in sessions)}

    def close(self) -> None:
        """Nothing to release (the policy belongs to whoever hosts it)."""


class _GenerationSession:
    """One session's generation state: its public context store, its family driver, its requests."""

    def __init__(self, policy: Policy, settings: SessionSettings) -> None:
        self.settings, self.public = settings, settings.public
        self.store = PublicContextStore()
        self.store.claim(OBSERVATION_KEY, "perception")
        self.driver: FamilyDriver = driver_for(policy.generation)(
            policy.generation, settings.pp_generation, settings.alpha, settings.emit,
            self.store if settings.public else None,
        )
        self.own: dict[int, Context] = {}  # private contexts (public=False)
        self.state: dict[int, Any] = {}
        self.newest: dict[int, int] = {}
        self.spent: dict[int, float] = {}
        self.perception_ms: dict[int, float] = {}
        self.started = False
        self.startup_ms: float | None = None

    def forget(self, requests: Sequence[int] | None = None) -> None:
        tables = (self.own, self.state, self.newest, self.spent, self.perception_ms)
        if requests is None:
            for table in tables:
                table.clear()
            self.store.clear()
            self.started = False
            self.driver.reset()
            return
        for request in requests:
            for table in tables:
                table.pop(request, None)


class GenerationWorker:
    """Advances every session's requests in generation by one stage per frame, in one batched call.

    Holds, per session, the generation side of the public context: a :class:`PublicContextStore` fed
    with the contexts perception finished (``public=True``; the family driver may keep its own public
    state there too, e.g. the autoregressive action tokens), or each request's own context
    (``public=False``). Reads are local, so the hot path takes no lock round trip to another process.
    ``device``: the hosting policy's device, where contexts that crossed processes are put.
    """

    def __init__(self, policy: Policy, *, device: str = "cpu", transport: str = "in-process") -> None:
        self.policy = policy
        self.family = driver_for(policy.generation)
        self.device = None if transport == "in-process" or device == "cpu" else device
        self.pinned = transport == "pinned-host"
        self.sessions: dict[int, _GenerationSession] = {}

    def run(self, work: FrameBatch | FramePlan,
            incoming: Sequence[ContextMessage | SessionFailure] = ()) -> tuple[Emitted | SessionFailure, ...]:
        """Ingest ``incoming`` contexts (and each plan's ``carried`` and ``lent``), run every session's
        generation stages in one batched call and return the actions of the requests finishing this frame,
        and a failure per session whose work raised (in perception or here). Contexts are published oldest
        frame first, the newest request last within a frame, so a store's newest version is the freshest
        observation's."""
        batch = as_batch(work)
        self.drop(batch.closed)
        out: list[Emitted | SessionFailure] = []
        failed = {m.session: m for m in incoming if isinstance(m, SessionFailure)}
        arrived: dict[int, list[ContextMessage]] = {}
        for message in incoming:
            if isinstance(message, ContextMessage):
                arrived.setdefault(message.session, []).append(message)
        ready: list[tuple[FramePlan, _GenerationSession]] = []
        for plan in batch.plans:
            if plan.session in failed:
                out.append(failed[plan.session])
                continue
            state = self._session(plan)
            try:
                if plan.reset:
                    self.reset_session(plan.session)
                state.forget(plan.withdrawn)
                self._ingest(plan, state, arrived.get(plan.session, ()))
                for request, stage in plan.generation:
                    if stage == 0:
                        state.state[request] = state.driver.start()
            except Exception as exc:
                out.append(SessionFailure(plan.session, exc))
                continue
            ready.append((plan, state))
        advanced = self._generate([(plan, state) for plan, state in ready if plan.generation])
        for plan, state in ready:
            error = advanced.get(plan.session)
            if error is not None:
                out.append(SessionFailure(plan.session, error))
            elif plan.finishing is not None:
                try:
                    out.append(self._finish(plan, state))
                except Exception as exc:
                    out.append(SessionFailure(plan.session, exc))
        return tuple(out)

    def _ingest(self, plan: FramePlan, state: _GenerationSession, incoming: Sequence[ContextMessage]) -> None:
        lent = {m.request for m in plan.lent} if state.public else set()
        messages = (*plan.carried, *incoming, *(plan.lent if state.public else ()))
        for message in sorted(messages, key=lambda m: (m.frame, m.request)):
            context = as_torch(message.context, self.device, pinned=self.pinned)
            if state.public:
                state.store.write(OBSERVATION_KEY, context, message.frame, "perception", message.request)
            if message.request in lent:
                continue
            state.perception_ms[message.request] = message.perception_ms
            if not state.public:
                state.own[message.request] = context
            if not state.started:
                start = time.perf_counter()
                state.driver.startup(context)
                state.startup_ms, state.started = (time.perf_counter() - start) * 1e3, True

    def _generate(self, ready: list[tuple[FramePlan, _GenerationSession]]) -> dict[int, BaseException | None]:
        """One batched call over every ready session's requests; per session, None or what it raised."""
        if not ready:
            return {}
        start = time.perf_counter()
        outcome: dict[int, BaseException | None] = {}
        jobs, batched = [], []
        for plan, state in ready:
            try:  # a session whose inputs are not there fails alone
                jobs.append(self._job(plan, state))
                batched.append((plan, state))
            except Exception as exc:
                outcome[plan.session] = exc
        results = run_alone_on_failure(self.family.run_jobs, jobs) if jobs else []
        rows = sum(len(plan.generation) for plan, _ in batched)
        spent = (time.perf_counter() - start) * 1e3 / max(1, rows)
        for (plan, state), advanced in zip(batched, results, strict=True):
            if isinstance(advanced, BaseException):
                outcome[plan.session] = advanced
                continue
            outcome[plan.session] = None
            for (request, _), value in zip(plan.generation, advanced, strict=True):
                state.state[request] = value
                state.spent[request] = state.spent.get(request, 0.0) + spent
        return outcome

    @staticmethod
    def _job(plan: FramePlan, state: _GenerationSession) -> GenerationJob:
        """The session's share of this frame's generation call: per request, its state, stage and context."""
        snapshot = state.store.read(OBSERVATION_KEY, plan.read_frame) if state.public else None
        states, contexts = [], []
        for request, _ in plan.generation:
            if snapshot is not None:  # public: every request reads the one freshest context
                context, source = snapshot.value, snapshot.source
            else:
                context, source = state.own[request], request
            contexts.append(context)
            states.append(state.state[request])
            state.newest[request] = max(state.newest.get(request, -1), source)
        return GenerationJob(state.driver, states, [stage for _, stage in plan.generation], contexts)

    def _finish(self, plan: FramePlan, state: _GenerationSession) -> Emitted:
        request = plan.finishing
        values = np.asarray(state.driver.finish(state.state.pop(request)), dtype=np.float32)
        state.own.pop(request, None)
        startup_ms, state.startup_ms = state.startup_ms, None
        return Emitted(
            request,
            values,
            state.newest.pop(request, request),
            state.perception_ms.pop(request, 0.0),
            state.spent.pop(request, 0.0),
            startup_ms,
            plan.session,
        )

    def _session(self, plan: FramePlan) -> _GenerationSession:
        state = self.sessions.get(plan.session)
        if state is None or state.settings != plan.settings:
            state = self.sessions[plan.session] = _GenerationSession(self.policy, plan.settings)
        return state

    def drop(self, sessions: Sequence[int]) -> None:
        """Sessions that left the engine: their state goes."""
        for session in sessions:
            self.sessions.pop(session, None)

    def reset_session(self, session: int) -> None:
        """Forget ``session``'s requests, public context and driver state; the policy's per-episode state
        too when it is the only session."""
        state = self.sessions.get(session)
        if state is not None:
            state.forget()
        if set(self.sessions) <= {session}:
            self.policy.generation.reset()

    def reset(self) -> None:
        for state in self.sessions.values():
            state.forget()
        self.policy.generation.reset()

    def describe(self) -> dict[str, Any]:
        sessions = list(self.sessions.values())  # frames may add or drop sessions meanwhile
        return {"worker": "generation", "sessions": len(sessions), "in_flight": sum(len(s.state) for s in sessions)}

    def close(self) -> None:
        """Nothing to release (the policy belongs to whoever hosts it)."""


def _compose(stages: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def run(x: Any) -> Any:
        for stage in stages:
            x = stage(x)
        return x

    return run
