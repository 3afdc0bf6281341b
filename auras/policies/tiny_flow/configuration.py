"""tiny-flow's model configuration (``policy.model`` with ``policy.type: tiny-flow``; a checkpoint's config.json)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator

from auras.policies.configuration import PolicyModelConfig

__all__ = ["TinyFlowConfig"]


class TinyFlowConfig(PolicyModelConfig):
    """A small member of the SmolVLA architecture: a SmolVLM prefix (perception) and a flow-matching action
    expert integrated in ``num_steps`` Euler steps (generation)."""

    policy_type: ClassVar[str] = "tiny-flow"
    SERVING_KEYS: ClassVar[frozenset[str]] = frozenset({"execute_steps", "num_steps"})
    TRAINING_KEYS: ClassVar[frozenset[str]] = frozenset({"shift_pad"})

    chunk_horizon: int = Field(16, ge=1, le=256)
    execute_steps: int = Field(8, ge=1, le=256)
    image_size: int = Field(84, ge=8, le=1024)
    resize: int = Field(96, ge=8, le=1024, description="Images are resized with padding to this side.")
    max_instruction_bytes: int = Field(64, ge=1, le=4096)
    action_dim: int = Field(4, ge=1, le=64)
    state_dim: int = Field(4, ge=1, le=1024)
    num_steps: int = Field(10, ge=1, le=1000, description="Flow-matching Euler steps per request.")
    vision_hidden: int = Field(64, ge=1)
    vision_layers: int = Field(3, ge=1)
    vision_heads: int = Field(4, ge=1)
    vision_intermediate: int = Field(128, ge=1)
    patch_size: int = Field(12, ge=1)
    scale_factor: int = Field(2, ge=1, description="Pixel-shuffle factor of the vision tokens.")
    text_hidden: int = Field(128, ge=1)
    text_layers: int = Field(4, ge=1)
    text_heads: int = Field(4, ge=1)
    text_kv_heads: int = Field(2, ge=1)
    text_intermediate: int = Field(256, ge=1)
    expert_width_multiplier: float = Field(0.75, gt=0.0)
    self_attn_every_n_layers: int = Field(2, ge=1)
    shift_pad: int = Field(4, ge=0, description="Training only: random-shift augmentation, pixels.")
    state_mean: list[float] = Field([0.0] * 4, min_length=1)
    state_std: list[float] = Field([1.0] * 4, min_length=1)
    action_mean: list[float] = Field([0.0] * 4, min_length=1)
    action_std: list[float] = Field([1.0] * 4, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.execute_steps > self.chunk_horizon:
            raise ValueError(f"execute_steps: expected 1..{self.chunk_horizon}, got {self.execute_steps}")
        if self.text_hidden % (heads := self.text_heads):
            raise ValueError(f"text_hidden: expected a multiple of {heads} (text_heads), got {self.text_hidden}")
        return self
