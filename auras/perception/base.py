"""Perception contract: the one-shot half of a policy.

Called by the pipeline's perception worker (one thread or one Ray actor), once per admitted batch
of observations. It maps observations to a named *context*: ``name -> batch-first array`` (numpy
or torch), e.g. ``X_V`` (B, N_v, D) vision tokens, or ``H_o`` (B, D) observation features. The
context is what generation reads and what the public context store will hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from auras.types import Observation, ObservationSpec

__all__ = ["Context", "Perception"]

Context = Mapping[str, Any]
"""name -> batch-first array (numpy array or torch tensor); batch size B is the same for every key."""


class Perception(ABC):
    """Observations -> context. Stateless across calls: the same observations give the same context."""

    @property
    @abstractmethod
    def spec(self) -> ObservationSpec:
        """What each observation must carry (cameras, proprio size, extras)."""

    @abstractmethod
    def perceive(self, observations: Sequence[Observation]) -> Context:
        """Encode a batch of B observations (already validated against ``spec``) into a context."""

    def stages(self) -> list[Callable[[Any], Any]]:
        """The computation cut into stages of roughly equal cost, run in order: the first takes the
        list of observations, each later one takes its predecessor's output, the last returns the
        context. The default is one stage, ``perceive`` itself."""
        return [self.perceive]
