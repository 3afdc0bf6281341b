"""The two workers of the frame executor and the messages between them.

A frame's work is described by a :class:`FramePlan`, made by the driver (``frames.py``), and carried
out by a :class:`PerceptionWorker` and a :class:`GenerationWorker`. Each worker owns its per-request
state (perception carries; diffusion samples or action tokens), so only small, plain messages cross
between them: the plan (observations in), :class:`ContextMessage` (perception -> generation) and
:class:`Emitted` (generation -> driver). The same classes run in-process (``local`` backend) and
inside Ray actors (``ray`` backend, ``numpy_transport=True``: contexts leave perception as numpy
arrays, which Ray channels move without pickling tensor storage).

Request ids increase with admission, so the newest context is the one from the highest request id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auras.context.store import PublicContextStore
from auras.errors import ConfigError
from auras.generation.base import AutoregressiveGeneration, DiffusionGeneration
from auras.perception.base import Context
from auras.pipeline.partition import skewed_steps, split_evenly
from auras.policies.base import Policy
from auras.types import Observation

__all__ = [
    "ContextMessage",
    "Emitted",
    "FramePlan",
    "GenerationWorker",
    "NumpyContext",
    "PerceptionTask",
    "PerceptionWorker",
    "as_numpy",
    "as_torch",
    "check_pipelinable",
    "is_iterative",
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
    where perception and generation run concurrently). ``reset``: forget every request first."""

    frame: int
    perception: tuple[PerceptionTask, ...] = ()
    generation: tuple[tuple[int, int], ...] = ()
    finishing: int | None = None
    read_frame: int = 0
    carried: tuple[ContextMessage, ...] = ()
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Emitted:
    """The finishing request's action chunk (H, A) and where its inputs came from."""

    request: int
    values: np.ndarray
    context_request: int  # newest request whose context generation read for this action
    perception_ms: float
    generation_ms: float
    startup_ms: float | None = None  # set in the frame that ran the startup


def is_iterative(policy: Policy) -> bool:
    """True when generation is autoregressive or diffusion, i.e. can be spread over frames."""
    return isinstance(policy.generation, AutoregressiveGeneration | DiffusionGeneration)


def check_pipelinable(policy: Policy, pp_perception: int, pp_generation: int, emit: str = "own") -> None:
    """Raise ConfigError unless ``policy`` can run in frames with these settings."""
    natural = len(policy.perception.stages())
    if pp_perception > natural:
        raise ConfigError(
            f"pp_perception: expected <= {natural} (this policy's perception stages), got {pp_perception}"
        )
    if emit not in ("own", "public"):
        raise ConfigError(f"emit: expected 'own' or 'public', got {emit!r}")
    gen = policy.generation
    if isinstance(gen, AutoregressiveGeneration):
        if pp_generation > gen.num_action_tokens:
            raise ConfigError(
                f"pp_generation: expected <= {gen.num_action_tokens} (the action tokens per request), "
                f"got {pp_generation}"
            )
    elif isinstance(gen, DiffusionGeneration):
        skewed_steps(gen.num_inference_steps, pp_generation, 0.0)  # raises when too many stages
    else:
        raise ConfigError(
            f"policy {policy.name!r}: pipelined modes need a diffusion or autoregressive generation, "
            f"got {type(gen).__name__} (use mode 'sequential')"
        )


class PerceptionWorker:
    """Runs perception stages; the policy's natural stages are grouped into ``pp_perception`` groups."""

    def __init__(self, policy: Policy, pp_perception: int, numpy_transport: bool = False) -> None:
        natural = policy.perception.stages()
        self.policy = policy
        self.stages = [_compose(natural[r.start : r.stop]) for r in split_evenly(len(natural), pp_perception)]
        self.numpy_transport = numpy_transport
        self._carry: dict[int, Any] = {}
        self._spent: dict[int, float] = {}

    def run(self, plan: FramePlan) -> tuple[ContextMessage, ...]:
        """Run this frame's perception tasks, oldest request first; return the finished contexts."""
        if plan.reset:
            self.reset()
        finished = []
        last = len(self.stages) - 1
        for task in sorted(plan.perception, key=lambda t: -t.stage):
            start = time.perf_counter()
            carry = self.stages[task.stage]([task.obs] if task.stage == 0 else self._carry.pop(task.request))
            spent = self._spent.pop(task.request, 0.0) + (time.perf_counter() - start) * 1e3
            if task.stage < last:
                self._carry[task.request], self._spent[task.request] = carry, spent
                continue
            context = as_numpy(carry) if self.numpy_transport else carry
            finished.append(ContextMessage(task.request, plan.frame, context, spent))
        return tuple(finished)

    def reset(self) -> None:
        self._carry.clear()
        self._spent.clear()
        _reset_part(self.policy.perception)


