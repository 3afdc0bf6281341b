"""A policy is a perception and a generation that belong together, plus what the runtime must know
about it without holding its weights (:class:`PolicySpec`)."""

from __future__ import annotations

from dataclasses import dataclass

from auras.generation.base import Generation
from auras.generation.families import driver_for
from auras.perception.base import Perception
from auras.types import ObservationSpec

__all__ = ["Policy", "PolicySpec"]


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A weightless description of a policy: what the driver process (the agent, the bench, the
    bridge) needs while the workers hold the model.

    observation: what each observation must carry. action_shape: one request's actions, (A,) or
    (H, A). family: the generation family (its driver schedules generation). execute_steps: rows of
    a chunk the robot executes before the next observation is used. perception_stages: the natural
    perception stages (most ``pp_perception``). generation_iterations: iterations of one request
    (most ``pp_generation``). privileged: reads simulator state a real robot cannot have.
    """

    name: str
    observation: ObservationSpec
    action_shape: tuple[int, ...]
    family: str
    execute_steps: int
    perception_stages: int
    generation_iterations: int
    privileged: bool = False

    @property
    def action_dim(self) -> int:
        return self.action_shape[-1]

    @property
    def chunk_horizon(self) -> int:
        """H, actions per request (1 for single actions)."""
        return self.action_shape[0] if len(self.action_shape) == 2 else 1


@dataclass(frozen=True, slots=True)
class Policy:
    """name: registry name; privileged: reads simulator state a robot cannot have.

    execute_steps: how many rows of a predicted action chunk the robot executes before the next
    observation is used (Diffusion Policy: predict H, execute the first few). 1 for single actions.
    """

    name: str
    perception: Perception
    generation: Generation
    privileged: bool = False
    execute_steps: int = 1

    def reset(self) -> None:
        """Forget per-episode state of both parts (a new episode)."""
        self.perception.reset()
        self.generation.reset()

    def to(self, device: str, dtype: str = "float32") -> Policy:
        """Move both parts to ``device`` in ``dtype`` (called by the worker that hosts the policy)."""
        self.perception.to(device, dtype)
        self.generation.to(device, dtype)
        return self

    @property
    def spec(self) -> PolicySpec:
        gen = self.generation
        return PolicySpec(
            name=self.name,
            observation=self.perception.spec,
            action_shape=tuple(int(n) for n in gen.action_shape),
            family=gen.family,
            execute_steps=self.execute_steps,
            perception_stages=len(self.perception.stages()),
            generation_iterations=driver_for(gen).iterations(gen),
            privileged=self.privileged,
        )
