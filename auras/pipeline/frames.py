"""The frame executor: the Auras pipeline (modes ``pipeline`` and ``auras``), local backend.

Execution proceeds in deterministic frames. Each frame

1. admits at most one observation (the newest offered; the executor's caller drops older ones),
   which becomes a request at age 0;
2. runs one perception stage for every request still in perception (request of age a runs stage
   a, for a < pp_perception; perception is the policy's natural stages grouped into pp_perception
   contiguous groups of near-equal count);
3. runs one generation stage for every request in generation, all requests at once in one batched
   call: diffusion requests advance by their stage's share of the denoising steps
   (:func:`~auras.pipeline.partition.skewed_steps`, skew ``alpha``); autoregressive requests each
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
store (diffusion: ``H_o``; autoregressive: ``X_V, X_L`` plus the public action tokens ``X_A``,
which every request's block writes back). ``public=False`` (mode ``pipeline``): each request keeps
its own (stale) context and its own tokens, which shows what staleness costs.

Autoregressive merging: in a frame, the j-th token of every request's block comes from one causal
pass over ``[X_V, X_L, BOS, X_A(public)]``; a frame runs as many passes as the largest block
(``l_a / pp_g`` rounded up). With one block (pp_g = 1) that is token-by-token greedy decoding of the
request's own sequence, identical to the classic path; with pp_g = l_a it is one pass per frame
serving every in-flight request. The emitted action is the finishing request's own tokens
(``emit="own"``, default: each was predicted from the freshest image of its frame) or the public
token snapshot at that moment (``emit="public"``).

Startup: autoregressive ``auras`` runs one serial classic decode on the first observation to
initialise the public tokens (measured as ``startup_ms``); diffusion fills the pipeline.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from auras.context.store import PublicContextStore
from auras.errors import ConfigError
from auras.generation.base import AutoregressiveGeneration, DiffusionGeneration
from auras.perception.base import Context
from auras.pipeline.base import Executor
from auras.pipeline.partition import skewed_steps, split_evenly
from auras.policies.base import Policy
from auras.types import Action, Observation, StepTimings

__all__ = ["FrameExecutor", "FrameShape"]

OBSERVATION_KEY, TOKENS_KEY = "observation", "action_tokens"


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


@dataclass
class _Request:
    obs: Observation
    admitted_frame: int
    admitted_at: float
    carry: Any = None  # output of the last perception stage run
    context: Context | None = None  # private context once perception finished
    state: Any = None  # diffusion: sample (1, H, A); autoregressive: own tokens (l_a,)
    newest_step_id: int = -1  # newest observation whose context generation read
    newest_frame: int = -1  # admission frame of that observation
    perception_ms: float = 0.0
    generation_ms: float = 0.0


class _DiffusionDriver:
    def __init__(self, generation: DiffusionGeneration, pp_generation: int, alpha: float) -> None:
        self.gen = generation
        self.steps = skewed_steps(generation.num_inference_steps, pp_generation, alpha)
        self.first_step = np.concatenate([[0], np.cumsum(self.steps)[:-1]]).astype(np.int64)

    def startup(self, context: Context) -> None:
        """Diffusion needs no serial run: the pipeline fill is the startup."""

    def start(self, request: _Request) -> None:
        request.state = self.gen.initial_noise(1)

    def run(self, items: Sequence[tuple[_Request, int]], contexts: Sequence[Context], public: bool) -> None:
        import torch

        samples = torch.cat([torch.as_tensor(r.state) for r, _ in items])  # (B, H, A)
        first = torch.as_tensor(self.first_step[[g for _, g in items]])  # (B,)
        count = torch.as_tensor([self.steps[g] for _, g in items], dtype=torch.int64)  # (B,)
        h_o = torch.cat([torch.as_tensor(c["H_o"]) for c in contexts])  # (B, D)
        out = self.gen.denoise(samples, first, count, h_o)
        for i, (request, _) in enumerate(items):
            request.state = out[i : i + 1]

    def finish(self, request: _Request) -> np.ndarray:
        return self.gen.to_actions(request.state)[0]  # (H, A)


class _AutoregressiveDriver:
    def __init__(self, generation: AutoregressiveGeneration, pp_generation: int, emit: str) -> None:
        if pp_generation > generation.num_action_tokens:
            raise ConfigError(
                f"pp_generation: expected <= {generation.num_action_tokens} (the action tokens per request), "
                f"got {pp_generation}"
            )
        self.gen = generation
        self.blocks = split_evenly(generation.num_action_tokens, pp_generation)
        self.emit = emit
        self.public_tokens: np.ndarray | None = None  # (l_a,) int64

    def startup(self, context: Context) -> None:
        """One serial classic decode initialises the public action tokens."""
        self.public_tokens = np.asarray(self.gen.decode_classic(context))[0].astype(np.int64)

    def start(self, request: _Request) -> None:
        request.state = np.zeros(self.gen.num_action_tokens, np.int64)

    def run(self, items: Sequence[tuple[_Request, int]], contexts: Sequence[Context], public: bool) -> None:
        passes = max(len(self.blocks[g]) for _, g in items)
        if public:
            assert self.public_tokens is not None, "startup() initialises the public tokens"
            for j in range(passes):  # one merged pass serves the j-th token of every block
                preds = np.asarray(self.gen.next_tokens(contexts[0], self.public_tokens[None]))[0]
                for request, g in items:
                    if j < len(self.blocks[g]):
                        pos = self.blocks[g][j]
                        request.state[pos] = self.public_tokens[pos] = preds[pos]
            return
        for (request, g), context in zip(items, contexts, strict=True):  # private: own context and tokens
            for pos in self.blocks[g]:
                request.state[pos] = np.asarray(self.gen.next_tokens(context, request.state[None]))[0, pos]

    def finish(self, request: _Request) -> np.ndarray:
        tokens = self.public_tokens if self.emit == "public" and self.public_tokens is not None else request.state
        return self.gen.detokenize(np.asarray(tokens)[None])[0]  # (H, A)


class FrameExecutor(Executor):
    """Frames over one policy; local backend (perception in a worker thread for fetch_offset -1)."""

    def __init__(
        self,
        policy: Policy,
        shape: FrameShape,
        public: bool = True,
        alpha: float = 0.0,
        emit: Literal["own", "public"] = "own",
    ) -> None:
        super().__init__(policy)
        self.shape, self.public = shape, public
        natural = policy.perception.stages()
        if shape.pp_perception > len(natural):
            raise ConfigError(
                f"pp_perception: expected <= {len(natural)} (this policy's perception stages), "
                f"got {shape.pp_perception}"
            )
        self._perception = [
            _compose(natural[r.start : r.stop]) for r in split_evenly(len(natural), shape.pp_perception)
        ]
        gen = policy.generation
        if isinstance(gen, DiffusionGeneration):
            self._driver: Any = _DiffusionDriver(gen, shape.pp_generation, alpha)
        elif isinstance(gen, AutoregressiveGeneration):
            if emit not in ("own", "public"):
                raise ConfigError(f"emit: expected 'own' or 'public', got {emit!r}")
            self._driver = _AutoregressiveDriver(gen, shape.pp_generation, emit)
        else:
            raise ConfigError(
                f"policy {policy.name!r}: pipelined modes need a diffusion or autoregressive generation, "
                f"got {type(gen).__name__} (use mode 'sequential')"
            )
        self.store = PublicContextStore()
        self.store.claim(OBSERVATION_KEY, "perception")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auras-perception")
        self._inflight: deque[_Request] = deque()
        self.frame = 0
        self.admitted = self.emitted = 0
        self.max_inflight = 0
        self.startup_ms: float | None = None
        self._started = False
        self._last_action: Action | None = None

    # -- frames -----------------------------------------------------------------------------------
    def run_frame(self, obs: Observation | None) -> Action | None:
        """Run one frame, admitting ``obs`` if given; return the action emitted this frame, if any."""
        frame, shape = self.frame, self.shape
        if obs is not None:
            self._inflight.append(_Request(obs, frame, time.perf_counter()))
            self.admitted += 1
        self.max_inflight = max(self.max_inflight, len(self._inflight))
        ages = [(r, frame - r.admitted_frame) for r in self._inflight]
        perceiving = [(r, a) for r, a in ages if a < shape.pp_perception]
        generating = [
            (r, a - shape.generation_start) for r, a in ages if 0 <= a - shape.generation_start < shape.pp_generation
        ]
        if shape.fetch_offset == 0:
            self._run_perception(perceiving, frame)
            self._run_generation(generating, frame)
        else:
            pending = self._pool.submit(self._run_perception, perceiving, frame)
            self._run_generation(generating, frame - 1)
            pending.result()
        action = None
        finished = [r for r, g in generating if g == shape.pp_generation - 1]
        if finished:
            action = self._emit(finished[0], frame)
            self._inflight.remove(finished[0])
        self.frame += 1
        return action

    def _run_perception(self, items: Sequence[tuple[_Request, int]], frame: int) -> None:
        for request, stage in sorted(items, key=lambda x: -x[1]):  # oldest (deepest stage) first
            start = time.perf_counter()
            request.carry = self._perception[stage]([request.obs] if stage == 0 else request.carry)
            request.perception_ms += (time.perf_counter() - start) * 1e3
            if stage == self.shape.pp_perception - 1:
                request.context, request.carry = request.carry, None
                self.store.write(OBSERVATION_KEY, request.context, frame, "perception", request.obs.step_id)
                if not self._started:
                    self._startup(request.context)

    def _startup(self, context: Context) -> None:
        start = time.perf_counter()
        self._driver.startup(context)
        self.startup_ms = (time.perf_counter() - start) * 1e3
        self._started = True

    def _run_generation(self, items: Sequence[tuple[_Request, int]], read_frame: int) -> None:
        if not items:
            return
        start = time.perf_counter()
        contexts = []
        for request, stage in items:
            if stage == 0:
                self._driver.start(request)
            if self.public:
                snapshot = self.store.read(OBSERVATION_KEY, read_frame)
                context, step_id, frame = snapshot.value, snapshot.source_step_id, snapshot.frame
            else:
                context, step_id, frame = request.context, request.obs.step_id, request.admitted_frame
            contexts.append(context)
            if step_id is not None and step_id > request.newest_step_id:
                request.newest_step_id = step_id
                request.newest_frame = self._admission_frame(step_id, frame)
        self._driver.run(items, contexts, self.public)
        spent = (time.perf_counter() - start) * 1e3 / len(items)
        for request, _ in items:
            request.generation_ms += spent

    def _admission_frame(self, step_id: int, written_frame: int) -> int:
        """The frame an observation was admitted: its context is written pp_p - 1 frames later."""
        return written_frame - (self.shape.pp_perception - 1) if self.public else written_frame

    def _emit(self, request: _Request, frame: int) -> Action:
        now = time.perf_counter()
        action = Action(
            values=np.asarray(self._driver.finish(request), dtype=np.float32),
            step_id=request.obs.step_id,
            capture_time=request.obs.capture_time,
            timings=StepTimings(
                stages_ms={"perception": request.perception_ms, "generation": request.generation_ms},
                latency_ms=(now - request.admitted_at) * 1e3,
            ),
            context_step_id=request.newest_step_id,
            staleness_frames=frame - request.newest_frame,
            frame=frame,
        )
        self.emitted += 1
        self._last_action = action
        return action

    # -- Executor API -------------------------------------------------------------------------------
    def step(self, obs: Observation) -> Action:
        """Admit ``obs``, run one frame and return its action.

        During startup (no action out yet) the caller is blocked and no newer observation exists, so
        every fill frame admits ``obs`` again: when the first action comes out the pipeline is full
        and from then on each ``step`` emits one fresh action. Should a frame emit nothing (after a
        reset mid-stream), the newest earlier action is returned.
        """
        action = self.run_frame(obs)
        while self._last_action is None:
            action = self.run_frame(obs)
        return action if action is not None else self._last_action

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def reset(self) -> None:
        super().reset()
        self._inflight.clear()
        self.store.clear()
        self._started = False
        self._last_action = None
        self.startup_ms = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _compose(stages: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def run(x: Any) -> Any:
        for stage in stages:
            x = stage(x)
        return x

    return run
