"""The SmolVLA architecture: a SmolVLM prefix and a flow-matching action expert (torch modules).

Module and parameter names follow LeRobot's SmolVLA checkpoints (``model.safetensors`` of
``lerobot.policies.smolvla``), so a LeRobot state dict loads as it is: ``model.vlm_with_expert.vlm``
(transformers' ``SmolVLMForConditionalGeneration``: SigLIP vision encoder, pixel-shuffle connector,
Llama text model truncated to ``num_vlm_layers``), ``model.vlm_with_expert.lm_expert`` (a narrower
Llama whose cross-attention layers project the prefix's keys and values), and the projections
``state_proj``, ``action_in_proj``, ``action_out_proj``, ``action_time_mlp_in/out``.

The computation is split where auras pipelines it:

- :meth:`SmolVLAFlow.embed_prefix` + :meth:`SmolVLAFlow.prefix_layer` (perception): images through
  the vision encoder and connector (scaled by sqrt(width)), instruction tokens (scaled by
  sqrt(width)) and one state token, then the text model's layers over that prefix. Each layer leaves
  its keys (rotated) and values: the per-layer prefix cache, with the prefix's pad mask, is the
  context. Image and language tokens attend to each other both ways; the state token attends to
  everything before it.
- :meth:`SmolVLAFlow.velocity` (one flow step, generation): the noisy action chunk and the time
  (sinusoidal embedding) through the expert. Layers ``i % self_attn_every_n_layers == 0`` attend
  over [prefix cache, chunk] (the chunk causally); the others cross-attend to the prefix cache
  through the expert's own key/value projections. The flow runs from t = 1 (noise) to t = 0 in
  ``num_steps`` Euler steps of dt = -1 / num_steps.

Rotary positions use a fixed wavelength of 10 000 over position ids that count only unpadded
tokens; attention is computed in float32 with masked logits at the float32 minimum.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "SMOLVLM2_500M",
    "SmolVLAFlow",
    "VLMWithExpert",
    "causal_blocks_mask",
    "expert_intermediate_size",
    "pad_last_dim",
    "resize_with_pad",
    "rotate",
    "time_embedding",
    "vision_position_ids",
]

SMOLVLM2_500M: dict[str, Any] = {
    "text_config": {
        "model_type": "llama", "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
        "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64, "vocab_size": 49280,
        "rms_norm_eps": 1e-5, "rope_theta": 100000, "max_position_embeddings": 8192, "pad_token_id": 2,
    },
    "vision_config": {
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "image_size": 512, "patch_size": 16,
    },
    "scale_factor": 4, "image_token_id": 49190, "tie_word_embeddings": False,
}
"""HuggingFaceTB/SmolVLM2-500M-Video-Instruct's configuration: the VLM of SmolVLA checkpoints."""

ROPE_WAVELENGTH = 10_000.0


def expert_intermediate_size(width: int, multiplier: int = 4, multiple_of: int = 256) -> int:
    """The expert MLP width for an expert of ``width``: 2/3 * 4 * width rounded up to 256."""
    hidden = int(multiplier * int(2 * width / 3))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (B, L, H, D) at ``positions`` (B, L), halves rotated, in float32."""
    half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.float()
    exponents = (2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device)
    radians = positions[..., None].float() / (ROPE_WAVELENGTH**exponents)[None, None, :]  # (B, L, D/2)
    sin, cos = torch.sin(radians)[..., None, :], torch.cos(radians)[..., None, :]  # (B, L, 1, D/2)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(dtype)


def causal_blocks_mask(pad: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """(B, N, N) bool: token j sees token i when both are unpadded and ``cumsum(blocks)`` at i is at most
    that at j (``blocks`` (B, N): 1 starts a block later tokens see but earlier ones do not)."""
    rank = torch.cumsum(blocks, dim=1)
    return (rank[:, None, :] <= rank[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def time_embedding(time: torch.Tensor, width: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sine-cosine embedding (B, width) of flow times (B,), computed in float64 (float32 on devices without)."""
    dtype = torch.float64 if time.device.type in ("cpu", "cuda") else torch.float32
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * time[:, None].to(dtype)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def vision_position_ids(rows: int, cols: int, per_side: int, device: Any = None) -> torch.Tensor:
    """Position ids (rows * cols,) of a patch grid as SmolVLM computed them in transformers < 5 (each
    fractional coordinate shrunk by 1e-6 before bucketing, so a patch on a bucket boundary falls in
    the bucket below): what SmolVLA checkpoints were trained with."""
    boundaries = torch.arange(1 / per_side, 1.0, 1 / per_side, device=device)
    h = torch.arange(rows, dtype=torch.float32, device=device) / rows * (1 - 1e-6)
    w = torch.arange(cols, dtype=torch.float32, device=device) / cols * (1 - 1e-6)
    h, w = torch.bucketize(h, boundaries, right=True), torch.bucketize(w, boundaries, right=True)
    return (h[:, None] * per_side + w[None, :]).flatten()


