"""Generation families: one driver per family owns the per-frame logic of its generations.

The frame pipeline spreads a request's generation over ``pp_generation`` stages, one stage per
frame, and runs the stages of every in-flight request as one batched call. *How* a stage advances a
request depends on the family, and only the family's driver knows it:

- ``oneshot``: one iteration; ``generate`` runs in the request's single generation stage.
- ``denoising`` (diffusion, flow matching): the ``n`` integration steps are shared out over the
  stages (:func:`~auras.partition.skewed_steps`, skew ``alpha``); every stage of every in-flight
  request advances in one batched ``denoise`` call, each row conditioned on the context that stage
  reads.
- ``autoregressive``: each stage owns a block of the ``l_a`` action tokens; the j-th token of every
  block comes from one merged causal pass, so a frame runs ``ceil(l_a / pp_generation)`` passes. In
  ``auras`` mode a pass runs once over the freshest context and the public action tokens ``X_A``
  (held in the public context store under :data:`PUBLIC_TOKENS`), serving every in-flight request;
  in ``pipeline`` mode one batched pass serves every request over its own context and tokens.

A generation names its family in ``Generation.family``; :func:`driver_for` finds the driver in the
family registry (``auras.registry.FAMILIES``, entry-point group ``auras.families``), so a new family
is a new driver class registered under a new name, not an edit to the pipeline, the bench or the
delay wrapper.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from auras.context.store import PublicContextStore
from auras.context.tensors import concat_contexts
from auras.errors import ConfigError
from auras.partition import skewed_steps, split_evenly
from auras.perception.base import Context
from auras.registry import FAMILIES

__all__ = [
    "PUBLIC_TOKENS",
    "AutoregressiveDriver",
    "DenoisingDriver",
    "FamilyDriver",
    "OneShotDriver",
    "driver_for",
]

PUBLIC_TOKENS = "X_A"
"""Public-store key of the autoregressive family's public action tokens (l_a,) int64."""

CostShare = Callable[..., float]
"""(the method's args) -> the fraction of one request's generation that call stands for."""


class FamilyDriver(ABC):
    """Per-frame generation logic of one family. Class-level methods describe the family (checks,
    iteration counts, what each method call costs); an instance drives one generation worker.

    Instance protocol, per frame: ``start()`` makes a request's state when it enters generation;
    ``run(states, stages, contexts)`` advances every in-flight request by its stage (row i: state,
    stage index, the context it reads) and returns the new states without changing the ones given;
    ``finish(state)`` turns a finished state into the (H, A) or (A,) actions. ``startup(context)`` runs
    once, on the first context (may be a no-op).

    One driver instance drives one session (one robot's pipeline); an engine serving many sessions of
    one policy advances all of them with :meth:`run_jobs`, which a family overrides to make one batched
    model call of every session's rows (the default runs each session's ``run`` in turn).
    """

    family: ClassVar[str]
    tunes_alpha: ClassVar[bool] = False  # does the step skew alpha change anything?

    def __init__(self, generation: Any, pp_generation: int, alpha: float = 0.0, emit: str = "own",
                 store: PublicContextStore | None = None) -> None:
        """``store``: the public context store in ``auras`` mode, None in ``pipeline`` mode (private)."""
        self.check(generation, pp_generation, emit)
        self.gen, self.store = generation, store

    # -- the family -------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def iterations(cls, generation: Any) -> int:
        """How many iterations one request runs (the most stages it can be spread over)."""

    @classmethod
    def check(cls, generation: Any, pp_generation: int, emit: str = "own") -> None:
        """Raise ConfigError unless a request can be spread over ``pp_generation`` stages."""
        if emit not in ("own", "public"):
            raise ConfigError(f"emit: expected 'own' or 'public', got {emit!r}")
        cls.check_stages(cls.iterations(generation), pp_generation)

    @classmethod
    def check_stages(cls, iterations: int, pp_generation: int) -> None:
        if not 1 <= pp_generation <= iterations:
            raise ConfigError(
                f"pp_generation: expected 1..{iterations} (the {cls.family} generation's iterations per "
                f"request), got {pp_generation}"
            )

    @classmethod
    @abstractmethod
    def cost_shares(cls, generation: Any) -> dict[str, CostShare]:
        """Method name -> the share of one request's generation a call of it stands for (injected
        delays sleep that share; see auras.policies.delay)."""

    @classmethod
    def batch_rows(cls, pp_generation: int, public: bool) -> int:
        """The most rows one generation call of this family gets in a pipeline of ``pp_generation``
        stages: every in-flight request in generation (compiled stages are padded to it)."""
        return pp_generation

    # -- one worker ------------------------------------------------------------------------------
    def startup(self, context: Context) -> None:  # noqa: B027  (most families need no serial run)
        """Runs once on the first context; default: nothing."""

    @abstractmethod
    def start(self) -> Any: ...

    @abstractmethod
    def run(self, states: list[Any], stages: list[int], contexts: Sequence[Context]) -> list[Any]: ...

    @abstractmethod
    def finish(self, state: Any) -> np.ndarray: ...

    def reset(self) -> None:  # noqa: B027
        """Forget per-episode driver state (default: none)."""

    @classmethod
    def run_jobs(cls, jobs: Sequence[GenerationJob]) -> list[list[Any]]:
        """Advance several sessions' requests in one frame; returns each job's new states. Default: each
        session's ``run`` in turn (correct for any family, batched only within a session)."""
        return [job.driver.run(job.states, job.stages, job.contexts) for job in jobs]


