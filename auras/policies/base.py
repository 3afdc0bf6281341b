"""A policy is a perception and a generation that belong together."""

from __future__ import annotations

from dataclasses import dataclass

from auras.generation.base import Generation
from auras.perception.base import Perception

__all__ = ["Policy"]


@dataclass(frozen=True, slots=True)
class Policy:
    """name: registry name ('expert', ...); privileged: reads simulator state a robot cannot have.

    execute_steps: how many rows of a predicted action chunk the robot executes before the next
    observation is used (Diffusion Policy: predict H, execute the first few). 1 for single actions.
    """

    name: str
    perception: Perception
    generation: Generation
    privileged: bool = False
    execute_steps: int = 1

    def reset(self) -> None:
        """Forget per-episode state, if any part keeps some."""
        for part in (self.perception, self.generation):
            reset = getattr(part, "reset", None)
            if callable(reset):
                reset()
