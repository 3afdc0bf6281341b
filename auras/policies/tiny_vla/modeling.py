"""tiny-vla: a small OpenVLA-style autoregressive vision-language-action policy.

Perception (one shot): a ViT (``transformers`` ViTModel built from a ViTConfig) over the 84x84
camera image (``patch_size`` 12: 7 x 7 patches + CLS by default; the shipped checkpoint uses 6 px
patches, 14 x 14, with sine-cosine initial position embeddings; ``vit_stem`` "conv", as shipped, puts
a small convolutional stem in place of the linear patch embedding), whose tokens a Perceiver-style
resampler (learned queries, one cross-attention block, as in Flamingo-style VLAs) condenses into
``vision_tokens`` (8) tokens at the LM width (optionally, as shipped, one more of ``vision_keypoints``
spatial-softmax keypoints over the patch grid), plus one proprio token -> ``X_V`` (B, 9, D), or
(B, 10, D) with keypoints; the instruction's UTF-8 bytes, embedded and pooled by a strided convolution
-> ``X_L`` (B, 8, D). Every request has the same prefix length l = 17 (18 with keypoints; the
instruction is padded to a fixed length), so no attention mask is needed. The ViT layers are cut into
``perception_stages`` stages of equal depth.

Why so few tokens: the policy trains on a CPU; LM training cost grows with sequence length, and 116
tokens (all patches and bytes) would cost several times as much per step.

Generation (iterative): a Llama causal LM (``transformers`` LlamaForCausalLM from a LlamaConfig)
driven through ``inputs_embeds = [X_V, X_L, BOS, X_A]``. Actions are discretised OpenVLA-style
(256 uniform bins per dimension, bounds from the data) and the policy predicts a chunk of
``chunk_horizon`` (8) future actions as 8 x 4 = 32 action tokens, greedily, as action-chunking
VLAs do.

Execution: the robot executes the first ``execute_steps`` (4) actions of each chunk, then the
next observation is used. Predicting 8 steps keeps the motion consistent between queries;
executing only half of them keeps the loop closed.

Sizing (one CPU thread, shipped checkpoint): perception ~2.7 ms, generation ~29 ms (one 19-token
prefill + 31 decode steps of a 6-layer Llama), so generation is ~91% of a request, as in real VLAs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from auras.generation.tokenizer import ActionTokenizer
from auras.perception.base import Context
from auras.perception.text import VOCAB_SIZE as BYTE_VOCAB
from auras.policies.base import Policy
from auras.policies.tiny_vla.adapter import TinyVLAGeneration, TinyVLAPerception
from auras.policies.tiny_vla.configuration import TinyVLAConfig
from auras.policies.torch_policy import (
    ConvBlock,
    LearnedPolicy,
    SpatialSoftmax,
    image_to_tensor,
    random_shift,
)

__all__ = ["TinyVLA"]


@functools.cache
def _cache_keyword() -> str:
    """The KV-cache argument and output field of transformers' causal LMs: ``cache`` from the versions
    that renamed it (5.x), ``past_key_values`` before (the old name still works there, with a warning)."""
    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


class TinyVLA(LearnedPolicy):
    policy_type: ClassVar[str] = "tiny-vla"
    config_class: ClassVar[type[TinyVLAConfig]] = TinyVLAConfig

    def __init__(self, config: Mapping[str, Any]) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTModel

        super().__init__(config)  # validated by TinyVLAConfig
        c = config = self.config
        self.vit = ViTModel(
            ViTConfig(
                image_size=c["image_size"], patch_size=c["patch_size"], num_channels=3, hidden_size=c["vit_hidden"],
                num_hidden_layers=c["vit_layers"], num_attention_heads=c["vit_heads"],
                intermediate_size=c["vit_intermediate"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            ),
            add_pooling_layer=False,
        )
        if c["vit_position_init"] == "sincos":
            with torch.no_grad():
                grid = c["image_size"] // c["patch_size"]
                self.vit.embeddings.position_embeddings[0, 1:] = sincos_2d(grid, c["vit_hidden"])
                self.vit.embeddings.position_embeddings[0, 0] = 0.0  # CLS
        if c["vit_stem"] == "conv":
            half = c["patch_size"] // 2
            self.vit.embeddings.patch_embeddings.projection = nn.Sequential(
                ConvBlock(3, c["stem_channels"], n_groups=8),  # (B, C, S/2, S/2)
                nn.Conv2d(c["stem_channels"], c["vit_hidden"], kernel_size=half, stride=half),  # (B, H, S/p, S/p)
            )
        d = c["lm_hidden"]
        self.vision_proj = nn.Linear(c["vit_hidden"], d)
        self.queries = nn.Parameter(torch.randn(c["vision_tokens"], d) * 0.02)
        self.resampler = nn.MultiheadAttention(d, c["lm_heads"], batch_first=True)
        self.resampler_norm = nn.LayerNorm(d)
        self.resampler_mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        if c["vision_keypoints"]:  # tiny-dp's readout, over the ViT's patch grid instead of a CNN feature map
            self.keypoint_softmax = SpatialSoftmax(
                c["vit_hidden"], c["vision_keypoints"], c["image_size"] // c["patch_size"]
            )
            self.keypoint_proj = nn.Sequential(nn.Linear(2 * c["vision_keypoints"], d), nn.GELU(), nn.Linear(d, d))
        self.proprio_proj = nn.Sequential(nn.Linear(c["action_dim"], d), nn.GELU(), nn.Linear(d, d))
        if c["proprio_dropout"] > 0:  # only models trained with it carry the token
            self.no_proprio = nn.Parameter(torch.randn(d) * 0.02)
        self.byte_embed = nn.Embedding(BYTE_VOCAB, d)
        self.text_pos = nn.Parameter(torch.zeros(c["max_instruction_bytes"], d))
        self.text_pool = nn.Conv1d(d, d, kernel_size=c["text_pool"], stride=c["text_pool"])
        self.lm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=c["n_bins"] + 1, hidden_size=d, intermediate_size=c["lm_intermediate"],
                num_hidden_layers=c["lm_layers"], num_attention_heads=c["lm_heads"],
                num_key_value_heads=c["lm_heads"], max_position_embeddings=256, tie_word_embeddings=False,
                bos_token_id=c["n_bins"], eos_token_id=c["n_bins"], pad_token_id=c["n_bins"],
            )
        )
        self.register_buffer("state_mean", torch.tensor(c["state_mean"], dtype=torch.float32), persistent=False)
        self.register_buffer("state_std", torch.tensor(c["state_std"], dtype=torch.float32), persistent=False)
        self.tokenizer = ActionTokenizer(np.array(c["action_low"]), np.array(c["action_high"]), c["n_bins"])
        self.bos_id = c["n_bins"]
        self._decode_kernel: torch.Tensor | None = None  # (n_bins, n_bins), built on first use (decode_sigma)

    # -- construction from data ---------------------------------------------------------------------
    @classmethod
    def from_samples(
        cls, actions: np.ndarray, states: np.ndarray, instructions: list[str], **overrides: Any
    ) -> TinyVLA:
        tokenizer = ActionTokenizer.fit(actions, overrides.get("n_bins", cls.defaults()["n_bins"]))
        stats = {
            "state_mean": states.mean(0).tolist(),
            "state_std": np.maximum(states.std(0), 1e-3).tolist(),
            "action_low": tokenizer.low.tolist(),
            "action_high": tokenizer.high.tolist(),
        }
        return cls({**overrides, **stats})

    @classmethod
    def large_config(cls, scale: float = 1.0) -> dict[str, Any]:
        """An OpenVLA-scale shape (ViT-L/14 at 224 px + a 7B-class Llama), shrunk by ``scale`` in width and depth.

        scale=1.0: ViT 1024 wide x 24 layers, Llama 4096 wide x 32 layers (random weights, GPU runs).
        """

        def width(x: int, multiple: int = 64) -> int:
            return max(multiple, round(x * scale / multiple) * multiple)

        return {
            "image_size": 224, "patch_size": 14, "vit_hidden": width(1024), "vit_layers": max(2, round(24 * scale)),
            "vit_heads": max(1, width(1024) // 64), "vit_intermediate": width(4096), "lm_hidden": width(4096, 128),
            "lm_layers": max(2, round(32 * scale)), "lm_heads": max(1, width(4096, 128) // 128),
            "lm_intermediate": width(11008, 128), "chunk_horizon": 1, "execute_steps": 1,
        }

    @classmethod
    def scaled_config(cls, config: dict[str, Any], perception: float, generation: float) -> dict[str, Any]:
        """Depth scaling: ViT layers by ``perception``, Llama layers by ``generation`` (at least one each)."""
        return {
            **config,
            "vit_layers": max(1, round(config["vit_layers"] * perception)),
            "lm_layers": max(1, round(config["lm_layers"] * generation)),
        }

    # -- perception -------------------------------------------------------------------------------
    def vision_stages(self, n: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """ViT cut into n stages of (nearly) equal depth: pixels (B,3,S,S) -> tokens (B, N_v, vit_hidden)."""
        layers = list(self.vit.layers)
        n = max(1, min(n, len(layers)))
        bounds = [
            int(b) for b in np.linspace(0, len(layers), n + 1).round()
        ]  # Python ints: compiled stages slice by them

        def make(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
            def stage(x: torch.Tensor) -> torch.Tensor:
                if i == 0:
                    x = self.vit.embeddings(x)  # (B, N_v, H)
                for layer in layers[bounds[i] : bounds[i + 1]]:
                    x = layer(x, None)
                return self.vit.layernorm(x) if i == n - 1 else x

            return stage

        return [make(i) for i in range(n)]

    def encode(self, batch: dict[str, torch.Tensor], augment: bool = False, generator=None) -> dict[str, torch.Tensor]:
        """Perception: image, state, instruction_ids -> {"X_V": (B, N_v + 1, D), "X_L": (B, L, D)}."""
        pixels = image_to_tensor(batch["image"])  # (B, 3, S, S)
        if augment and self.config["augment_shift"]:
            pixels = random_shift(pixels, self.config["augment_shift"], generator)
        tokens = pixels
        for stage in self.vision_stages(1):
            tokens = stage(tokens)  # (B, N_v, H)
        drop = None
        if augment and self.config["proprio_dropout"] > 0:
            drop = torch.rand(len(tokens), generator=generator) < self.config["proprio_dropout"]  # (B,)
        return self._finish_context(tokens, batch, drop_proprio=drop)

    def _finish_context(
        self, vit_tokens: torch.Tensor, batch: dict[str, torch.Tensor], drop_proprio: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """ViT tokens + state + instruction -> context; ``drop_proprio`` (B,) bool swaps in the no-proprio token."""
        patches = self.vision_proj(vit_tokens)  # (B, N_patch + 1, D)
        queries = self.queries.expand(len(patches), -1, -1)  # (B, N_v, D)
        pooled, _ = self.resampler(queries, patches, patches, need_weights=False)  # (B, N_v, D)
        pooled = pooled + queries
        pooled = pooled + self.resampler_mlp(self.resampler_norm(pooled))  # (B, N_v, D)
        state = (batch["state"] - self.state_mean) / self.state_std  # (B, 4)
        proprio = self.proprio_proj(state)  # (B, D)
        if drop_proprio is not None:  # training: a random subset
            proprio = torch.where(drop_proprio[:, None].to(proprio.device), self.no_proprio, proprio)
        elif not self.config["use_proprio"]:  # serving from image and instruction alone
            proprio = self.no_proprio.expand_as(proprio)
        if self.config["vision_keypoints"]:
            keypoints = self.keypoint_proj(self.keypoint_positions(vit_tokens).flatten(1))  # (B, D)
            pooled = torch.cat([pooled, keypoints[:, None]], dim=1)  # (B, N_v + 1, D)
        x_v = torch.cat([pooled, proprio[:, None]], dim=1)  # (B, N_v + 1 (+ 1 with keypoints), D)
        text = self.byte_embed(batch["instruction_ids"]) + self.text_pos  # (B, L_bytes, D)
        x_l = self.text_pool(text.transpose(1, 2)).transpose(1, 2)  # (B, L_bytes / text_pool, D)
        return {"X_V": x_v, "X_L": x_l}

    def keypoint_positions(self, vit_tokens: torch.Tensor) -> torch.Tensor:
        """ViT tokens (B, 1 + N_patch, H) -> (B, K, 2) expected (x, y) in [-1, 1] of K spatial softmaxes."""
        patches = vit_tokens[:, 1:].transpose(1, 2)  # (B, H, N_patch), row-major patches
        grid = self.config["image_size"] // self.config["patch_size"]
        return self.keypoint_softmax(patches.unflatten(2, (grid, grid))).unflatten(1, (-1, 2))  # (B, K, 2)

    # -- generation --------------------------------------------------------------------------------
    @property
    def num_action_tokens(self) -> int:
        return self.config["chunk_horizon"] * self.config["action_dim"]

    def _prefix(self, context: Context) -> torch.Tensor:
        x_v, x_l = context["X_V"], context["X_L"]
        bos_ids = torch.full((x_v.shape[0], 1), self.bos_id, dtype=torch.long, device=x_v.device)
        bos = self.lm.get_input_embeddings()(bos_ids)
        return torch.cat([x_v, x_l, bos], dim=1)  # (B, l + 1, D)

    def merged_logits(self, context: Context, action_tokens: torch.Tensor) -> torch.Tensor:
        """One causal pass over [X_V, X_L, BOS, X_A[:-1]] -> (B, l_a, V) next-token logits per action position."""
        prefix = self._prefix(context)  # (B, l + 1, D)
        x_a = self.lm.get_input_embeddings()(action_tokens[:, :-1])  # (B, l_a - 1, D)
        logits = self.lm(inputs_embeds=torch.cat([prefix, x_a], dim=1), use_cache=False).logits  # (B, l+l_a, V)
        return logits[:, prefix.shape[1] - 1 :]  # (B, l_a, V)

    def decode_classic(self, context: Context, return_logits: bool = False):
        """Prefill [X_V, X_L, BOS] then greedy decode l_a tokens with a KV cache -> (B, l_a) ids."""
        prefix = self._prefix(context)
        key = _cache_keyword()  # the installed transformers' name for the KV cache
        out = self.lm(inputs_embeds=prefix, use_cache=True)
        cache, step_logits, ids = getattr(out, key), [], []
        logits = out.logits[:, -1]  # (B, V)
        for i in range(self.num_action_tokens):
            logits = logits.clone()
            logits[:, self.bos_id] = float("-inf")  # only action bins are valid outputs
            step_logits.append(logits)
            token = self.select_tokens(logits)[:, None]  # (B, 1)
            ids.append(token)
            if i + 1 < self.num_action_tokens:
                embeds = self.lm.get_input_embeddings()(token)  # (B, 1, D)
                out = self.lm(inputs_embeds=embeds, use_cache=True, **{key: cache})
                cache, logits = getattr(out, key), out.logits[:, -1]
        tokens = torch.cat(ids, dim=1)  # (B, l_a)
        return (tokens, torch.stack(step_logits, dim=1)) if return_logits else tokens

    def select_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy choice (..., V) logits -> (...) action bin ids: the argmax over the action bins, of the
        probabilities smoothed over ``decode_sigma`` neighbouring bins when that is > 0."""
        scores = logits[..., : self.bos_id]
        sigma = float(self.config["decode_sigma"])
        if sigma > 0:
            kernel = self._decode_kernel
            if kernel is None or kernel.device != scores.device:
                bins = torch.arange(self.bos_id, device=scores.device)
                kernel = self._decode_kernel = bin_gaussians(bins, self.bos_id, sigma)  # symmetric (n_bins, n_bins)
            scores = scores.float().softmax(-1) @ kernel
        return scores.argmax(-1)

    def tokenize(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, H, A) actions -> (B, H * A) action token ids, time-major (the order they are decoded in)."""
        return torch.from_numpy(self.tokenizer.encode(actions.cpu().numpy())).reshape(len(actions), -1)

    def detokenize(self, token_ids: torch.Tensor) -> np.ndarray:
        ids = token_ids.cpu().numpy().reshape(-1, self.config["chunk_horizon"], self.config["action_dim"])
        return self.tokenizer.decode(ids)  # (B, H, A) float32

    # -- training ----------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Next-token loss of the action tokens. Training mode adds augmentation, proprio dropout, token
        corruption and soft targets as configured; eval mode is the plain teacher-forced cross entropy."""
        context = self.encode(batch, augment=self.training, generator=generator)
        targets = self.tokenize(batch["actions"])
        inputs = targets
        if self.training and self.config["token_corruption"] > 0:
            corrupt = torch.rand(targets.shape, generator=generator) < self.config["token_corruption"]
            noise = torch.randint(0, self.config["n_bins"], targets.shape, generator=generator)
            inputs = torch.where(corrupt, noise, targets)
        logits = self.merged_logits(context, inputs.to(targets.device))  # (B, l_a, V)
        logits = logits.reshape(-1, logits.shape[-1])
        if self.training and self.config["label_sigma"] > 0:
            log_p = nn.functional.log_softmax(logits, dim=-1)
            return -(soft_bin_targets(targets.reshape(-1), self.config["n_bins"], self.config["label_sigma"],
                                      logits.shape[-1]) * log_p).sum(-1).mean()
        return nn.functional.cross_entropy(logits, targets.reshape(-1))

    def as_policy(self, execute_steps: int | None = None) -> Policy:
        self.eval()
        steps = execute_steps if execute_steps is not None else self.config["execute_steps"]
        return Policy(self.policy_type, TinyVLAPerception(self), TinyVLAGeneration(self), execute_steps=int(steps))


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) 2-D sine-cosine position embedding, row-major (MAE): half the channels encode the row,
    half the column, each as sines and cosines of geometrically spaced frequencies."""
    if dim % 4:
        raise ValueError(f"sincos_2d: expected a width divisible by 4, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                                indexing="ij")
    parts = []
    for coordinate in (rows.reshape(-1), cols.reshape(-1)):
        angle = coordinate[:, None] * freq[None]  # (grid*grid, dim/4)
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1)  # (grid*grid, dim)


def bin_gaussians(centres: torch.Tensor, n_bins: int, sigma: float) -> torch.Tensor:
    """(N,) bin positions -> (N, n_bins) unnormalised Gaussians of ``sigma`` bins around each."""
    bins = torch.arange(n_bins, dtype=torch.float32, device=centres.device)
    return torch.exp(-0.5 * ((bins[None] - centres[:, None].float()) / sigma) ** 2)


def soft_bin_targets(targets: torch.Tensor, n_bins: int, sigma: float, vocab: int) -> torch.Tensor:
    """(N,) bin ids -> (N, vocab) distributions: a Gaussian of ``sigma`` bins around each id, over the
    ``n_bins`` action bins only (the other ids, e.g. BOS, get 0)."""
    weights = bin_gaussians(targets, n_bins, sigma)
    return nn.functional.pad(weights / weights.sum(-1, keepdim=True), (0, vocab - n_bins))