@dataclass(frozen=True, slots=True)
class GenerationJob:
    """One session's share of a frame's generation: its driver and, per in-flight request, the state,
    the generation stage and the context it reads."""

    driver: FamilyDriver
    states: list[Any]
    stages: list[int]
    contexts: Sequence[Context]


def _split(rows: Any, counts: Sequence[int]) -> list[Any]:
    """Rows of one batched result, cut back into consecutive groups of ``counts`` rows."""
    out, start = [], 0
    for count in counts:
        out.append(rows[start : start + count])
        start += count
    return out


class OneShotDriver(FamilyDriver):
    """One iteration: the request's only generation stage calls ``generate``."""

    family = "oneshot"

    @classmethod
    def iterations(cls, generation: Any) -> int:
        return 1

    @classmethod
    def cost_shares(cls, generation: Any) -> dict[str, CostShare]:
        return {"generate": lambda *a, **k: 1.0}

    def start(self) -> Any:
        return None

    def run(self, states: list[Any], stages: list[int], contexts: Sequence[Context]) -> list[Any]:
        actions = self.gen.generate(concat_contexts(contexts))  # (B, A) or (B, H, A)
        return [actions[i] for i in range(len(states))]

    @classmethod
    def run_jobs(cls, jobs: Sequence[GenerationJob]) -> list[list[Any]]:
        """One ``generate`` over every session's requests."""
        actions = jobs[0].driver.gen.generate(concat_contexts([c for job in jobs for c in job.contexts]))
        return [[rows[i] for i in range(len(rows))] for rows in _split(actions, [len(j.states) for j in jobs])]

    def finish(self, state: Any) -> np.ndarray:
        return np.asarray(state)