def pad_last_dim(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last dimension of ``x`` to ``size``."""
    return x if x.shape[-1] == size else F.pad(x, (0, size - x.shape[-1]))


def resize_with_pad(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, height, width): bilinear resize keeping the aspect ratio, zero padding on
    the top and left."""
    h, w = images.shape[2:]
    ratio = max(w / width, h / height)
    size = (int(h / ratio), int(w / ratio))
    resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return F.pad(resized, (max(0, width - size[1]), 0, max(0, height - size[0]), 0), value=0.0)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q (B, Lq, H, D), k and v (B, Lk, Hkv, D), mask (B, Lq, Lk) -> (B, Lq, H * D); float32 logits."""
    batch, _, heads, dim = q.shape
    groups = heads // k.shape[2]
    k = k.repeat_interleave(groups, dim=2)  # grouped-query heads share their key/value head
    v = v.repeat_interleave(groups, dim=2)
    logits = torch.matmul(q.float().transpose(1, 2), k.float().permute(0, 2, 3, 1)) * dim**-0.5  # (B, H, Lq, Lk)
    logits = torch.where(mask[:, None], logits, torch.finfo(torch.float32).min)
    probs = torch.softmax(logits, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.transpose(1, 2))  # (B, H, Lq, D)
    return out.transpose(1, 2).reshape(batch, -1, heads * dim)


def _project(layer: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    proj = getattr(layer.self_attn, name)
    return proj(x.to(proj.weight.dtype)).unflatten(-1, (-1, layer.self_attn.head_dim))


def _finish_layer(layer: nn.Module, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Output projection, residual, post-attention norm, MLP, residual."""
    o_proj = layer.self_attn.o_proj
    h = o_proj(attended.to(o_proj.weight.dtype)) + residual
    return h + layer.mlp(layer.post_attention_layernorm(h))


class VLMWithExpert(nn.Module):
    """The SmolVLM (``vlm``) and the action expert (``lm_expert``), built from the VLM's config."""

    def __init__(self, vlm_config: Any, num_vlm_layers: int, num_expert_layers: int, self_attn_every_n_layers: int,
                 expert_width_multiplier: float, attention_mode: str = "cross_attn") -> None:
        from transformers import LlamaModel, SmolVLMForConditionalGeneration

        super().__init__()
        self.vlm = SmolVLMForConditionalGeneration(vlm_config)
        text = self.vlm.model.text_model
        if num_vlm_layers > 0:
            text.layers = text.layers[:num_vlm_layers]
        self.num_vlm_layers = len(text.layers)
        expert_config = copy.deepcopy(vlm_config.text_config)
        expert_config.hidden_size = int(vlm_config.text_config.hidden_size * expert_width_multiplier)
        expert_config.intermediate_size = expert_intermediate_size(expert_config.hidden_size)
        expert_config.num_hidden_layers = num_expert_layers if num_expert_layers > 0 else self.num_vlm_layers
        if self.num_vlm_layers % expert_config.num_hidden_layers:
            raise ValueError(
                f"num_expert_layers: expected a divisor of num_vlm_layers ({self.num_vlm_layers}), "
                f"got {expert_config.num_hidden_layers}"
            )
        self.lm_expert = LlamaModel(expert_config)
        self.self_attn_every_n_layers = self_attn_every_n_layers
        self.cross = "cross" in attention_mode
        kv_width = vlm_config.text_config.num_key_value_heads * vlm_config.text_config.head_dim
        expert_kv = expert_config.num_key_value_heads * expert_config.head_dim
        for index, layer in enumerate(self.lm_expert.layers):
            if self.cross and not self.self_attends(index):
                layer.self_attn.k_proj = nn.Linear(kv_width, expert_kv, bias=expert_config.attention_bias)
                layer.self_attn.v_proj = nn.Linear(kv_width, expert_kv, bias=expert_config.attention_bias)
        self.lm_expert.embed_tokens = None  # the expert reads embeddings, never tokens
        self.expert_width = expert_config.hidden_size

    def self_attends(self, layer: int) -> bool:
        """Does the expert's layer ``layer`` attend over [prefix, chunk] (else it cross-attends)?"""
        return not self.cross or (self.self_attn_every_n_layers > 0 and layer % self.self_attn_every_n_layers == 0)

    def expert_layer(self, layer: int) -> nn.Module | None:
        """The expert layer paired with VLM layer ``layer`` (None: the expert skips that layer)."""
        every = self.num_vlm_layers // len(self.lm_expert.layers)
        if every > 1 and layer % every:
            return None
        return self.lm_expert.layers[layer // every]


class SmolVLAFlow(nn.Module):
    """LeRobot's ``VLAFlowMatching``: the prefix (perception) and one flow step (generation)."""

    def __init__(self, vlm_config: Any, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.vlm_with_expert = VLMWithExpert(
            vlm_config, int(config["num_vlm_layers"]), int(config["num_expert_layers"]),
            int(config["self_attn_every_n_layers"]), float(config["expert_width_multiplier"]),
            str(config["attention_mode"]),
        )
        width, expert = vlm_config.text_config.hidden_size, self.vlm_with_expert.expert_width
        self.state_proj = nn.Linear(int(config["max_state_dim"]), width)
        self.action_in_proj = nn.Linear(int(config["max_action_dim"]), expert)
        self.action_out_proj = nn.Linear(expert, int(config["max_action_dim"]))
        self.action_time_mlp_in = nn.Linear(2 * expert, expert)
        self.action_time_mlp_out = nn.Linear(expert, expert)
        if config.get("add_image_special_tokens"):
            raise ValueError("add_image_special_tokens: checkpoints with image special tokens are not supported")

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.vlm_with_expert.vlm.model.text_model.layers

    @property
    def num_prefix_layers(self) -> int:
        return len(self.text_layers)

    @property
    def num_vision_layers(self) -> int:
        return len(self.vision.encoder.layers)

    # -- perception: the prefix ----------------------------------------------------------------
    @property
    def vision(self) -> nn.Module:
        return self.vlm_with_expert.vlm.model.vision_model

    def patch_embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, P, vision width): patches plus position embeddings, at the
        position ids SmolVLA checkpoints were trained with (:func:`vision_position_ids`)."""
        embeddings = self.vision.embeddings
        weight = embeddings.patch_embedding.weight
        patches = embeddings.patch_embedding(pixels.to(weight.dtype)).flatten(2).transpose(1, 2)
        rows, cols = (size // embeddings.patch_size for size in pixels.shape[2:])
        ids = vision_position_ids(rows, cols, embeddings.num_patches_per_side, pixels.device)
        return patches + embeddings.position_embedding(ids)[None]

    def vision_layer(self, index: int, h: torch.Tensor) -> torch.Tensor:
        out = self.vision.encoder.layers[index](h, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    def image_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """Vision encoder output (before its final norm) -> (B, N_img, width) tokens scaled by sqrt(width)."""
        tokens = self.vlm_with_expert.vlm.model.connector(self.vision.post_layernorm(h))
        return tokens * torch.tensor(tokens.shape[-1] ** 0.5, dtype=tokens.dtype, device=tokens.device)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, N_img, width) image tokens."""
        h = self.patch_embed(pixels)
        for index in range(len(self.vision.encoder.layers)):
            h = self.vision_layer(index, h)
        return self.image_tokens(h)

    def embed_prefix(
        self, images: list[torch.Tensor], lang_tokens: torch.Tensor, lang_mask: torch.Tensor, state: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Image tokens (each (B, N_img, width), :meth:`embed_image`), instruction tokens and mask (B, L),
        normalised state padded to max_state_dim (B, S) -> the prefix: ``h`` (B, N, width), ``pad``
        (B, N) bool, ``mask`` (B, N, N) bool, ``positions`` (B, N)."""
        embed = self.vlm_with_expert.vlm.model.text_model.get_input_embeddings()
        parts, pads = [], []
        for tokens in images:
            parts.append(tokens)
            pads.append(torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))
        lang = embed(lang_tokens)
        parts.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(lang_mask.bool())
        parts.append(self.state_proj(state)[:, None, :])
        pads.append(torch.ones(state.shape[0], 1, dtype=torch.bool, device=state.device))
        h, pad = torch.cat(parts, dim=1), torch.cat(pads, dim=1)
        blocks = torch.zeros_like(pad, dtype=torch.int64)
        blocks[:, -1] = 1  # the state token starts its own block
        length = int(self.config.get("prefix_length", -1))
        if h.shape[1] < length:
            h, pad, blocks = (F.pad(t, (0, 0, 0, length - t.shape[1])) if t.dim() == 3 else
                              F.pad(t, (0, length - t.shape[1])) for t in (h, pad, blocks))
        return {"h": h, "pad": pad, "mask": causal_blocks_mask(pad, blocks), "positions": torch.cumsum(pad, 1) - 1}

    def prefix_layer(self, index: int, prefix: dict[str, torch.Tensor], last: bool = False) -> tuple[Any, Any, Any]:
        """Text layer ``index`` over the prefix -> (hidden states, keys (rotated), values); the last layer's
        hidden states are not needed by anything (its MLP is skipped: None)."""
        layer = self.text_layers[index]
        h = prefix["h"]
        x = layer.input_layernorm(h)
        q = rotate(_project(layer, x, "q_proj"), prefix["positions"])
        k = rotate(_project(layer, x, "k_proj"), prefix["positions"])
        v = _project(layer, x, "v_proj")
        if last:
            return None, k, v
        return _finish_layer(layer, _attend(q, k, v, prefix["mask"]), h), k, v

    # -- generation: one flow step ---------------------------------------------------------------
    def embed_suffix(self, actions: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Noisy chunk (B, H, max_action_dim) and times (B,) -> expert input (B, H, expert width)."""
        emb = self.action_in_proj(actions)
        width = self.vlm_with_expert.expert_width
        t = time_embedding(time, width, float(self.config["min_period"]), float(self.config["max_period"]))
        t = t.to(emb.dtype)[:, None, :].expand_as(emb)
        return self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([emb, t], dim=2))))

    def velocity(self, actions: torch.Tensor, time: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]],
                 prefix_pad: torch.Tensor) -> torch.Tensor:
        """The flow's velocity (B, H, max_action_dim) at ``actions`` and ``time`` given the prefix cache
        ``kv`` (per text layer: keys (B, N, Hkv, D) rotated, values) and its pad mask (B, N)."""
        model = self.vlm_with_expert
        h = self.embed_suffix(actions, time)
        batch, horizon = h.shape[:2]
        prefix_len = prefix_pad.shape[1]
        causal = torch.ones(horizon, horizon, dtype=torch.bool, device=h.device).tril()
        sees_prefix = prefix_pad[:, None, :].expand(batch, horizon, prefix_len)
        full = torch.cat([sees_prefix, causal.expand(batch, -1, -1)], dim=2)  # (B, H, N + H)
        positions = prefix_pad.sum(-1, keepdim=True) + torch.arange(horizon, device=h.device)[None]  # (B, H)
        for index in range(model.num_vlm_layers):
            layer = model.expert_layer(index)
            if layer is None:
                continue
            keys, values = kv[index]
            x = layer.input_layernorm(h)
            q = _project(layer, x, "q_proj")
            if model.self_attends(index):
                q = rotate(q, positions)
                k = torch.cat([keys, rotate(_project(layer, x, "k_proj"), positions)], dim=1)
                v = torch.cat([values, _project(layer, x, "v_proj")], dim=1)
                attended = _attend(q, k, v, full)
            else:  # cross-attention: the expert's projections of the prefix's keys and values
                q = rotate(q, positions - positions.min(dim=1, keepdim=True).values)
                k = _project(layer, keys.flatten(2), "k_proj")
                v = _project(layer, values.flatten(2), "v_proj")
                attended = _attend(q, k, v, sees_prefix)
            h = _finish_layer(layer, attended, h)
        out = model.lm_expert.norm(h)[:, -horizon:]
        return self.action_out_proj(out.float().to(self.action_out_proj.weight.dtype)).float()
