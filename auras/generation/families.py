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
    stage index, the context it reads); ``finish(state)`` turns a finished state into the (H, A) or
    (A,) actions. ``startup(context)`` runs once, on the first context (may be a no-op).
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
        return self.gen.initial_noise(1)

    def run(self, states: list[Any], stages: list[int], contexts: Sequence[Context]) -> list[Any]:
        import torch

        samples = torch.cat([torch.as_tensor(s) for s in states])  # (B, H, A)
        first = torch.as_tensor(self.first_step[stages])  # (B,)
        count = torch.as_tensor([self.steps[g] for g in stages], dtype=torch.int64)  # (B,)
        out = self.gen.denoise(samples, first, count, concat_contexts(contexts))
        return [out[i : i + 1] for i in range(len(states))]

    def finish(self, state: Any) -> np.ndarray:
        return self.gen.to_actions(state)[0]  # (H, A)


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
        if len(self.blocks) == 1:  # one block = the whole sequence: the classic KV-cached decode, same tokens
            tokens = np.asarray(self.gen.decode_classic(concat_contexts(contexts))).astype(np.int64)  # (B, l_a)
            for state, row in zip(states, tokens, strict=True):
                state[:] = row
            if self.store is not None:
                self._publish(tokens[-1].copy())
            return states
        passes = max(len(self.blocks[g]) for g in stages)
        if self.store is not None:  # auras: one pass over the freshest context serves every block
            public = self._public_tokens().copy()  # (l_a,)
            for j in range(passes):
                preds = np.asarray(self.gen.next_tokens(contexts[-1], public[None]))[0]  # (l_a,)
                for state, g in zip(states, stages, strict=True):
                    if j < len(self.blocks[g]):
                        pos = self.blocks[g][j]
                        state[pos] = public[pos] = preds[pos]
            self._publish(public)
            return states
        # pipeline: one batched pass over every request's own context and own tokens
        batch_context = concat_contexts(contexts)
        own = np.stack(states)  # (B, l_a)
        for j in range(passes):
            preds = np.asarray(self.gen.next_tokens(batch_context, own))  # (B, l_a)
            for b, g in enumerate(stages):
                if j < len(self.blocks[g]):
                    pos = self.blocks[g][j]
                    own[b, pos] = preds[b, pos]
        for state, row in zip(states, own, strict=True):
            state[:] = row
        return states

    def finish(self, state: Any) -> np.ndarray:
        tokens = self._public_tokens() if self.emit == "public" else state
        return self.gen.detokenize(np.asarray(tokens)[None])[0]  # (H, A)

    def reset(self) -> None:
        self._frame = 0


def driver_for(family: str | Any) -> type[FamilyDriver]:
    """The driver class of a family name, or of a generation (its ``family`` attribute)."""
    name = family if isinstance(family, str) else getattr(family, "family", "oneshot")
    return FAMILIES.get(name)
