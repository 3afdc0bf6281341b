"""Generation contracts: the iterative half of a policy.

Called by the pipeline's generation worker (one thread or one Ray actor) with a context produced by
the matching perception (a batched :data:`~auras.perception.base.Context`). It returns float32
actions, batch-first: (B, A) or action chunks (B, H, A), in the env's action units.

A generation declares its *family* (``family``, a name in the family registry,
:mod:`auras.generation.families`); the runtime asks the family's driver how to spread a request's
iterations over pipeline stages, and never switches on the generation's class. Three families ship:

- ``oneshot`` (:class:`Generation`): one call, ``generate``; pipelined modes cut only perception.
- ``denoising`` (:class:`DiffusionGeneration`: diffusion or flow matching): a fixed number of
  integration steps over an action chunk; ``denoise`` advances a batch of requests that sit at
  *different* steps, each by its own number of steps, each conditioned on its own context row.
- ``autoregressive`` (:class:`AutoregressiveGeneration`): a causal LM over ``[X_V, X_L, X_A]``
  emitting discretised action tokens; (a) classic: prefill then greedy decode with a KV cache;
  (b) merged: one causal pass over the whole sequence gives the next-token prediction at every
  action position at once (``next_tokens``). With teacher-forced tokens (b) equals (a).

The iterative families derive ``generate`` (a whole request) from their step methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from auras.perception.base import Context, PolicyPart

__all__ = ["AutoregressiveGeneration", "DiffusionGeneration", "Generation", "SeededNoise"]


class Generation(PolicyPart, ABC):
    """Context -> actions. ``family`` names the driver that schedules it (default ``oneshot``)."""

    family: ClassVar[str] = "oneshot"

    @property
    @abstractmethod
    def action_dim(self) -> int:
        """A, the size of one action."""

    @property
    def action_shape(self) -> tuple[int, ...]:
        """The shape of one request's actions: (A,) or (H, A) for a chunk. Default (A,)."""
        return (self.action_dim,)

    @abstractmethod
    def generate(self, context: Context) -> np.ndarray:
        """Run every generation iteration for a batch: (B, A) or (B, H, A) float32."""


class DiffusionGeneration(Generation):
    """Denoising (diffusion or flow matching) of an action chunk (B, H, A). Step indices count
    0..num_inference_steps; a request starts at 0 from ``initial_noise`` and is done at n."""

    family: ClassVar[str] = "denoising"

    @property
    @abstractmethod
    def num_inference_steps(self) -> int:
        """n, denoising (integration) steps of one request."""

    @abstractmethod
    def initial_noise(self, batch: int, generator: Any = None) -> Any:
        """x_0 ~ N(0, I): (B, H, A) float32 tensor."""

    def noise_generator(self) -> Any:
        """A fresh generator for ``initial_noise``, seeded as the generation is after ``reset``. Every
        pipeline session draws its noise from its own, so a robot's actions do not depend on the robots
        batched with it (and an episode replays exactly). Default None: the generation's own generator,
        shared by every session (batching then changes which noise a robot gets)."""
        return None

    @abstractmethod
    def denoise(self, sample: Any, step_index: Any, num_steps: Any, context: Context) -> Any:
        """Advance each request b from its step ``step_index[b]`` by ``num_steps[b]`` steps.

        sample (B, H, A); step_index, num_steps (B,) int64; ``context``: the batched context, row b
        conditions request b. Returns the new sample (B, H, A). Identical steps of different
        requests run as one batched model call per iteration.
        """

    @abstractmethod
    def to_actions(self, sample: Any) -> np.ndarray:
        """A fully denoised sample (B, H, A) -> actions (B, H, A) float32 in env units."""

    def generate(self, context: Context) -> np.ndarray:
        """Initial noise, all n steps, to actions (one whole request per row)."""
        import torch

        batch = len(next(iter(context.values())))
        sample = self.initial_noise(batch)
        first = torch.zeros(batch, dtype=torch.int64)
        steps = torch.full((batch,), self.num_inference_steps, dtype=torch.int64)
        return self.to_actions(self.denoise(sample, first, steps, context))


class SeededNoise:
    """Mixin of a :class:`DiffusionGeneration` whose initial noise comes from torch generators seeded with one seed:
    ``reset`` reseeds its own, ``noise_generator`` gives each pipeline session a fresh one seeded alike (so a
    robot's noise never depends on the robots batched with it), ``initial_noise`` draws ``noise_shape(batch)``."""

    def seed_noise(self, seed: int) -> None:
        """Seed the noise (call in ``__init__``)."""
        self._seed = int(seed)
        self.reset()

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        raise NotImplementedError

    def reset(self) -> None:
        """Reseed the initial noise of ``generate`` (episodes are reproducible)."""
        self._generator = self.noise_generator()

    def noise_generator(self) -> Any:
        import torch

        return torch.Generator().manual_seed(self._seed)

    def initial_noise(self, batch: int, generator: Any = None) -> Any:
        import torch

        return torch.randn(self.noise_shape(batch), generator=generator if generator is not None else self._generator)


class AutoregressiveGeneration(Generation):
    """Causal-LM action decoding. Tensors are torch; B = batch, l_a = action tokens per request."""

    family: ClassVar[str] = "autoregressive"

    @property
    @abstractmethod
    def num_action_tokens(self) -> int:
        """l_a, action tokens per request (chunk length x action_dim)."""

    @abstractmethod
    def decode_classic(self, context: Context) -> Any:
        """(a) prefill over the context then greedy decode with a KV cache -> token ids (B, l_a)."""

    @abstractmethod
    def next_tokens(self, context: Context, action_tokens: Any) -> Any:
        """Greedy next-token predictions of one merged causal pass: (B, l_a) int64 valid action ids.

        ``result[:, i]`` predicts action token i from the context and ``action_tokens[:, :i]``
        (``action_tokens`` (B, l_a) int64; the last one is not consumed), by the same rule as
        ``decode_classic``.
        """

    @abstractmethod
    def detokenize(self, token_ids: Any) -> np.ndarray:
        """(B, l_a) token ids -> (B, H, A) float32 actions."""

    def generate(self, context: Context) -> np.ndarray:
        """The classic decode of every row, detokenized: (B, H, A)."""
        return self.detokenize(self.decode_classic(context))
