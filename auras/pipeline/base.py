"""Executor contract: how a policy's perception and generation are scheduled (one per mode).

The agent owns exactly one executor and calls it from one thread. ``step`` admits one observation
(already validated against the policy's spec) and returns the action the mode makes available.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from auras.policies.base import Policy
from auras.types import Action, Observation

__all__ = ["Executor"]


class Executor(ABC):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @abstractmethod
    def step(self, obs: Observation) -> Action:
        """Admit ``obs`` and return the action for the robot to apply now."""

    def reset(self) -> None:
        """Drop in-flight work and per-episode state (new episode)."""
        self.policy.reset()

    def close(self) -> None:  # noqa: B027  (optional: executors without workers hold nothing)
        """Release workers; idempotent."""
