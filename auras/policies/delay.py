"""Injected latency: a policy whose stages take longer, for `auras bench --delay-ms` sweeps.

The delay models a slower device or a bigger model, not extra work: ``perception_ms`` is added to
one request's whole perception, spread evenly over its stages; ``generation_ms`` to one request's
whole generation, spread over its iterations as the generation's family driver accounts them
(``FamilyDriver.cost_shares``: a denoising call sleeps the share of its longest member, a merged
autoregressive pass 1/l_a, a whole ``generate`` all of it). A batched call that advances several
requests sleeps as long as its longest member, since batching identical stages is nearly free on a
real accelerator. The wrapped policy computes exactly what the original computes. Each wrapper's
``injected_s`` may be changed while the policy runs (a load step: ``scripts/load_step.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from auras.generation.families import driver_for
from auras.perception.base import Context, ForwardingPerception, Perception
from auras.policies.base import Policy
from auras.types import Observation

__all__ = ["with_injected_delay"]


def with_injected_delay(policy: Policy, perception_ms: float = 0.0, generation_ms: float = 0.0,
                        sleep: Callable[[float], None] = time.sleep) -> Policy:
    """``policy`` with ``perception_ms`` / ``generation_ms`` of ``sleep`` added per request (see module doc);
    ``sleep``: a clock's (an agent on :class:`auras.clock.FakeClock` then sees exactly these costs)."""
    if perception_ms < 0 or generation_ms < 0:
        raise ValueError(f"injected delays must be >= 0 ms, got perception {perception_ms}, generation {generation_ms}")
    perception, generation = policy.perception, policy.generation
    if perception_ms > 0:
        perception = _DelayedPerception(perception, perception_ms / 1e3, sleep)
    if generation_ms > 0:
        generation = _DelayedGeneration(generation, generation_ms / 1e3, sleep)
    return replace(policy, perception=perception, generation=generation)


class _DelayedPerception(ForwardingPerception):
    """The wrapped perception, each call sleeping ``injected_s`` first (spread over the stages)."""

    def __init__(self, inner: Perception, seconds: float, sleep: Callable[[float], None]) -> None:
        super().__init__(inner)
        self.injected_s, self._sleep = seconds, sleep

    def perceive(self, observations: Sequence[Observation]) -> Context:
        self._sleep(self.injected_s)
        return self._inner.perceive(observations)

    def stages(self) -> list[Callable[[Any], Any]]:
        inner = self._inner.stages()
        share = self.injected_s / len(inner)

        def delayed(stage: Callable[[Any], Any]) -> Callable[[Any], Any]:
            def run(x: Any) -> Any:
                self._sleep(share)
                return stage(x)

            return run

        return [delayed(stage) for stage in inner]


class _DelayedGeneration:
    """The wrapped generation, every attribute forwarded; the methods its family driver names in
    ``cost_shares`` sleep their share of ``seconds`` first. Reads as the same family."""

    def __init__(self, inner: Any, seconds: float, sleep: Callable[[float], None]) -> None:
        self._inner = inner
        self.injected_s, self._sleep = seconds, sleep
        self._shares = driver_for(inner).cost_shares(inner)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "injected_s", "_shares", "_sleep"):
            raise AttributeError(name)
        value = getattr(self._inner, name)
        share = self._shares.get(name)
        if share is None or not callable(value):
            return value

        def delayed(*args: Any, **kwargs: Any) -> Any:
            self._sleep(self.injected_s * share(*args, **kwargs))
            return value(*args, **kwargs)

        return delayed
