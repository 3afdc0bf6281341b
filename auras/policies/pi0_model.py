"""The π0 architecture: a PaliGemma prefix and a flow-matching Gemma action expert (torch modules).

Module and parameter names follow LeRobot's π0 checkpoints (``model.safetensors`` of ``lerobot.policies.pi0``), so a
LeRobot state dict loads as it is: ``model.paligemma_with_expert.paligemma.model`` (a SigLIP ``vision_tower``, the
``multi_modal_projector`` and the Gemma ``language_model``; its token embedding is tied to ``paligemma.lm_head``),
``model.paligemma_with_expert.gemma_expert.model`` (a narrower Gemma with the same head layout), and the projections
``state_proj``, ``action_in_proj``, ``action_out_proj``, ``action_time_mlp_in/out``. Sizes are read from the weights,
not from the variant names of the checkpoint's config.

The computation is split where auras pipelines it:

- :meth:`Pi0Flow.embed_prefix` + :meth:`Pi0Flow.prefix_cache` (perception): each image through SigLIP and the
  projector, the instruction tokens (scaled by sqrt(width)), then the Gemma layers over that prefix (every prefix
  token sees every other). Each layer leaves its keys (rotated) and values: with the prefix's pad mask, the context.
  The state is not in the prefix: π0 feeds it to the expert.
- :meth:`Pi0Flow.velocity` (one flow step, generation): the state token (``state_proj``), then the noisy chunk fused
  with the time's sine-cosine embedding by an MLP, through the expert; each expert layer attends over [prefix cache,
  suffix]; the state token sees the prefix, the action tokens see the prefix, the state and each other. The flow
  runs from t = 1 (noise) to t = 0 in ``num_steps`` Euler steps of dt = -1 / num_steps.

Gemma as openpi runs it: RMSNorm scales by (1 + weight) in float32, no embedding normaliser inside the model,
GELU-tanh MLPs, rotary positions with wavelength 10 000 over position ids that count unpadded tokens, attention in
float32 with masked logits at the float32 minimum.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from auras.policies.smolvla_model import causal_blocks_mask, rotate

__all__ = ["GemmaLayer", "Pi0Flow", "Pi05Flow", "gemma_sizes", "pi0_sizes", "resize_with_pad_centered"]


class GemmaRMSNorm(nn.Module):
    """x / rms(x) * (1 + weight), in float32; adaptive (``cond_dim``, π0.5's expert): x / rms(x) * (1 + scale) + shift
    with (scale, shift, gate) = dense(cond), the gate returned for the residual. Returns (normed, gate or None)."""

    def __init__(self, width: int, eps: float = 1e-6, cond_dim: int | None = None) -> None:
        super().__init__()
        self.eps = eps
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(width))
            self.dense = None
        else:
            self.dense = nn.Linear(cond_dim, 3 * width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        var = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
        normed = x * torch.rsqrt(var + self.eps)
        if self.dense is None:
            return (normed * (1.0 + self.weight.float())).to(x.dtype), None
        scale, shift, gate = torch.chunk(self.dense(cond)[:, None, :], 3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def gated(residual: torch.Tensor, update: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return residual + update if gate is None else residual + update * gate


class GemmaAttention(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=False)


class GemmaMLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaLayer(nn.Module):
    """One Gemma decoder layer; :meth:`qkv` and :meth:`finish` around an attention the caller assembles (the expert
    attends over the prefix's cached keys and values as well as its own). ``cond_dim``: adaptive norms (π0.5)."""

    def __init__(self, width: int, hidden: int, heads: int, kv_heads: int, head_dim: int,
                 cond_dim: int | None = None) -> None:
        super().__init__()
        self.input_layernorm = GemmaRMSNorm(width, cond_dim=cond_dim)
        self.self_attn = GemmaAttention(width, heads, kv_heads, head_dim)
        self.post_attention_layernorm = GemmaRMSNorm(width, cond_dim=cond_dim)
        self.mlp = GemmaMLP(width, hidden)

    def qkv(self, x: torch.Tensor, positions: torch.Tensor, cond: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rotated queries (B, L, H, D), rotated keys and values (B, L, Hkv, D) of ``x`` (B, L, width), and the
        attention residual's gate (adaptive norms; else None)."""
        attn = self.self_attn
        h, gate = self.input_layernorm(x, cond)
        q = attn.q_proj(h).view(*h.shape[:2], attn.heads, attn.head_dim)
        k = attn.k_proj(h).view(*h.shape[:2], attn.kv_heads, attn.head_dim)
        v = attn.v_proj(h).view(*h.shape[:2], attn.kv_heads, attn.head_dim)
        return rotate(q, positions), rotate(k, positions), v, gate

    def finish(self, x: torch.Tensor, attended: torch.Tensor, gate: torch.Tensor | None,
               cond: torch.Tensor | None = None) -> torch.Tensor:
        """The residual stream after the attention output (B, L, H * D) and the MLP."""
        x = gated(x, self.self_attn.o_proj(attended), gate)
        h, gate = self.post_attention_layernorm(x, cond)
        return gated(x, self.mlp(h), gate)


class GemmaStack(nn.Module):
    """``layers`` and the final ``norm`` of a Gemma model (LeRobot's ``language_model`` / ``gemma_expert.model``)."""

    def __init__(self, sizes: dict[str, int], adaptive: bool = False) -> None:
        super().__init__()
        cond = sizes["width"] if adaptive else None
        self.layers = nn.ModuleList(
            GemmaLayer(sizes["width"], sizes["mlp_dim"], sizes["num_heads"], sizes["num_kv_heads"], sizes["head_dim"],
                       cond)
            for _ in range(sizes["depth"])
        )
        self.norm = GemmaRMSNorm(sizes["width"], cond_dim=cond)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q (B, Lq, H, D), k and v (B, Lk, Hkv, D), mask (B, Lq, Lk) bool -> (B, Lq, H * D): float32 logits scaled by
    D^-0.5, masked at the float32 minimum, key/value heads shared by groups of query heads."""
    batch, _, heads, dim = q.shape
    groups = heads // k.shape[2]
    k, v = k.repeat_interleave(groups, dim=2), v.repeat_interleave(groups, dim=2)
    logits = torch.matmul(q.float().transpose(1, 2), k.float().permute(0, 2, 3, 1)) * dim**-0.5  # (B, H, Lq, Lk)
    logits = torch.where(mask[:, None], logits, torch.finfo(torch.float32).min)
    probs = torch.softmax(logits, dim=-1).to(v.dtype)
    return torch.matmul(probs, v.transpose(1, 2)).transpose(1, 2).reshape(batch, -1, heads * dim)


def gemma_sizes(state: dict[str, torch.Tensor], prefix: str) -> dict[str, int]:
    """A Gemma stack's sizes from its weights under ``prefix`` (``...layers.N...``, ``...norm.weight``)."""
    depth = 1 + max(int(k[len(prefix):].split(".")[1]) for k in state if k.startswith(prefix + "layers."))
    layer = f"{prefix}layers.0."
    width = state[layer + "self_attn.q_proj.weight"].shape[1]
    q_rows = state[layer + "self_attn.q_proj.weight"].shape[0]
    k_rows = state[layer + "self_attn.k_proj.weight"].shape[0]
    # heads * head_dim = q_rows and kv_heads * head_dim = k_rows, but head_dim itself is not in the weights: the
    # largest of Gemma's usual sizes that divides both (256 for the real variants; 16 for the tiny fixture)
    head_dim = next(d for d in (256, 128, 64, 32, 16, 8, 4) if q_rows % d == 0 and k_rows % d == 0)
    return dict(width=width, depth=depth, mlp_dim=state[layer + "mlp.gate_proj.weight"].shape[0],
                num_heads=q_rows // head_dim, num_kv_heads=k_rows // head_dim, head_dim=head_dim)


def pi0_sizes(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The sizes of a π0 state dict (LeRobot's key names)."""
    base = "model.paligemma_with_expert."
    vision = base + "paligemma.model.vision_tower.vision_model."
    patch = state[vision + "embeddings.patch_embedding.weight"]
    positions = state[vision + "embeddings.position_embedding.weight"].shape[0]
    layers = [k[len(vision):].split(".")[2] for k in state if k.startswith(vision + "encoder.layers.")]
    vision_layers = 1 + max(int(n) for n in layers)
    return {
        "vlm": gemma_sizes(state, base + "paligemma.model.language_model."),
        "expert": gemma_sizes(state, base + "gemma_expert.model."),
        "vision": dict(hidden_size=patch.shape[0], patch_size=patch.shape[2], num_channels=patch.shape[1],
                       image_size=math.isqrt(positions) * patch.shape[2], num_hidden_layers=vision_layers,
                       intermediate_size=state[vision + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "vocab_size": state[base + "paligemma.lm_head.weight"].shape[0],
        "max_action_dim": state["model.action_in_proj.weight"].shape[1],
        "max_state_dim": state["model.state_proj.weight"].shape[1] if "model.state_proj.weight" in state else None,
    }


def resize_with_pad_centered(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) in [0, 1] -> (B, C, height, width) in [-1, 1], as LeRobot's π0 prepares images: bilinear resize
    keeping the aspect ratio (clamped to [-1, 1]), centred padding with -1 *before* the [0, 1] -> [-1, 1] scaling (so
    the padding ends at -3, as LeRobot's does)."""
    h, w = images.shape[2:]
    if (h, w) != (height, width):
        ratio = max(w / width, h / height)
        rh, rw = int(h / ratio), int(w / ratio)
        images = F.interpolate(images, size=(rh, rw), mode="bilinear", align_corners=False).clamp(-1.0, 1.0)
        top, left = (height - rh) // 2, (width - rw) // 2
        images = F.pad(images, (left, width - rw - left, top, height - rh - top), value=-1.0)
    return images * 2.0 - 1.0


class Pi0Flow(nn.Module):
    """π0's model (see the module doc); ``num_heads`` of the vision tower is not in its weights."""

    def __init__(self, sizes: dict[str, Any], chunk_size: int, vision_heads: int, min_period: float = 4e-3,
                 max_period: float = 4.0) -> None:
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        self.sizes, self.chunk_size, self.min_period, self.max_period = sizes, chunk_size, min_period, max_period
        vlm, expert = sizes["vlm"], sizes["expert"]
        vision = SiglipVisionConfig(**sizes["vision"], num_attention_heads=vision_heads, hidden_act="gelu_pytorch_tanh",
                                    layer_norm_eps=1e-6, vision_use_head=False)
        vision._attn_implementation = "eager"  # the reference's (sdpa differs in the last bits)
        self.vision_tower = SiglipVisionModel(vision)
        self.projector = nn.Linear(sizes["vision"]["hidden_size"], vlm["width"])
        self.embed_tokens = nn.Embedding(sizes["vocab_size"], vlm["width"])
        self.vlm = GemmaStack(vlm)
        self.expert = GemmaStack(expert)
        width = expert["width"]
        self.state_proj = nn.Linear(sizes["max_state_dim"] or 1, width)
        self.action_in_proj = nn.Linear(sizes["max_action_dim"], width)
        self.action_out_proj = nn.Linear(width, sizes["max_action_dim"])
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)

    @staticmethod
    def lerobot_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A LeRobot π0 state dict renamed to this module's parameters (the tied token embedding from lm_head)."""
        base = "model.paligemma_with_expert."
        renames = (
            (base + "paligemma.model.vision_tower.vision_model.", "vision_tower."),  # transformers 5 names
            (base + "paligemma.model.multi_modal_projector.linear.", "projector."),
            (base + "paligemma.model.language_model.", "vlm."),
            (base + "gemma_expert.model.", "expert."),
            ("model.", ""),
        )
        out = {}
        for key, value in state.items():
            if key.endswith("lm_head.weight"):
                continue
            for old, new in renames:
                if key.startswith(old):
                    out[new + key[len(old):]] = value
                    break
        out["embed_tokens.weight"] = state[base + "paligemma.lm_head.weight"]
        return out

    # -- perception ------------------------------------------------------------------------------------------------
    @property
    def vision(self) -> nn.Module:
        """SigLIP's embeddings, encoder and final norm (transformers 5 has no ``vision_model`` level)."""
        return getattr(self.vision_tower, "vision_model", self.vision_tower)

    @property
    def num_vision_layers(self) -> int:
        return len(self.vision.encoder.layers)

    @property
    def num_prefix_layers(self) -> int:
        return len(self.vlm.layers)

    def patch_embed(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, patches, vision width): SigLIP's patch and position embeddings."""
        embeddings = self.vision.embeddings
        return embeddings(image.to(embeddings.patch_embedding.weight.dtype))

    def vision_layer(self, index: int, h: torch.Tensor) -> torch.Tensor:
        out = self.vision.encoder.layers[index](h, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    def image_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """The vision encoder's output -> (B, patches, width): its final norm, projected."""
        return self.projector(self.vision.post_layernorm(h))

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, patches, width): SigLIP's last hidden state, projected."""
        h = self.patch_embed(image)
        for index in range(self.num_vision_layers):
            h = self.vision_layer(index, h)
        return self.image_tokens(h)

    def embed_prefix(self, image_tokens: list[torch.Tensor], image_masks: list[torch.Tensor], tokens: torch.Tensor,
                     token_masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every image's tokens (:meth:`image_tokens`; a camera whose mask is False is padding), then the
        instruction's -> the prefix: ``h`` (B, L, width), ``pad`` (B, L) bool, ``mask`` (B, L, L) bool (every
        prefix token sees every other unpadded one), ``positions`` (B, L) (counting unpadded tokens)."""
        embs, pads = [], []
        for emb, mask in zip(image_tokens, image_masks, strict=True):
            embs.append(emb)
            pads.append(mask[:, None].expand(emb.shape[0], emb.shape[1]))
        lang = self.embed_tokens(tokens)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(token_masks.bool())
        h, pad = torch.cat(embs, dim=1), torch.cat(pads, dim=1)
        mask = causal_blocks_mask(pad, torch.zeros_like(pad, dtype=torch.long))
        return {"h": h, "pad": pad, "mask": mask, "positions": torch.cumsum(pad.long(), dim=1) - 1}

    def prefix_layer(self, index: int, prefix: dict[str, torch.Tensor], last: bool = False) -> tuple[Any, Any, Any]:
        """Gemma layer ``index`` over the prefix -> (hidden states, keys (rotated), values); the last layer's hidden
        states are not needed by the flow (None)."""
        layer = self.vlm.layers[index]
        q, k, v, gate = layer.qkv(prefix["h"], prefix["positions"])
        if last:
            return None, k, v
        return layer.finish(prefix["h"], attend(q, k, v, prefix["mask"]), gate), k, v

    def prefix_cache(self, prefix: dict[str, torch.Tensor]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]],
                                                                      torch.Tensor]:
        """The per-layer (keys, values) of the prefix (each (B, L, Hkv, D), keys rotated) and its output (the final
        norm applied)."""
        x, cache = prefix["h"], []
        for layer in self.vlm.layers:
            q, k, v, gate = layer.qkv(x, prefix["positions"])
            cache.append((k, v))
            x = layer.finish(x, attend(q, k, v, prefix["mask"]), gate)
        return cache, self.vlm.norm(x)[0]

    # -- generation ------------------------------------------------------------------------------------------------
    def time_embedding(self, time: torch.Tensor) -> torch.Tensor:
        """Sine-cosine embedding (B, expert width) of flow times (B,), computed in float64, returned in time's dtype."""
        width = self.action_in_proj.out_features
        fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=time.device)
        period = self.min_period * (self.max_period / self.min_period) ** fraction
        angle = (1.0 / period * 2 * math.pi)[None, :] * time[:, None]
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).to(time.dtype)

    def embed_suffix(self, state: torch.Tensor | None, x_t: torch.Tensor, time: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(suffix (B, 1 + chunk, width), its blocks (B, 1 + chunk), no norm condition): the state token, then the
        noisy actions fused with the time embedding; the state token and the actions are each a block."""
        state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]
        action_emb = self.action_in_proj(x_t)
        time_emb = self.time_embedding(time).to(action_emb.dtype)
        fused = torch.cat([action_emb, time_emb[:, None, :].expand_as(action_emb)], dim=2)
        fused = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        x = torch.cat([state_emb, fused], dim=1)
        blocks = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        blocks[:, :2] = 1
        return x, blocks, None

    def velocity(self, x_t: torch.Tensor, time: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]],
                 prefix_pad: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """The flow's velocity (B, chunk, max_action_dim) at ``x_t`` (B, chunk, max_action_dim), time (B,), given
        the prefix cache and its pad mask (B, N); ``state``: the normalised state padded to max_state_dim (π0)."""
        x, blocks, cond = self.embed_suffix(state, x_t, time)
        batch, length = x.shape[:2]
        suffix_mask = causal_blocks_mask(torch.ones(batch, length, dtype=torch.bool, device=x.device), blocks)
        mask = torch.cat([prefix_pad[:, None, :].expand(batch, length, -1), suffix_mask], dim=2)
        positions = prefix_pad.long().sum(dim=1, keepdim=True) + torch.arange(length, device=x.device)[None]
        for layer, (k_prefix, v_prefix) in zip(self.expert.layers, cache, strict=True):
            q, k, v, gate = layer.qkv(x, positions, cond)
            attended = attend(q, torch.cat([k_prefix, k], dim=1), torch.cat([v_prefix, v], dim=1), mask)
            x = layer.finish(x, attended, gate, cond)
        out = self.expert.norm(x, cond)[0][:, -self.chunk_size:]
        return self.action_out_proj(out.float().to(self.action_out_proj.weight.dtype)).float()

    def sample(self, cache: list[tuple[torch.Tensor, torch.Tensor]], prefix_pad: torch.Tensor,
               state: torch.Tensor | None, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Euler integration from t = 1 (``noise``) to t = 0; ``state`` padded to max_state_dim (π0; None for π0.5)."""
        dt = -1.0 / num_steps
        x_t = noise
        for step in range(num_steps):
            time = torch.full((x_t.shape[0],), 1.0 + step * dt, dtype=torch.float32, device=x_t.device)
            x_t = x_t + dt * self.velocity(x_t, time, cache, prefix_pad, state)
        return x_t


class Pi05Flow(Pi0Flow):
    """π0.5: the state is in the prefix (as discretised text tokens), so the suffix is the noisy chunk alone (one
    block); the time conditions the expert through adaptive norms (time MLP -> scale, shift, gate per norm) instead of
    being fused with the actions."""

    def __init__(self, sizes: dict[str, Any], chunk_size: int, vision_heads: int, min_period: float = 4e-3,
                 max_period: float = 4.0) -> None:
        super().__init__(sizes, chunk_size, vision_heads, min_period, max_period)
        width = sizes["expert"]["width"]
        self.expert = GemmaStack(sizes["expert"], adaptive=True)
        del self.state_proj, self.action_time_mlp_in, self.action_time_mlp_out
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)

    def embed_suffix(self, state: torch.Tensor | None, x_t: torch.Tensor, time: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        time_emb = self.time_embedding(time).to(self.time_mlp_in.weight.dtype)
        cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb))))
        x = self.action_in_proj(x_t)
        blocks = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        blocks[:, 0] = 1
        return x, blocks, cond
