"""π0's and π0.5's settings (``policy.model`` with ``policy.type: pi0`` or ``pi05``): what may change on a LeRobot
checkpoint when auras serves it. The architecture itself is the checkpoint's (its weights and ``config.json``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from auras.policies.configuration import PolicyModelConfig

__all__ = ["Pi0Config", "Pi05Config"]


class Pi0Config(PolicyModelConfig):
    policy_type: ClassVar[str] = "pi0"
    SERVING_KEYS: ClassVar[frozenset[str]] = frozenset({"num_steps", "cameras", "tokenizer", "vision_heads"})

    num_steps: int | None = Field(
        None, ge=1, le=1000, description="Flow-matching Euler steps per request (None: num_inference_steps)."
    )
    cameras: list[str] | None = Field(
        None,
        description="The checkpoint's cameras the robot sends (names after 'observation.images.'); the others are "
        "empty cameras (masked out, as LeRobot does when an image is missing). None: every camera.",
    )
    tokenizer: str | None = Field(
        None,
        description="Directory of the PaliGemma tokenizer (tokenizer.json); None: the preprocessor's tokenizer_name, "
        "resolved against the checkpoint directory and its parent.",
    )
    vision_heads: int | None = Field(
        None, ge=1, description="SigLIP's attention heads (not in the weights); None: 16 at PaliGemma's width "
        "1152, else heads of 16 dims.",
    )


class Pi05Config(Pi0Config):
    policy_type: ClassVar[str] = "pi05"
