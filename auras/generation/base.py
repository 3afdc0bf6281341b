"""Generation contracts: the iterative half of a policy.

Called by the pipeline's generation worker (one thread or one Ray actor) with a context produced by
the matching perception. ``generate`` runs every iteration for a batch and returns float32 actions,
batch-first: (B, A) or action chunks (B, H, A), in the env's action units.

Two families refine it (as the Auras paper's models do):

- :class:`AutoregressiveGeneration`: a causal LM over ``[X_V, X_L, X_A]`` emitting discretised
  action tokens. (a) classic: prefill over ``[X_V, X_L]`` then greedy decode with a KV cache;
  (b) merged: one causal pass over ``[X_V, X_L, X_A]`` giving the next-token prediction at every
  action position at once. With teacher-forced tokens (b) equals (a) position by position.
- :class:`DiffusionGeneration`: a denoiser over an action chunk; ``denoise`` advances a batch of
  requests that sit at *different* denoising steps, each by its own number of steps, each
  conditioned on its own ``H_o``. Batched equals unbatched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from auras.perception.base import Context

__all__ = ["AutoregressiveGeneration", "DiffusionGeneration", "Generation"]


class Generation(ABC):
    """Context -> actions."""

    @property
    @abstractmethod
    def action_dim(self) -> int:
        """A, the size of one action."""

    @abstractmethod
    def generate(self, context: Context) -> np.ndarray:
        """Run every generation iteration for a batch: (B, A) or (B, H, A) float32."""


class AutoregressiveGeneration(Generation):
    """Causal-LM action decoding. Tensors are torch; B = batch, l = len(X_V) + len(X_L), D = width."""

    @property
    @abstractmethod
    def num_action_tokens(self) -> int:
        """l_a, action tokens per request (chunk length x action_dim)."""

    @abstractmethod
    def decode_classic(self, context: Context) -> Any:
        """(a) prefill over [X_V, X_L] then greedy decode with a KV cache -> token ids (B, l_a)."""

    @abstractmethod
    def merged_logits(self, context: Context, action_tokens: Any) -> Any:
        """(b) one causal pass over [X_V, X_L, X_A(action_tokens)] -> logits (B, l_a, V).

        ``logits[:, i]`` predicts action token i from the context and ``action_tokens[:, :i]``;
        ``action_tokens`` (B, l_a) int64 (the last one is not consumed).
        """

    @abstractmethod
    def next_tokens(self, context: Context, action_tokens: Any) -> Any:
        """Greedy next-token predictions of one merged pass: (B, l_a) int64 valid action token ids.

        ``result[:, i]`` is the greedy choice of ``merged_logits(...)[:, i]`` over valid action tokens, by
        the same rule as ``decode_classic`` (the argmax, or a model-defined deterministic variant of it).
        """

    @abstractmethod
    def detokenize(self, token_ids: Any) -> np.ndarray:
        """(B, l_a) token ids -> (B, H, A) float32 actions."""


class DiffusionGeneration(Generation):
    """Denoising of an action chunk (B, H, A). Step indices count 0..num_inference_steps."""

    @property
    @abstractmethod
    def num_inference_steps(self) -> int:
        """n, denoising steps of one request."""

    @abstractmethod
    def initial_noise(self, batch: int, generator: Any = None) -> Any:
        """x_0 ~ N(0, I): (B, H, A) float32 tensor."""

    @abstractmethod
    def denoise(self, sample: Any, step_index: Any, num_steps: Any, h_o: Any) -> Any:
        """Advance each request b from its step ``step_index[b]`` by ``num_steps[b]`` steps.

        sample (B, H, A); step_index, num_steps (B,) int64; h_o (B, D) conditioning per request.
        Returns the new sample (B, H, A). Identical stages of different requests run as one
        batched model call per iteration.
        """

    @abstractmethod
    def to_actions(self, sample: Any) -> np.ndarray:
        """A fully denoised sample (B, H, A) -> actions (B, H, A) float32 in env units."""
