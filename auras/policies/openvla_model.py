"""The OpenVLA architecture (Prismatic ``OpenVLAForActionPrediction``) as torch modules, without timm.

Module and parameter names follow OpenVLA's Hugging Face checkpoints (``model.safetensors`` written by the Prismatic
``modeling_prismatic.py`` of github.com/openvla/openvla), so their state dict loads as it is:

- ``vision_backbone.featurizer``: timm's ``vit_large_patch14_reg4_dinov2`` (DINOv2 ViT-L/14: a class token and 4
  register tokens before the patches, position embeddings on the patches only, LayerScale ``ls1``/``ls2`` whose
  weight is ``scale_factor``), and ``vision_backbone.fused_featurizer``: timm's ``vit_so400m_patch14_siglip_224``
  (SigLIP so400m/14: no prefix tokens, a latent attention-pool head). Both at 224 px: 256 patches each.
- ``projector``: the fused MLP ``fc1`` (2176 -> 8704), GELU, ``fc2`` (-> 4096), GELU, ``fc3`` (-> 4096).
- ``language_model``: transformers' ``LlamaForCausalLM`` (Llama-2 7B, vocabulary 32064).

What OpenVLA computes, and where auras cuts it:

- Each tower runs its blocks up to the second-to-last (Prismatic's ``get_intermediate_layers(n={depth - 2})``) and
  keeps that block's patch tokens: no final norm, no pool; the last block, ``norm`` and ``attn_pool`` are in the
  checkpoint but never run. The two towers' patch tokens are concatenated on channels and projected: 256 tokens of
  the Llama's width.
- The prompt is ``[<s>, 256 image tokens, prompt tokens..., "▁"]`` (Prismatic inserts the image after the first
  token). auras gives every request the same length: the prompt tokens after ``<s>`` are left-padded to a fixed count,
  masked out as keys, and positions count only real tokens (``cumsum(valid) - 1``), so every real token computes
  what it computes unpadded.
- Perception is the towers, the projector and the Llama's prefill (staged by groups of tower blocks and by Llama
  layer); the context is each layer's keys (rotated) and values, the prefix's validity mask, and the first action
  token (greedy over the prefill's last position).
- Generation decodes the other action tokens greedily over that cache: one token at a time (classic), or every
  position of a teacher-forced block in one causal pass (merged). The attention is computed here from the Llama's own
  modules (norms, projections, rotary embedding, MLP), so the cache is a plain tensor per layer and no transformers
  cache class is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "DINOV2_REG4_L14",
    "OPENVLA_7B_TEXT",
    "SIGLIP_SO400M_224",
    "TOWERS",
    "OpenVLAModel",
    "Projector",
    "TowerSpec",
    "VisionBackbone",
    "VisionTower",
]


@dataclass(frozen=True)
class TowerSpec:
    """One timm ViT family, at its real size (``timm_model_kwargs`` may shrink embed_dim, depth, num_heads)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    class_token: bool
    reg_tokens: int
    no_embed_class: bool  # position embeddings on the patches only (the prefix tokens are concatenated after)
    layer_scale: bool
    attention_pool: bool  # timm's global_pool="map": a latent attention-pool head (held, never run)

    def resized(self, **kwargs: Any) -> TowerSpec:
        allowed = {"embed_dim", "depth", "num_heads", "mlp_ratio"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(f"timm_model_kwargs: expected keys among {sorted(allowed)}, got {unknown}")
        return TowerSpec(**{**self.__dict__, **kwargs})

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens


DINOV2_REG4_L14 = TowerSpec(patch_size=14, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, class_token=True,
                            reg_tokens=4, no_embed_class=True, layer_scale=True, attention_pool=False)
SIGLIP_SO400M_224 = TowerSpec(patch_size=14, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362,
                              class_token=False, reg_tokens=0, no_embed_class=False, layer_scale=False,
                              attention_pool=True)
TOWERS: dict[str, TowerSpec] = {
    "vit_large_patch14_reg4_dinov2.lvd142m": DINOV2_REG4_L14,
    "vit_so400m_patch14_siglip_224": SIGLIP_SO400M_224,
}
"""The timm model ids of OpenVLA's fused backbone (``dinosiglip-vit-so-224px``) -> their architecture."""

OPENVLA_7B_TEXT: dict[str, Any] = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "pad_token_id": 32000, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
}
"""openvla/openvla-7b's ``text_config``: Llama-2 7B with the <PAD> token, padded to a multiple of 64."""


