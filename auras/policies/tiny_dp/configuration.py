"""tiny-dp's model configuration (``policy.model`` with ``policy.type: tiny-dp``; a checkpoint's config.json)."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from auras.policies.configuration import PolicyModelConfig

__all__ = ["TinyDPConfig"]


class TinyDPConfig(PolicyModelConfig):
    """A small Diffusion Policy: a CNN + proprio + instruction encoder (perception) and a 1-D temporal U-Net
    denoising (H, A) action chunks with DDIM (generation)."""

    policy_type: ClassVar[str] = "tiny-dp"
    SERVING_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"execute_steps", "num_inference_steps", "timestep_spacing", "clip_sample", "noise_seed"}
    )
    TRAINING_KEYS: ClassVar[frozenset[str]] = frozenset({"shift_pad"})

    chunk_horizon: int = Field(16, ge=1, le=256, description="H, actions predicted per request.")
    execute_steps: int = Field(8, ge=1, le=256, description="Actions executed before the next observation is used.")
    action_dim: int = Field(4, ge=1, le=64)
    state_dim: int = Field(4, ge=1, le=1024)
    image_size: int = Field(84, ge=8, le=1024, description="Side of the square front camera image, pixels.")
    max_instruction_bytes: int = Field(64, ge=1, le=4096, description="Longest instruction read (UTF-8 bytes).")
    cnn_channels: list[int] = Field([32, 64, 128], min_length=1, description="One stride-2 conv block each.")
    num_keypoints: int = Field(32, ge=1, description="Spatial-softmax keypoints (2 features each).")
    text_dim: int = Field(32, ge=1, description="Byte-embedding width.")
    obs_dim: int = Field(128, ge=1, description="D, the width of H_o.")
    down_dims: list[int] = Field([32, 64, 128], min_length=1, description="U-Net widths per level.")
    kernel_size: int = Field(5, ge=1)
    n_groups: int = Field(8, ge=1, description="GroupNorm groups.")
    step_embed_dim: int = Field(64, ge=2)
    num_train_timesteps: int = Field(100, ge=1)
    num_inference_steps: int = Field(25, ge=1, description="DDIM steps per request (choose a divisor of 100).")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    timestep_spacing: Literal["leading", "trailing", "linspace"] = Field(
        "trailing", description="trailing: inference starts at t = T - 1 (pure noise)."
    )
    clip_sample: bool = True
    shift_pad: int = Field(4, ge=0, description="Training only: random-shift augmentation, pixels.")
    noise_seed: int = Field(0, description="Seed of generate()'s initial noise (reseeded on reset).")
    action_min: list[float] | None = Field(None, description="Per-dimension normalisation bounds (fitted in training).")
    action_max: list[float] | None = None
    state_min: list[float] | None = None
    state_max: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        levels = len(self.down_dims)
        if self.chunk_horizon % 2 ** (levels - 1):
            raise ValueError(f"chunk_horizon: expected a positive multiple of {2 ** (levels - 1)} (U-Net with "
                             f"{levels} levels), got {self.chunk_horizon}")
        if self.execute_steps > self.chunk_horizon:
            raise ValueError(f"execute_steps: expected 1..{self.chunk_horizon}, got {self.execute_steps}")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(f"num_inference_steps: expected 1..{self.num_train_timesteps} (num_train_timesteps), got "
                             f"{self.num_inference_steps}")
        for kind, dim in (("action", self.action_dim), ("state", self.state_dim)):
            low, high = getattr(self, f"{kind}_min"), getattr(self, f"{kind}_max")
            if (low is None) != (high is None) or (low is not None and (len(low) != dim or len(high) != dim)):
                raise ValueError(f"{kind}_min/{kind}_max: expected both unset or {dim} values each")
        return self
