"""tiny-flow: a small member of the SmolVLA architecture, trainable with ``auras train``.

The same classes as ``smolvla`` (:mod:`auras.policies.smolvla_model`: a SmolVLM prefix over one camera,
the instruction and the state; an action expert that integrates a flow-matching ODE while it attends
to the prefix's per-layer key/value cache), at a size a CPU trains: a 3-layer SigLIP-style encoder
over 96 px (the 84 px camera resized with padding; 12 px patches, pixel-shuffled into 16 image
tokens), a 4-layer Llama prefix 128 wide, a 96-wide expert, a 16-step chunk, 10 flow steps. No hub
weights exist for it, so everything trains from scratch on auras' demonstrations; instructions are
UTF-8 byte tokens (:func:`auras.perception.text.encode_instruction`), state and actions are
normalised with mean and standard deviation fitted to the training data.

Training (``compute_loss``) is SmolVLA's flow-matching objective: for t ~ Beta(1.5, 1) (shifted into
[0.001, 1]) and noise e, the expert's velocity at x_t = t e + (1 - t) a must match e - a; the prefix
runs once per sample (the same computation perception runs at inference), camera images randomly
shifted by up to ``shift_pad`` pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from auras.perception.text import PAD_ID, VOCAB_SIZE
from auras.policies.base import Policy
from auras.policies.smolvla import FULL_SIZE, ByteTokenizer, SmolVLA
from auras.policies.smolvla_model import pad_last_dim, resize_with_pad
from auras.policies.tiny_flow.configuration import TinyFlowConfig
from auras.policies.torch_policy import LearnedPolicy, checked_samples, image_to_tensor, random_shift

__all__ = ["TinyFlow"]


class TinyFlow(LearnedPolicy):
    """tiny-flow's weights: ``vla`` is a :class:`~auras.policies.smolvla.SmolVLA` of this config's size."""

    policy_type: ClassVar[str] = "tiny-flow"
    config_class: ClassVar[type[TinyFlowConfig]] = TinyFlowConfig

    def __init__(self, config: Mapping[str, Any]) -> None:
        from transformers import SmolVLMConfig

        super().__init__(config)  # validated by TinyFlowConfig
        c = self.config
        vlm = SmolVLMConfig(
            text_config={
                "model_type": "llama", "hidden_size": c["text_hidden"], "intermediate_size": c["text_intermediate"],
                "num_hidden_layers": c["text_layers"], "num_attention_heads": c["text_heads"],
                "num_key_value_heads": c["text_kv_heads"], "head_dim": c["text_hidden"] // c["text_heads"],
                "vocab_size": VOCAB_SIZE, "rms_norm_eps": 1e-5, "max_position_embeddings": 512,
                "pad_token_id": PAD_ID,
            },
            vision_config={
                "hidden_size": c["vision_hidden"], "intermediate_size": c["vision_intermediate"],
                "num_hidden_layers": c["vision_layers"], "num_attention_heads": c["vision_heads"],
                "image_size": c["resize"], "patch_size": c["patch_size"],
            },
            scale_factor=c["scale_factor"], image_token_id=PAD_ID, tie_word_embeddings=False,
        )
        size, state_dim, action_dim = int(c["image_size"]), int(c["state_dim"]), int(c["action_dim"])
        smolvla = {
            **FULL_SIZE,
            "input_features": {
                "observation.images.front": {"type": "VISUAL", "shape": [3, size, size]},
                "observation.state": {"type": "STATE", "shape": [state_dim]},
            },
            "output_features": {"action": {"type": "ACTION", "shape": [action_dim]}},
            "chunk_size": c["chunk_horizon"], "n_action_steps": c["execute_steps"], "max_state_dim": state_dim,
            "max_action_dim": action_dim, "resize_imgs_with_padding": [c["resize"], c["resize"]],
            "tokenizer_max_length": c["max_instruction_bytes"], "num_steps": c["num_steps"],
            "num_vlm_layers": c["text_layers"], "num_expert_layers": -1,
            "self_attn_every_n_layers": c["self_attn_every_n_layers"],
            "expert_width_multiplier": c["expert_width_multiplier"],
        }
        stats = {
            "observation.state": {"mean": torch.tensor(c["state_mean"]), "std": torch.tensor(c["state_std"])},
            "action": {"mean": torch.tensor(c["action_mean"]), "std": torch.tensor(c["action_std"])},
        }
        self.vla = SmolVLA(smolvla, vlm, ByteTokenizer(int(c["max_instruction_bytes"])), stats)

    @classmethod
    def from_samples(cls, actions: np.ndarray, states: np.ndarray, instructions: list[str],
                     **overrides: Any) -> TinyFlow:
        """A fresh model whose state and action normalisation is fitted to ``actions`` (N, A), ``states`` (N, S)."""
        config = {**cls.defaults(), **overrides}
        actions, states = checked_samples(actions, states, instructions, config)
        for name, values in (("action", actions), ("state", states)):
            config[f"{name}_mean"] = values.mean(0).tolist()
            config[f"{name}_std"] = np.maximum(values.std(0), 1e-3).tolist()  # a constant column stays finite
        return cls(config)

    @classmethod
    def scaled_config(cls, config: dict[str, Any], perception: float, generation: float) -> dict[str, Any]:
        """Perception (the prefix) by depth: vision and text layers (text kept even, so the expert keeps
        alternating self- and cross-attention); generation by the expert's width."""
        text = max(2, 2 * round(config["text_layers"] * perception / 2))
        return {
            **config,
            "vision_layers": max(1, round(config["vision_layers"] * perception)),
            "text_layers": text,
            "expert_width_multiplier": config["expert_width_multiplier"] * generation,
        }

    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching MSE of the expert's velocity; batch: image (B,S,S,3) uint8, state (B,4), actions (B,H,A),
        instruction_ids (B,L)."""
        flow, vla = self.vla.model, self.vla
        device = flow.state_proj.weight.device
        image = image_to_tensor(batch["image"])
        if self.training and int(self.config["shift_pad"]) > 0:
            image = random_shift(image, int(self.config["shift_pad"]), generator)
        size = int(self.config["resize"])
        pixels = resize_with_pad(image.to(device), size, size) * 2.0 - 1.0
        ids = batch["instruction_ids"].to(device)
        state = vla.normalize("observation.state", "STATE", batch["state"].float().to(device))
        state = pad_last_dim(state, flow.state_proj.in_features)
        prefix = flow.embed_prefix([flow.embed_image(pixels)], ids, ids != PAD_ID, state)
        kv, layers = [], len(flow.text_layers)
        for index in range(layers):
            h, k, v = flow.prefix_layer(index, prefix, last=index == layers - 1)
            kv.append((k, v))
            prefix = {**prefix, "h": h}
        target = vla.normalize("action", "ACTION", batch["actions"].float().to(device))  # (B, H, A)
        noise = torch.randn(target.shape, generator=generator).to(device)
        u = torch.rand(target.shape[0], generator=generator).to(device)
        t = u ** (1 / 1.5) * 0.999 + 0.001  # Beta(1.5, 1) by its inverse CDF, as SmolVLA samples training times
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * target
        return F.mse_loss(flow.velocity(x_t, t, kv, prefix["pad"]), noise - target)

    def as_policy(self, execute_steps: int | None = None) -> Policy:
        self.eval()
        return self.vla.as_policy(self.config["execute_steps"] if execute_steps is None else execute_steps,
                                  name=self.policy_type)
