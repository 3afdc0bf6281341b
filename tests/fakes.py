"""Fake perception/generation with programmable delay, for fast tests of scheduling logic."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from auras.generation.base import Generation
from auras.perception.base import Context, Perception
from auras.policies.base import Policy
from auras.types import Observation, ObservationSpec


class FakePerception(Perception):
    """Context = each observation's step id and state; sleeps ``delay_s`` per call."""

    def __init__(self, delay_s: float = 0.0, image_size: int = 8) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self._spec = ObservationSpec({"front": (image_size, image_size)}, state_dim=4)

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def perceive(self, observations: Sequence[Observation]) -> Context:
        self.calls += 1
        time.sleep(self.delay_s)
        return {
            "step_id": np.array([o.step_id for o in observations], np.int64),  # (B,)
            "state": np.stack([o.state for o in observations]),  # (B, 4)
        }


class FakeGeneration(Generation):
    """Action = state + step id / 1000, so each action traces to its observation; sleeps ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.resets = 0

    @property
    def action_dim(self) -> int:
        return 4

    def generate(self, context: Context) -> np.ndarray:
        time.sleep(self.delay_s)
        return (context["state"] + context["step_id"][:, None] / 1000.0).astype(np.float32)  # (B, 4)

    def reset(self) -> None:
        self.resets += 1


def fake_policy(perception_s: float = 0.0, generation_s: float = 0.0) -> Policy:
    return Policy("fake", FakePerception(perception_s), FakeGeneration(generation_s))


def fake_observation(step_id: int, image_size: int = 8) -> Observation:
    return Observation(
        images={"front": np.full((image_size, image_size, 3), step_id % 256, np.uint8)},
        state=np.full(4, 0.1, np.float32),
        instruction="do the thing",
        step_id=step_id,
        capture_time=time.monotonic(),
    )
