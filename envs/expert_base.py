"""The scripted-expert contract (its own module so that experts and the tasks defining them import it
without importing each other)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Expert"]


class Expert(ABC):
    """Contract: called once per control step, from one thread, with that step's privileged state."""

    @abstractmethod
    def act(self, privileged_state: np.ndarray) -> np.ndarray:
        """(4,) float32 action in [-1, 1] for this state."""

    def reset(self) -> None:  # noqa: B027  (optional hook; stateless experts need nothing)
        """Forget per-episode state (called at every env reset)."""
