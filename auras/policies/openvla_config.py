"""OpenVLA's settings (``policy.model`` with ``policy.type: openvla``): how auras serves an OpenVLA checkpoint. The
architecture, the action statistics and the tokenizer are the checkpoint's (its ``config.json``, weights,
``tokenizer.json`` and ``preprocessor_config.json``); ``llm_layers`` and ``action_dim`` apply only to the
random-weight full-size model built without a checkpoint."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from auras.policies.configuration import PolicyModelConfig

__all__ = ["OpenVLAConfig"]


class OpenVLAConfig(PolicyModelConfig):
    policy_type: ClassVar[str] = "openvla"
    SERVING_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"unnorm_key", "prompt_tokens", "camera", "state_dim", "llm_layers", "action_dim"}
    )

    unnorm_key: str | None = Field(
        None, min_length=1,
        description="The dataset whose action statistics (q01, q99, mask) un-normalise the actions: a key of the "
        "checkpoint's norm_stats. It also sets the action size (tokens decoded per request). None: the checkpoint's "
        "only dataset (an error listing the keys where it has several).",
    )
    prompt_tokens: int = Field(
        48, ge=4, le=1024,
        description="Prompt tokens after <s> ('In: What action should the robot take to ...?\\nOut:' and the "
        "trailing '▁'): shorter prompts are left-padded to this many (masked) so every request's prefix has one "
        "length and requests batch; a longer prompt is refused.",
    )
    camera: str = Field("front", min_length=1, description="The camera OpenVLA sees (it reads one image).")
    state_dim: int = Field(
        4, ge=0, le=256,
        description="Size of the proprio vector robots send (OpenVLA does not read it; observations are checked "
        "against it).",
    )
    llm_layers: int | None = Field(
        None, ge=1, le=32,
        description="Random full-size model only (no checkpoint): Llama-2 layers to build (None: all 32; 7.5 B "
        "parameters need about 30 GB in float32).",
    )
    action_dim: int | None = Field(
        None, ge=1, le=64,
        description="Random full-size model only: the action size of its stand-in statistics (None: 4, auras' "
        "tasks). A checkpoint's action size is that of its norm_stats.",
    )