class DenoisingDriver(FamilyDriver):
    """Diffusion / flow matching: stage g runs ``steps[g]`` of the n steps (skew ``alpha``)."""

    family = "denoising"
    tunes_alpha = True

    def __init__(self, generation: Any, pp_generation: int, alpha: float = 0.0, emit: str = "own",
                 store: PublicContextStore | None = None) -> None:
        super().__init__(generation, pp_generation, alpha, emit, store)
        self.steps = skewed_steps(generation.num_inference_steps, pp_generation, alpha)
        self.first_step = np.concatenate([[0], np.cumsum(self.steps)[:-1]]).astype(np.int64)
        self._noise = self._new_noise()

    def _new_noise(self) -> Any:
        """This session's own noise generator (``noise_generator``, seeded as the generation is after a
        reset), so a robot's noise never depends on the robots batched with it; None where the
        generation has none (its own generator, shared)."""
        make = getattr(self.gen, "noise_generator", None)
        return make() if make is not None else None

    @classmethod
    def iterations(cls, generation: Any) -> int:
        return int(generation.num_inference_steps)

    @classmethod
    def cost_shares(cls, generation: Any) -> dict[str, CostShare]:
        n = cls.iterations(generation)
        return {
            "generate": lambda *a, **k: 1.0,
            "denoise": lambda sample, step_index, num_steps, *a, **k: int(np.max(np.asarray(num_steps))) / n,
        }

    def start(self) -> Any:
        if self._noise is None:
            return self.gen.initial_noise(1)
        return self.gen.initial_noise(1, generator=self._noise)

    def run(self, states: list[Any], stages: list[int], contexts: Sequence[Context]) -> list[Any]:
        return self.run_jobs([GenerationJob(self, states, stages, contexts)])[0]

    @classmethod
    def run_jobs(cls, jobs: Sequence[GenerationJob]) -> list[list[Any]]:
        """One batched ``denoise`` over every session's requests, each row from its own step by its own
        count (sessions may differ in ``pp_generation`` and ``alpha``)."""
        import torch

        samples = torch.cat([torch.as_tensor(s) for job in jobs for s in job.states])  # (B, H, A)
        first = torch.as_tensor(np.concatenate([job.driver.first_step[job.stages] for job in jobs]))  # (B,)
        count = torch.as_tensor([job.driver.steps[g] for job in jobs for g in job.stages], dtype=torch.int64)
        context = concat_contexts([c for job in jobs for c in job.contexts])
        out = jobs[0].driver.gen.denoise(samples, first, count, context)
        return [[rows[i : i + 1] for i in range(len(rows))] for rows in _split(out, [len(j.states) for j in jobs])]

    def finish(self, state: Any) -> np.ndarray:
        return self.gen.to_actions(state)[0]  # (H, A)

    def reset(self) -> None:
        self._noise = self._new_noise()


