"""The privileged expert policy: the task's scripted expert behind the perception/generation split.

It reads ``Observation.extras["privileged_state"]`` (the full simulator state), so it is an upper
bound and a test driver, not something a real robot can run. Perception copies out the privileged
state; generation runs the scripted expert on each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from auras.envs.base import STATE_DIM
from auras.envs.experts import make_expert
from auras.errors import ConfigError
from auras.generation.base import Generation
from auras.perception.base import Context, Perception
from auras.policies.base import Policy
from auras.types import Observation, ObservationSpec

if TYPE_CHECKING:
    from auras.config import AurasConfig

__all__ = ["build_expert", "build_expert_policy"]

PRIVILEGED_KEY = "privileged_state"


class _ExpertPerception(Perception):
    def __init__(self, image_size: int, state_dim: int) -> None:
        self._spec = ObservationSpec({"front": (image_size, image_size)}, state_dim, (PRIVILEGED_KEY,))

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def perceive(self, observations: Sequence[Observation]) -> Context:
        states = np.stack([obs.extras[PRIVILEGED_KEY] for obs in observations])  # (B, S)
        return {PRIVILEGED_KEY: states}


class _ExpertGeneration(Generation):
    def __init__(self, task: str) -> None:
        self._expert = make_expert(task)

    @property
    def action_dim(self) -> int:
        return 4

    def generate(self, context: Context) -> np.ndarray:
        states = context[PRIVILEGED_KEY]  # (B, S)
        return np.stack([self._expert.act(s) for s in states]).astype(np.float32)  # (B, 4)

    def reset(self) -> None:
        self._expert.reset()


def build_expert_policy(task: str, image_size: int = 84) -> Policy:
    return Policy("expert", _ExpertPerception(image_size, STATE_DIM), _ExpertGeneration(task), privileged=True)


def build_expert(config: AurasConfig) -> Policy:
    """The registry's factory: the scripted expert of ``config.env.task``."""
    if (config.policy.scale_perception, config.policy.scale_generation) != (1.0, 1.0):
        raise ConfigError("policy.scale_perception / scale_generation: the scripted expert has no model to scale")
    return build_expert_policy(config.env.task, config.env.image_size)
