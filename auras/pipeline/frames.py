"""The frame executor: the Auras pipeline (modes ``pipeline`` and ``auras``; ``sequential`` as one frame).

Execution proceeds in deterministic frames. Each frame

1. admits at most one observation (the newest offered; the executor's caller drops older ones),
   which becomes a request at age 0;
2. runs one perception stage for every request still in perception (request of age a runs stage
   a, for a < pp_perception; perception is the policy's natural stages grouped into pp_perception
   contiguous groups of near-equal count);
3. runs one generation stage for every request in generation, all requests at once in one batched
   call: diffusion requests advance by their stage's share of the denoising steps
   (:func:`~auras.partition.skewed_steps`, skew ``alpha``); autoregressive requests each
   own a block of the action tokens and fill it from merged causal passes;
4. emits the action of the request that finished its last generation stage (one per frame once
   the pipeline is full).

``fetch_offset`` 0: perception runs first, then generation, which reads the context written this
frame; a request's last perception stage and first generation stage share a frame, so a request
lives ``pp_p + pp_g - 1`` frames and ``pp_p = pp_g = 1`` is exactly sequential execution.
``fetch_offset`` -1: perception and generation run concurrently (two threads) and generation reads
the context of the previous frame; a request lives ``pp_p + pp_g`` frames. Either way at most
``L = pp_p + pp_g`` requests are in flight.

``public=True`` (mode ``auras``): generation reads the freshest context from the public context
store (whatever the perception produced: ``H_o``, ``X_V``/``X_L``, a prefix cache), and the
autoregressive family keeps its public action tokens ``X_A`` in the same store, written back by
every request's block. ``public=False`` (mode ``pipeline``): each request keeps its own (stale)
context and its own tokens, which shows what staleness costs.

Autoregressive merging: in a frame, the j-th token of every request's block comes from one causal
pass; a frame runs as many passes as the largest block, ``ceil(l_a / pp_g)``. In ``auras`` mode
each pass runs once, over ``[X_V, X_L, BOS, X_A(public)]`` of the freshest context, and serves
every in-flight request; in ``pipeline`` mode each pass is one batched call over every in-flight
request's own context and tokens (equally engineered: the same number of calls per frame). With one
block (pp_g = 1) a request decodes with the classic KV-cached path; with pp_g = l_a a frame is one
pass. The emitted action is the finishing request's own tokens (``emit="own"``, default: each was
predicted from the freshest image of its frame) or the public token snapshot at that moment
(``emit="public"``). Each family's per-frame logic lives in its driver
(:mod:`auras.generation.families`).

Who does what: the executor below is one *session* of a :class:`~auras.pipeline.engine.FrameEngine`.
It only schedules: it admits observations, decides each request's stage per frame (a
:class:`~auras.pipeline.workers.FramePlan`) and turns what generation emits into Actions. The
computation and all per-request state live in the engine's
:class:`~auras.pipeline.workers.PerceptionWorker` and :class:`~auras.pipeline.workers.GenerationWorker`,
placed by a backend (:mod:`auras.pipeline.backend`): in this process (``local``) or as two Ray actors
(``ray``, ``ray_backend.py``). Both backends run the same plans, so they emit the same actions. Built
over a backend (or a policy), the executor owns an engine of its own and is its only session (one
robot, as ``AurasAgent`` runs it); built over a shared engine, it is one robot of a fleet whose frames
the engine batches with the others'. Either way it is the same code path. Mode ``sequential`` is the
shape (1, 1, 0) with private contexts, on both backends.

Startup: autoregressive ``auras`` runs one serial classic decode on the first observation to
initialise the public tokens (measured as ``startup_ms``); diffusion fills the pipeline.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

from auras.errors import ConfigError, WorkerDiedError
from auras.pipeline.backend import Backend, WorkerGroup, as_backend
from auras.pipeline.base import Executor
from auras.pipeline.engine import FrameEngine
from auras.pipeline.workers import (
    ContextMessage,
    Emitted,
    FramePlan,
    PerceptionTask,
    SessionSettings,
    check_pipelinable,
)
from auras.policies.base import Policy
from auras.types import Action, Observation, StepTimings

__all__ = ["FrameExecutor", "FrameShape"]


@dataclass(frozen=True, slots=True)
class FrameShape:
    """Pipeline degrees. Request of age a runs perception stage a (a < pp_p) and generation stage
    a - generation_start (0 <= . < pp_g)."""

    pp_perception: int = 1
    pp_generation: int = 1
    fetch_offset: Literal[0, -1] = 0

    def __post_init__(self) -> None:
        if self.pp_perception < 1 or self.pp_generation < 1:
            raise ConfigError(
                f"pipeline degrees: expected pp_perception >= 1 and pp_generation >= 1, "
                f"got {self.pp_perception} and {self.pp_generation}"
            )
        if self.fetch_offset not in (0, -1):
            raise ConfigError(f"fetch_offset: expected 0 or -1, got {self.fetch_offset!r}")

    @property
    def generation_start(self) -> int:
        return self.pp_perception - (1 if self.fetch_offset == 0 else 0)

    @property
    def lifetime(self) -> int:
        """Frames a request lives, which is also the number in flight once the pipeline is full."""
        return self.generation_start + self.pp_generation

    @property
    def depth(self) -> int:
        """L = pp_perception + pp_generation, the bound on requests in flight."""
        return self.pp_perception + self.pp_generation


@dataclass(frozen=True, slots=True)
class _Admitted:
    step_id: int
    capture_time: float
    frame: int
    at: float  # the executor's clock at admission


class FrameExecutor(Executor):
    """Frames of one session (one robot's pipeline) over an engine's perception and generation workers."""

    _HISTORY = 256  # admitted requests remembered for tracing contexts back to observations

    def __init__(
        self,
        backend: Backend | Policy | FrameEngine,
        shape: FrameShape,
        public: bool = True,
        alpha: float = 0.0,
        emit: Literal["own", "public"] = "own",
    ) -> None:
        """``backend``: where the perception and generation workers run (a Policy: in this process, on the
        CPU): the executor builds an engine of its own over it, closed with the executor; or a shared
        :class:`FrameEngine`, which this executor joins as one more session (the engine outlives it). The
        settings are checked against the policy before any worker exists when the backend knows it
        (local), else against what the placed workers report (Ray), leaving nothing running on failure."""
        self.shape, self.public = shape, public
        self.settings = SessionSettings(shape.pp_perception, shape.pp_generation, public, alpha, emit)
        self.owns_engine = not isinstance(backend, FrameEngine)
        if isinstance(backend, FrameEngine):
            if backend.fetch_offset != shape.fetch_offset:
                raise ConfigError(
                    f"fetch_offset: the sessions of one engine share it (this engine runs "
                    f"{backend.fetch_offset}), got {shape.fetch_offset}; give this pipeline an engine of its own"
                )
            check_pipelinable(backend.spec, shape.pp_perception, shape.pp_generation, emit)
            self.engine = backend
        else:
            backend = as_backend(backend)
            spec = backend.spec
            if spec is not None:
                check_pipelinable(spec, shape.pp_perception, shape.pp_generation, emit)
            self.engine = FrameEngine(backend, shape.fetch_offset)
            if spec is None:
                try:  # the workers host the policy: check what they report
                    check_pipelinable(self.engine.spec, shape.pp_perception, shape.pp_generation, emit)
                except BaseException:
                    self.engine.close()
                    raise
        super().__init__(self.engine.spec)
        self.session = self.engine.attach()
        self._incarnation = self.engine.incarnation
        self._inflight: deque[tuple[int, int]] = deque()  # (request, admitted frame)
        self._admitted: OrderedDict[int, _Admitted] = OrderedDict()
        self._carried: tuple[ContextMessage, ...] = ()
        self._lent: list[ContextMessage] = []
        self._withdrawn: list[int] = []
        self._next_request = 0
        self._reset_pending = False
        self.frame = 0
        self.admitted = self.emitted = 0
        self.max_inflight = 0
        self.startup_ms: float | None = None
        self._last_action: Action | None = None
        self._closed = False

    @property
    def group(self) -> WorkerGroup:
        """The engine's workers."""
        return self.engine.group

    # -- frames -----------------------------------------------------------------------------------
    def plan(self, obs: Observation | None) -> FramePlan:
        """Admit ``obs`` (if given) and say what every in-flight request does this frame."""
        frame, shape = self.frame, self.shape
        tasks = []
        if obs is not None:
            request = self._next_request
            self._next_request += 1
            self._inflight.append((request, frame))
            self._remember(request, _Admitted(obs.step_id, obs.capture_time, frame, self.clock.now()))
            self.admitted += 1
        self.max_inflight = max(self.max_inflight, len(self._inflight))
        generation, finishing = [], None
        for request, admitted in self._inflight:
            age = frame - admitted
            if age < shape.pp_perception:
                tasks.append(PerceptionTask(request, age, obs if age == 0 else None))
            stage = age - shape.generation_start
            if 0 <= stage < shape.pp_generation:
                generation.append((request, stage))
                if stage == shape.pp_generation - 1:
                    finishing = request
        plan = FramePlan(
            frame,
            tuple(tasks),
            tuple(generation),
            finishing,
            read_frame=frame + shape.fetch_offset,
            carried=self._carried if shape.fetch_offset == -1 else (),
            lent=tuple(self._lent),
            reset=self._reset_pending,
            withdrawn=tuple(self._withdrawn),
            session=self.session,
            settings=self.settings,
        )
        self._reset_pending = False
        self._lent.clear()
        self._withdrawn.clear()
        return plan

    def run_frame(self, obs: Observation | None) -> Action | None:
        """Run one frame, admitting ``obs`` if given; return the action emitted this frame, if any."""
        plan = self.plan(obs)
        try:
            finished, emitted = self.engine.run(plan, self._incarnation)
        except WorkerDiedError:
            raise  # the workers are replaced (step); their state goes with them
        except BaseException:
            self._withdraw(plan)
            raise
        self._carried = finished
        self.frame += 1
        if emitted is None:
            return None
        self._inflight = deque((r, f) for r, f in self._inflight if r != emitted.request)
        return self._emit(emitted, plan.frame)

    def _withdraw(self, plan: FramePlan) -> None:
        """A frame failed in a worker, part way through (a frame is not a transaction): every request in
        flight is dropped and produces no action, the workers forget them with the next plan, and the
        next step fills the pipeline again from its own observation (for sequential, only the failed
        observation was in flight). A reset, and requests to forget, that the plan carried are carried again
        (a worker that failed the plan may not have read them)."""
        self._withdrawn.extend(plan.withdrawn)
        self._withdrawn.extend(request for request, _ in self._inflight)
        self.admitted -= sum(1 for _, frame in self._inflight if frame == plan.frame)
        self._inflight.clear()
        self._carried = ()
        self._last_action = None
        self._reset_pending = self._reset_pending or plan.reset

    def _emit(self, emitted: Emitted, frame: int) -> Action:
        if emitted.startup_ms is not None and self.startup_ms is None:
            self.startup_ms = emitted.startup_ms
        own, newest = self._admitted[emitted.request], self._admitted.get(emitted.context_request)
        newest = newest if newest is not None else own
        now = self.clock.now()
        action = Action(
            values=emitted.values,
            step_id=own.step_id,
            capture_time=own.capture_time,
            timings=StepTimings(
                stages_ms={"perception": emitted.perception_ms, "generation": emitted.generation_ms},
                latency_ms=(now - own.at) * 1e3,
            ),
            context_step_id=newest.step_id,
            staleness_frames=frame - newest.frame,
            staleness_ms=(now - newest.capture_time) * 1e3,
            frame=frame,
        )
        self.emitted += 1
        self._last_action = action
        return action

    # -- re-planning: a draining pipeline reads the contexts of the one replacing it ------------------
    def finished_contexts(self) -> tuple[tuple[ContextMessage, _Admitted], ...]:
        """The contexts perception finished in the last frame, each with the admission of its
        observation (in-process, or from an engine made with ``contexts_to_caller``; else empty under
        fetch_offset 0)."""
        return tuple((m, self._admitted[m.request]) for m in self._carried if m.request in self._admitted)

    def lend(self, contexts: tuple[tuple[ContextMessage, _Admitted], ...], their_frame: int) -> None:
        """Publish ``contexts`` that another pipeline over the same policy finished in this pipeline's
        public context, from its next frame on; ``their_frame``: the other pipeline's number for the
        frame this pipeline runs next (contexts are stamped with this pipeline's frame numbers).
        A draining pipeline admits nothing, so without them its last requests would read a context
        that ages every frame. Each becomes a request of this pipeline that never runs, so actions
        still trace their newest input to its observation. A private pipeline ignores them."""
        if not self.public:
            return
        shift = self.frame - their_frame
        for message, admitted in contexts:
            request = self._next_request
            self._next_request += 1
            self._remember(request, dataclasses.replace(admitted, frame=admitted.frame + shift))
            self._lent.append(dataclasses.replace(message, request=request, frame=message.frame + shift))

    def adopt_incarnation(self, other: FrameExecutor) -> None:
        """Run on the workers ``other`` runs on (a re-plan's new session: if they were replaced since
        ``other``'s last frame, both sessions notice together and recover once)."""
        self._incarnation = other._incarnation

    def same_robot_as(self, other: FrameExecutor) -> None:
        """This session and ``other`` (of the same engine) are one robot's, stepped in turn by one thread
        (a re-plan): the engine's frames never wait for the one that steps second."""
        self.engine.same_robot(self.session, other.session)

    def _remember(self, request: int, admitted: _Admitted) -> None:
        self._admitted[request] = admitted
        while len(self._admitted) > self._HISTORY:
            self._admitted.popitem(last=False)

    # -- Executor API -------------------------------------------------------------------------------
    def step(self, obs: Observation) -> Action:
        """Admit ``obs``, run one frame and return its action.

        During startup (no action out yet) the caller is blocked and no newer observation exists, so
        every fill frame admits ``obs`` again: when the first action comes out the pipeline is full
        and from then on each ``step`` emits one fresh action. Should a frame emit nothing (after a
        reset mid-stream), the newest earlier action is returned.
        """
        try:
            action = self.run_frame(obs)
            while self._last_action is None:
                action = self.run_frame(obs)
        except WorkerDiedError as exc:
            raise self.recover(exc, obs.step_id, self.replace_workers, frame=self.frame) from exc
        return action if action is not None else self._last_action

    def replace_workers(self) -> None:
        """Start from an empty pipeline and an empty public context on new workers (the engine replaces
        them once, whichever of its sessions asks first): nothing computed before the failure (half-written
        contexts, in-flight requests) can reach an action."""
        self._forget()  # the new workers start clean
        self.engine.replace(self._incarnation)  # raises WorkerDiedError itself if no worker can be started
        self._incarnation = self.engine.incarnation

    @property
    def hosted_policy(self) -> Policy | None:
        return self.engine.hosted_policy

    def workers(self) -> list[dict[str, Any]]:
        return self.engine.workers()

    @property
    def context_transport(self) -> str:
        return self.group.context_transport

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def reset(self) -> None:
        """New episode: both workers forget every request and the policy its per-episode state. Workers in
        this process do so at once; actors when the next frame's plan tells them (a compiled graph's actors
        take no other call)."""
        self._forget()
        if not self.engine.reset_session(self.session):
            self._reset_pending = True

    def _forget(self) -> None:
        """The driver's side of a new episode: no request in flight, nothing to lend or carry."""
        self._inflight.clear()
        self._carried = ()
        self._lent.clear()
        self._withdrawn.clear()
        self._reset_pending = False
        self._last_action = None
        self.startup_ms = None

    def close(self) -> None:
        """Leave the engine (and close it, when it is this executor's own); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.owns_engine:
            self.engine.close()
        else:
            self.engine.detach(self.session)
