"""SmolVLA's settings (``policy.model`` with ``policy.type: smolvla``): what may change on a LeRobot checkpoint
when auras serves it. The architecture itself is the checkpoint's (its LeRobot ``config.json``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from auras.policies.configuration import PolicyModelConfig

__all__ = ["SmolVLAConfig"]


class SmolVLAConfig(PolicyModelConfig):
    policy_type: ClassVar[str] = "smolvla"
    SERVING_KEYS: ClassVar[frozenset[str]] = frozenset({"num_steps"})

    num_steps: int | None = Field(
        None, ge=1, le=1000, description="Flow-matching Euler steps per request (None: the checkpoint's num_steps)."
    )
