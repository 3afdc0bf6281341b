"""Generation contract: the iterative half of a policy.

Called by the pipeline's generation worker (one thread or one Ray actor) with a context produced
by the matching perception. Returns float32 actions, batch-first: (B, A) or action chunks (B, H, A).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from auras.perception.base import Context

__all__ = ["Generation"]


class Generation(ABC):
    """Context -> actions."""

    @property
    @abstractmethod
    def action_dim(self) -> int:
        """A, the size of one action."""

    @abstractmethod
    def generate(self, context: Context) -> np.ndarray:
        """Run every generation iteration for a batch: (B, A) or (B, H, A) float32 in [-1, 1]."""
