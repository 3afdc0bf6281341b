"""Injected latency: a policy whose stages take longer, for `auras bench --delay-ms` sweeps.

The delay models a slower device or a bigger model, not extra work: ``perception_ms`` is added to
one request's whole perception, spread evenly over its stages; ``generation_ms`` to one request's
whole generation, spread over its iterations (denoising steps or action tokens). A batched call
that advances several requests sleeps as long as its longest member, since batching identical
stages is nearly free on a real accelerator. The wrapped policy computes exactly what the original
computes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from auras.generation.base import AutoregressiveGeneration, DiffusionGeneration, Generation
from auras.perception.base import Context, Perception
from auras.policies.base import Policy
from auras.types import Observation, ObservationSpec

__all__ = ["with_injected_delay"]


def with_injected_delay(policy: Policy, perception_ms: float = 0.0, generation_ms: float = 0.0) -> Policy:
    """``policy`` with ``perception_ms`` / ``generation_ms`` of sleep added per request (see module doc)."""
    if perception_ms < 0 or generation_ms < 0:
        raise ValueError(f"injected delays must be >= 0 ms, got perception {perception_ms}, generation {generation_ms}")
    perception, generation = policy.perception, policy.generation
    if perception_ms > 0:
        perception = _DelayedPerception(perception, perception_ms / 1e3)
    if generation_ms > 0:
        seconds = generation_ms / 1e3
        if isinstance(generation, DiffusionGeneration):
            generation = _DelayedDiffusion(generation, seconds)
        elif isinstance(generation, AutoregressiveGeneration):
            generation = _DelayedAutoregressive(generation, seconds)
        else:
            generation = _DelayedGeneration(generation, seconds)
    return replace(policy, perception=perception, generation=generation)


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


class _Delegate:
    """Forwards everything not overridden (reset, model, ...) to the wrapped part."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _DelayedPerception(_Delegate, Perception):
    @property
    def spec(self) -> ObservationSpec:
        return self._inner.spec

    def perceive(self, observations: Sequence[Observation]) -> Context:
        _sleep(self._seconds)
        return self._inner.perceive(observations)

    def stages(self) -> list[Callable[[Any], Any]]:
        inner = self._inner.stages()
        share = self._seconds / len(inner)

        def delayed(stage: Callable[[Any], Any]) -> Callable[[Any], Any]:
            def run(x: Any) -> Any:
                _sleep(share)
                return stage(x)

            return run

        return [delayed(stage) for stage in inner]


class _DelayedGeneration(_Delegate, Generation):
    @property
    def action_dim(self) -> int:
        return self._inner.action_dim

    def generate(self, context: Context) -> np.ndarray:
        _sleep(self._seconds)
        return self._inner.generate(context)


class _DelayedDiffusion(_DelayedGeneration, DiffusionGeneration):
    @property
    def num_inference_steps(self) -> int:
        return self._inner.num_inference_steps

    def initial_noise(self, batch: int, generator: Any = None) -> Any:
        return self._inner.initial_noise(batch, generator)

    def denoise(self, sample: Any, step_index: Any, num_steps: Any, h_o: Any) -> Any:
        _sleep(self._seconds * int(np.max(np.asarray(num_steps))) / self.num_inference_steps)
        return self._inner.denoise(sample, step_index, num_steps, h_o)

    def to_actions(self, sample: Any) -> np.ndarray:
        return self._inner.to_actions(sample)


class _DelayedAutoregressive(_DelayedGeneration, AutoregressiveGeneration):
    @property
    def num_action_tokens(self) -> int:
        return self._inner.num_action_tokens

    def decode_classic(self, context: Context) -> Any:
        _sleep(self._seconds)
        return self._inner.decode_classic(context)

    def merged_logits(self, context: Context, action_tokens: Any) -> Any:
        _sleep(self._seconds / self.num_action_tokens)
        return self._inner.merged_logits(context, action_tokens)

    def next_tokens(self, context: Context, action_tokens: Any) -> Any:
        _sleep(self._seconds / self.num_action_tokens)
        return self._inner.next_tokens(context, action_tokens)

    def detokenize(self, token_ids: Any) -> np.ndarray:
        return self._inner.detokenize(token_ids)
