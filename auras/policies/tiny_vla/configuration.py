"""tiny-vla's model configuration (``policy.model`` with ``policy.type: tiny-vla``; a checkpoint's config.json)."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from auras.policies.configuration import PolicyModelConfig

__all__ = ["TinyVLAConfig"]


class TinyVLAConfig(PolicyModelConfig):
    """A small autoregressive VLA: a ViT (perception) and a Llama decoder emitting one binned token per action
    dimension and step (generation)."""

    policy_type: ClassVar[str] = "tiny-vla"
    SERVING_KEYS: ClassVar[frozenset[str]] = frozenset({"execute_steps", "decode_sigma", "use_proprio"})
    TRAINING_KEYS: ClassVar[frozenset[str]] = frozenset({"augment_shift", "token_corruption", "label_sigma",
                                                         "decode_sigma"})

    image_size: int = Field(84, ge=8, le=1024)
    patch_size: int = Field(12, ge=1, description="ViT patch side, pixels (84 / 12: 7 x 7 patches + CLS).")
    vit_hidden: int = Field(64, ge=1)
    vit_layers: int = Field(3, ge=1)
    vit_heads: int = Field(4, ge=1)
    vit_intermediate: int = Field(128, ge=1)
    vision_tokens: int = Field(8, ge=1, description="Learned queries resampling the patches into X_V tokens.")
    vit_position_init: Literal["random", "sincos"] = Field(
        "random", description="Initial ViT position embeddings: transformers' random init, or a fixed 2-D sine-cosine "
        "(as MAE), then learned.",
    )
    vision_keypoints: int = Field(
        0, ge=0, description="Spatial-softmax keypoints over the patch grid, as one extra X_V token (0: none)."
    )
    vit_stem: Literal["patch", "conv"] = Field(
        "patch", description="Pixels to patch tokens: the ViT's linear patch embedding, or a convolutional stem."
    )
    stem_channels: int = Field(32, ge=1)
    text_pool: int = Field(6, ge=1, description="Instruction bytes per language token.")
    lm_hidden: int = Field(128, ge=1)
    lm_layers: int = Field(6, ge=1)
    lm_heads: int = Field(4, ge=1)
    lm_intermediate: int = Field(256, ge=1)
    n_bins: int = Field(256, ge=2, description="Action bins per dimension (the action tokens).")
    action_dim: int = Field(4, ge=1, le=64)
    chunk_horizon: int = Field(8, ge=1, le=256)
    execute_steps: int = Field(4, ge=1, le=256)
    max_instruction_bytes: int = Field(48, ge=1, le=4096)
    perception_stages: int = Field(2, ge=1)
    augment_shift: int = Field(4, ge=0, description="Training only: random-shift augmentation, pixels.")
    proprio_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Training: probability a sample's proprio token is replaced by a learned "
        "'no proprio' token, so the model must read the image (> 0 adds that token).",
    )
    token_corruption: float = Field(
        0.0, ge=0.0, lt=1.0, description="Training only: probability an input action token of the teacher-forced "
        "pass is replaced by a random bin (the target stays).",
    )
    label_sigma: float = Field(0.0, ge=0.0, description="Training only: Gaussian soft targets of this many bins.")
    decode_sigma: float = Field(
        0.0, ge=0.0, description="Serving: smooth the next-token distribution over this many bins before the "
        "greedy pick (0: plain argmax).",
    )
    use_proprio: bool = Field(True, description="Serving: False always uses the no-proprio token.")
    state_mean: list[float] = Field([0.0, 0.6, 0.15, 0.5], min_length=1)
    state_std: list[float] = Field([0.1, 0.1, 0.1, 0.5], min_length=1)
    action_low: list[float] = Field([-1.0, -1.0, -1.0, -1.0], min_length=1)
    action_high: list[float] = Field([1.0, 1.0, 1.0, 1.0], min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.vit_stem == "conv" and self.patch_size % 2:
            raise ValueError(f"vit_stem='conv': expected an even patch_size, got {self.patch_size}")
        if self.max_instruction_bytes % self.text_pool:
            raise ValueError(f"max_instruction_bytes: expected a multiple of text_pool ({self.text_pool}), got "
                             f"{self.max_instruction_bytes}")
        if not self.use_proprio and self.proprio_dropout == 0:
            raise ValueError("use_proprio=False needs a model trained with proprio_dropout > 0 (it has no "
                             "no-proprio token)")
        return self