# -- the vision towers (timm's VisionTransformer, parameter for parameter) ---------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, 3, S, S) -> (B, (S/p)^2, D)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, T, D / H)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, width))


class LayerScale(nn.Module):
    """timm's LayerScale with its ``gamma`` renamed ``scale_factor``, as Prismatic stores it (transformers
    rewrites parameters named ``gamma`` on load)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, spec: TowerSpec) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, spec.num_heads)
        self.ls1 = LayerScale(dim) if spec.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * spec.mlp_ratio))
        self.ls2 = LayerScale(dim) if spec.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolLatent(nn.Module):
    """timm's latent attention pool (SigLIP's ``global_pool="map"`` head): its parameters only. OpenVLA reads the
    second-to-last block's patch tokens, so the pool is in the checkpoint but never runs."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))


class VisionTower(nn.Module):
    """One timm ViT (no classifier: ``num_classes=0``) at ``image_size``."""

    def __init__(self, spec: TowerSpec, image_size: int) -> None:
        super().__init__()
        if image_size % spec.patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {spec.patch_size}")
        if spec.depth < 2:
            raise ValueError(f"a tower needs at least 2 blocks (OpenVLA reads the second-to-last), got {spec.depth}")
        self.spec = spec
        dim, patches = spec.embed_dim, (image_size // spec.patch_size) ** 2
        self.num_patches = patches
        self.patch_embed = PatchEmbed(spec.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if spec.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, spec.reg_tokens, dim)) if spec.reg_tokens else None
        positions = patches if spec.no_embed_class else patches + spec.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, dim))
        self.blocks = nn.Sequential(*(Block(spec) for _ in range(spec.depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn_pool = AttentionPoolLatent(dim, spec.mlp_ratio) if spec.attention_pool else None

    @property
    def used_blocks(self) -> int:
        """Blocks OpenVLA runs: up to and including the second-to-last."""
        return len(self.blocks) - 1

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, prefix + patches, D): patch embedding, position embedding, class/register tokens."""
        x = self.patch_embed(pixels.to(self.pos_embed.dtype))  # (B, P, D)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.spec.no_embed_class:
            return torch.cat([*prefix, x + self.pos_embed], dim=1)
        return torch.cat([*prefix, x], dim=1) + self.pos_embed

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, prefix + patches, D) -> (B, patches, D)."""
        return x[:, self.spec.num_prefix_tokens :]

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, patches, D): the second-to-last block's patch tokens."""
        x = self.embed(pixels)
        for index in range(self.used_blocks):
            x = self.blocks[index](x)
        return self.patch_tokens(x)


class VisionBackbone(nn.Module):
    """Prismatic's fused backbone: ``featurizer`` (channels 0-2 of the pixel values) and ``fused_featurizer``
    (channels 3-5), their patch tokens concatenated on channels."""

    def __init__(self, specs: list[TowerSpec], image_sizes: list[int]) -> None:
        super().__init__()
        self.featurizer = VisionTower(specs[0], image_sizes[0])
        self.fused_featurizer = VisionTower(specs[1], image_sizes[1])

    @property
    def towers(self) -> tuple[VisionTower, VisionTower]:
        return self.featurizer, self.fused_featurizer

    @property
    def embed_dim(self) -> int:
        return sum(t.spec.embed_dim for t in self.towers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6, S, S) -> (B, patches, D_dino + D_siglip)."""
        first, second = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat([self.featurizer.features(first), self.fused_featurizer.features(second)], dim=2)


class Projector(nn.Module):
    """Prismatic's fused-backbone projector: vision width -> 4x -> LLM width -> LLM width, GELU between."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.act_fn2 = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(patches)))))


# -- the whole model ---------------------------------------------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class OpenVLAModel(nn.Module):
    """OpenVLA's weights (state dict keys as the checkpoints have them) and the computation auras pipelines."""

    def __init__(self, towers: list[TowerSpec], image_sizes: list[int], text_config: dict[str, Any]) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        super().__init__()
        self.vision_backbone = VisionBackbone(towers, image_sizes)
        llama = LlamaConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        self.projector = Projector(self.vision_backbone.embed_dim, llama.hidden_size)
        self.language_model = LlamaForCausalLM(llama)
        self.num_heads = llama.num_attention_heads
        self.num_kv_heads = llama.num_key_value_heads or llama.num_attention_heads
        self.head_dim = getattr(llama, "head_dim", None) or llama.hidden_size // llama.num_attention_heads

    @property
    def layers(self) -> nn.ModuleList:
        return self.language_model.model.layers

    def _param(self) -> torch.Tensor:
        return self.projector.fc3.weight

    # -- perception -------------------------------------------------------------------------------------------
    def prefix(self, projected: torch.Tensor, bos: torch.Tensor, text: torch.Tensor, text_valid: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """The prefill's input: ``[<s>, image tokens, text]``. projected (B, P, W) image tokens; bos (B,) the first
        token id; text (B, L) the other prompt ids, left-padded; text_valid (B, L) bool. Returns ``h`` (B, N, W),
        ``valid`` (B, N) bool, ``positions`` (B, N) int64 (real tokens count 0, 1, ...; pads repeat their
        predecessor's) and ``mask`` (B, 1, N, N) bool (causal over real keys; each pad also sees itself, so no row
        is empty)."""
        embed = self.language_model.get_input_embeddings()
        h = torch.cat([embed(bos[:, None]), projected.to(embed.weight.dtype), embed(text)], dim=1)  # (B, N, W)
        ones = torch.ones(projected.shape[:2], dtype=torch.bool, device=h.device)
        valid = torch.cat([ones[:, :1], ones, text_valid.bool()], dim=1)  # (B, N)
        positions = torch.cumsum(valid, dim=1) - 1
        n = h.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=h.device).tril()
        mask = (causal[None] & valid[:, None, :]) | torch.eye(n, dtype=torch.bool, device=h.device)[None]
        return {"h": h, "valid": valid, "positions": positions, "mask": mask[:, None]}

    def layer(self, index: int, h: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
              past: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Llama layer ``index`` over new tokens h (B, L, W) at ``positions`` (B, L), attending over the ``past``
        keys and values (B, Hkv, N, Dh) and themselves under ``mask`` (B, 1, L, N + L) bool. Returns the new hidden
        states and the new tokens' keys (rotated) and values (B, Hkv, L, Dh)."""
        layer = self.layers[index]
        attn = layer.self_attn
        batch, length, _ = h.shape
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = attn.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, Dh)
        v = attn.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.language_model.model.rotary_emb(v, positions)  # (B, L, Dh) each
        cos, sin = cos[:, None], sin[:, None]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        groups = self.num_heads // self.num_kv_heads
        out = F.scaled_dot_product_attention(  # (B, H, L, Dh)
            q, keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1), attn_mask=mask,
            scale=self.head_dim**-0.5,
        )
        h = h + attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
        return h + layer.mlp(layer.post_attention_layernorm(h)), k, v

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head: (B, L, W) -> (B, L, V) float32."""
        model = self.language_model
        return model.lm_head(model.model.norm(h)).float()

    # -- generation -------------------------------------------------------------------------------------------
    def extend(self, tokens: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]], valid: torch.Tensor,
               ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """tokens (B, L) appended after a cache ``kv`` (per layer, keys and values (B, Hkv, N, Dh)) whose real
        positions are ``valid`` (B, N) bool: the logits (B, L, V) float32 at each new token and the new tokens'
        keys and values per layer. The new tokens attend causally among themselves."""
        length, n = tokens.shape[1], valid.shape[1]
        start = valid.sum(dim=1, keepdim=True)  # (B, 1): the next real position
        positions = start + torch.arange(length, device=tokens.device)[None]  # (B, L)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        mask = torch.cat([valid[:, None, :].expand(-1, length, n), causal[None].expand(len(tokens), -1, -1)], dim=2)
        h = self.language_model.get_input_embeddings()(tokens)  # (B, L, W)
        new = []
        for index in range(len(self.layers)):
            h, k, v = self.layer(index, h, positions, mask[:, None], kv[index])
            new.append((k, v))
        return self.logits(h), new
