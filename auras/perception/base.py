"""Perception contract: the one-shot half of a policy.

Called by the pipeline's perception worker (one thread or one Ray actor), once per admitted batch
of observations. It maps observations to a named *context*: a flat mapping ``name -> batch-first
tensor`` (torch or numpy) of any shape: ``H_o`` (B, D) observation features, ``X_V`` (B, N_v, D)
vision tokens, or a per-layer key/value cache under one name per layer and tensor. Batch size B is
the same for every key. The context is what generation reads and what the public context store
holds; the runtime never looks inside it except to batch, move and ship it.

A perception defines ``stages()`` (its computation cut into stages of near-equal cost, which the
pipeline spreads over frames) or ``perceive`` (one stage), or both; whichever it leaves out is
derived from the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from auras.errors import ConfigError
from auras.types import Observation, ObservationSpec

__all__ = ["Context", "ForwardingPerception", "Perception", "PolicyPart"]

Context = Mapping[str, Any]
"""name -> batch-first array (torch tensor or numpy array) of any shape; B is the same for every key."""


class PolicyPart:
    """What perception and generation share: per-episode state and where they run.

    ``reset`` is called by the worker that hosts the part at the start of every episode (default:
    nothing to forget). ``to`` is called by that worker once, before the first request, with
    ``policy.device`` and ``policy.dtype``; the default accepts only ``cpu`` / ``float32`` and says so
    for anything else, so a part that cannot move is never run on the wrong device quietly.
    ``compile`` is called after ``to`` when ``policy.compile`` is not ``off``; the default says the
    part has nothing to compile.
    """

    def reset(self) -> None:
        """Forget per-episode state (default: none)."""

    def to(self, device: str, dtype: str = "float32") -> None:
        """Move weights and buffers to ``device`` in ``dtype`` (names as in :mod:`auras.devices`)."""
        if (device, dtype) != ("cpu", "float32"):
            raise ConfigError(
                f"{type(self).__name__} runs on cpu in float32 only (it does not implement to()); "
                f"got policy.device={device!r}, policy.dtype={dtype!r}"
            )

    def compile(self, mode: str, batch: int = 1) -> None:
        """Compile this part's stage callables (``auras.compiled.CompiledStage``, torch.compile ``mode``)
        with their batch held at ``batch`` rows, the most this part's hosting worker ever batches."""
        raise ConfigError(
            f"{type(self).__name__} has no compiled stages (it does not implement compile()); "
            f"got policy.compile={mode!r}, expected 'off'"
        )


class Perception(PolicyPart, ABC):
    """Observations -> context. Stateless across calls: the same observations give the same context."""

    @property
    @abstractmethod
    def spec(self) -> ObservationSpec:
        """What each observation must carry (cameras, proprio size, extras)."""

    def perceive(self, observations: Sequence[Observation]) -> Context:
        """Encode a batch of B observations (already validated against ``spec``) into a context.
        Default: run ``stages()`` in order."""
        if type(self).stages is Perception.stages:
            raise TypeError(f"{type(self).__name__}: a Perception defines perceive() or stages() (or both)")
        carry: Any = observations
        for stage in self.stages():
            carry = stage(carry)
        return carry

    def stages(self) -> list[Callable[[Any], Any]]:
        """The computation cut into stages of roughly equal cost, run in order: the first takes the
        list of observations, each later one takes its predecessor's output, the last returns the
        context. Default: one stage, ``perceive`` itself."""
        return [self.perceive]


class ForwardingPerception(Perception):
    """A wrapper around another perception: everything it does not override (its spec, ``reset``,
    ``to``, the model, ...) is the wrapped one's. Subclasses override ``perceive`` and ``stages``."""

    def __init__(self, inner: Perception) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    @property
    def spec(self) -> ObservationSpec:
        return self._inner.spec

    def reset(self) -> None:
        self._inner.reset()

    def to(self, device: str, dtype: str = "float32") -> None:
        self._inner.to(device, dtype)