class AutoregressiveDriver(FamilyDriver):
    """Action tokens: stage g fills its block of positions, one merged causal pass per position."""

    family = "autoregressive"

    def __init__(self, generation: Any, pp_generation: int, alpha: float = 0.0, emit: str = "own",
                 store: PublicContextStore | None = None) -> None:
        super().__init__(generation, pp_generation, alpha, emit, store)
        self.blocks = split_evenly(generation.num_action_tokens, pp_generation)
        # private contexts have no public tokens to emit: each request emits its own
        self.emit = emit if store is not None else "own"
        if store is not None:
            store.claim(PUBLIC_TOKENS, "generation")
        self._frame = 0

    @classmethod
    def iterations(cls, generation: Any) -> int:
        return int(generation.num_action_tokens)

    @classmethod
    def cost_shares(cls, generation: Any) -> dict[str, CostShare]:
        n = cls.iterations(generation)
        return {
            "generate": lambda *a, **k: 1.0,
            "decode_classic": lambda *a, **k: 1.0,
            "next_tokens": lambda *a, **k: 1.0 / n,
        }

    @classmethod
    def batch_rows(cls, pp_generation: int, public: bool) -> int:
        """``auras``: one merged pass over the freshest context serves every request (1 row)."""
        return 1 if public else pp_generation

    def startup(self, context: Context) -> None:
        """``auras`` mode: one serial classic decode initialises the public action tokens."""
        if self.store is not None:
            tokens = np.asarray(self.gen.decode_classic(context))[0].astype(np.int64)  # (l_a,)
            self._publish(tokens)

    def _publish(self, tokens: np.ndarray) -> None:
        assert self.store is not None
        self.store.write(PUBLIC_TOKENS, tokens, self._frame, "generation")
        self._frame += 1

    def _public_tokens(self) -> np.ndarray:
        assert self.store is not None
        return self.store.read(PUBLIC_TOKENS).value

    def start(self) -> Any:
        return np.zeros(self.gen.num_action_tokens, np.int64)

    def run(self, states: list[Any], stages: list[int], contexts: Sequence[Context]) -> list[Any]:
        return self.run_jobs([GenerationJob(self, states, stages, contexts)])[0]

    @classmethod
    def run_jobs(cls, jobs: Sequence[GenerationJob]) -> list[list[Any]]:
        """Every session's passes batched: one classic decode over the rows of the sessions with one block
        (the whole sequence), then per pass position j one ``next_tokens`` call over the rows of every
        session still filling a block: an ``auras`` session contributes one row (its freshest context and
        its public tokens), a ``pipeline`` session one row per request (its own context and tokens). All
        sessions of one policy share the context length (fixed image tokens, instructions padded to the
        policy's fixed length), so rows join without masks. The states given are not changed (a failed
        batch can be run again session by session); the public tokens are published once all passes ran."""
        out: list[list[Any] | None] = [None] * len(jobs)
        publish: list[tuple[AutoregressiveDriver, np.ndarray]] = []
        classic = [i for i, job in enumerate(jobs) if len(job.driver.blocks) == 1]
        if classic:
            context = concat_contexts([c for i in classic for c in jobs[i].contexts])
            tokens = np.asarray(jobs[classic[0]].driver.gen.decode_classic(context)).astype(np.int64)  # (B, l_a)
            for i, rows in zip(classic, _split(tokens, [len(jobs[i].states) for i in classic]), strict=True):
                out[i] = [row.copy() for row in rows]
                if jobs[i].driver.store is not None:
                    publish.append((jobs[i].driver, rows[-1].copy()))
        merged = [i for i, job in enumerate(jobs) if len(job.driver.blocks) > 1]
        # per merged job: the token rows it feeds each pass, and (row, request) -> the state it fills
        rows: dict[int, np.ndarray] = {}
        for i in merged:
            job = jobs[i]
            rows[i] = job.driver._public_tokens().copy()[None] if job.driver.store is not None else np.stack(job.states)
            out[i] = [np.array(state, copy=True) for state in job.states]
        passes = {i: max(len(jobs[i].driver.blocks[g]) for g in jobs[i].stages) for i in merged}
        for j in range(max(passes.values(), default=0)):
            active = [i for i in merged if j < passes[i]]
            contexts = [c for i in active for c in cls._pass_contexts(jobs[i])]
            preds = np.asarray(jobs[active[0]].driver.gen.next_tokens(
                concat_contexts(contexts), np.concatenate([rows[i] for i in active])))  # (rows, l_a)
            for i, pred in zip(active, _split(preds, [len(rows[i]) for i in active]), strict=True):
                job, public = jobs[i], jobs[i].driver.store is not None
                for b, (state, g) in enumerate(zip(out[i], job.stages, strict=True)):
                    if j < len(job.driver.blocks[g]):
                        pos = job.driver.blocks[g][j]
                        row = 0 if public else b
                        state[pos] = rows[i][row, pos] = pred[row, pos]
        for i in merged:
            if jobs[i].driver.store is not None:
                publish.append((jobs[i].driver, rows[i][0].copy()))
        for driver, tokens in publish:
            driver._publish(tokens)
        return [states if states is not None else [] for states in out]

    @staticmethod
    def _pass_contexts(job: GenerationJob) -> Sequence[Context]:
        """``auras``: one pass over the freshest context serves every request; ``pipeline``: each its own."""
        return [job.contexts[-1]] if job.driver.store is not None else job.contexts

    def finish(self, state: Any) -> np.ndarray:
        tokens = self._public_tokens() if self.emit == "public" else state
        return self.gen.detokenize(np.asarray(tokens)[None])[0]  # (H, A)

    def reset(self) -> None:
        self._frame = 0


def driver_for(family: str | Any) -> type[FamilyDriver]:
    """The driver class of a family name, or of a generation (its ``family`` attribute)."""
    name = family if isinstance(family, str) else getattr(family, "family", "oneshot")
    return FAMILIES.get(name)