class GenerationWorker:
    """Advances every request in generation by one stage per frame, in one batched call.

    Holds the generation side of the public context: a :class:`PublicContextStore` fed with the
    contexts perception finished (``public=True``), or each request's own context (``public=False``).
    Reads are local, so the hot path takes no lock round trip to another process.
    """

    def __init__(self, policy: Policy, pp_generation: int, public: bool, alpha: float, emit: str) -> None:
        gen = policy.generation  # checked by check_pipelinable
        self.policy, self.public = policy, public
        if isinstance(gen, DiffusionGeneration):
            self.driver: Any = _DiffusionDriver(gen, pp_generation, alpha)
        else:  # private contexts have no public token snapshot to emit: each request emits its own tokens
            self.driver = _AutoregressiveDriver(gen, pp_generation, emit if public else "own")
        self.store = PublicContextStore()
        self.store.claim(OBSERVATION_KEY, "perception")
        self._own: dict[int, Context] = {}  # private contexts (public=False)
        self._state: dict[int, Any] = {}
        self._newest: dict[int, int] = {}
        self._spent: dict[int, float] = {}
        self._perception_ms: dict[int, float] = {}
        self.started = False

    def run(self, plan: FramePlan, incoming: Sequence[ContextMessage] = ()) -> Emitted | None:
        """Ingest ``incoming`` contexts (or ``plan.carried``), run the frame's generation stages and
        return the finishing request's action, if one finishes this frame."""
        if plan.reset:
            self.reset()
        startup_ms = None
        for message in (*plan.carried, *incoming):
            self._perception_ms[message.request] = message.perception_ms
            context = as_torch(message.context)
            if self.public:
                self.store.write(OBSERVATION_KEY, context, message.frame, "perception", message.request)
            else:
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
        advanced = self.driver.run(states, stages, contexts, self.public)
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
        _reset_part(self.policy.generation)


class _DiffusionDriver:
    def __init__(self, generation: DiffusionGeneration, pp_generation: int, alpha: float) -> None:
        self.gen = generation
        self.steps = skewed_steps(generation.num_inference_steps, pp_generation, alpha)
        self.first_step = np.concatenate([[0], np.cumsum(self.steps)[:-1]]).astype(np.int64)

    def startup(self, context: Context) -> None:
        """Diffusion needs no serial run: the pipeline fill is the startup."""

    def start(self) -> Any:
        return self.gen.initial_noise(1)

    def run(self, states: list[Any], stages: list[int], contexts: Sequence[Context], public: bool) -> list[Any]:
        import torch

        samples = torch.cat([torch.as_tensor(s) for s in states])  # (B, H, A)
        first = torch.as_tensor(self.first_step[stages])  # (B,)
        count = torch.as_tensor([self.steps[g] for g in stages], dtype=torch.int64)  # (B,)
        h_o = torch.cat([torch.as_tensor(c["H_o"]) for c in contexts])  # (B, D)
        out = self.gen.denoise(samples, first, count, h_o)
        return [out[i : i + 1] for i in range(len(states))]

    def finish(self, state: Any) -> np.ndarray:
        return self.gen.to_actions(state)[0]  # (H, A)


class _AutoregressiveDriver:
    def __init__(self, generation: AutoregressiveGeneration, pp_generation: int, emit: str) -> None:
        self.gen = generation
        self.blocks = split_evenly(generation.num_action_tokens, pp_generation)
        self.emit = emit
        self.public_tokens: np.ndarray | None = None  # (l_a,) int64

    def startup(self, context: Context) -> None:
        """One serial classic decode initialises the public action tokens."""
        self.public_tokens = np.asarray(self.gen.decode_classic(context))[0].astype(np.int64)

    def start(self) -> Any:
        return np.zeros(self.gen.num_action_tokens, np.int64)

    def run(self, states: list[Any], stages: list[int], contexts: Sequence[Context], public: bool) -> list[Any]:
        if len(self.blocks) == 1:  # one block = the whole sequence: the classic KV-cached decode, same tokens
            for state, context in zip(states, contexts, strict=True):
                state[:] = np.asarray(self.gen.decode_classic(context))[0]
                if public:
                    self.public_tokens = state.copy()
            return states
        if public:
            assert self.public_tokens is not None, "startup() initialises the public tokens"
            passes = max(len(self.blocks[g]) for g in stages)
            for j in range(passes):  # one merged pass over the freshest context serves every block
                preds = np.asarray(self.gen.next_tokens(contexts[-1], self.public_tokens[None]))[0]
                for state, g in zip(states, stages, strict=True):
                    if j < len(self.blocks[g]):
                        pos = self.blocks[g][j]
                        state[pos] = self.public_tokens[pos] = preds[pos]
            return states
        for state, g, context in zip(states, stages, contexts, strict=True):  # private: own context, own tokens
            for pos in self.blocks[g]:
                state[pos] = np.asarray(self.gen.next_tokens(context, state[None]))[0, pos]
        return states

    def finish(self, state: Any) -> np.ndarray:
        tokens = self.public_tokens if self.emit == "public" and self.public_tokens is not None else state
        return self.gen.detokenize(np.asarray(tokens)[None])[0]  # (H, A)


def _compose(stages: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def run(x: Any) -> Any:
        for stage in stages:
            x = stage(x)
        return x

    return run


def _reset_part(part: Any) -> None:
    """Forget per-episode state of a perception or generation that keeps some."""
    reset = getattr(part, "reset", None)
    if callable(reset):
        reset()


@dataclass(frozen=True, slots=True)
class NumpyContext:
    """A context in transit between processes: every array as numpy; ``torch_keys`` were tensors."""

    arrays: dict[str, Any]
    torch_keys: tuple[str, ...]


def as_numpy(context: Context) -> NumpyContext:
    """Torch tensors -> numpy views (no copy for CPU tensors), so channels move raw buffers."""
    keys = tuple(name for name, v in context.items() if hasattr(v, "detach"))
    arrays = {name: v.detach().cpu().numpy() if name in keys else v for name, v in context.items()}
    return NumpyContext(arrays, keys)


def as_torch(context: Context | NumpyContext) -> Context:
    """Undo :func:`as_numpy` (tensors come back as small copies of the read-only received buffers);
    a context that never left its process is returned as it is."""
    if not isinstance(context, NumpyContext):
        return context
    import torch

    return {
        name: torch.from_numpy(np.array(v)) if name in context.torch_keys else v for name, v in context.arrays.items()
    }
