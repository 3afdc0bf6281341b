"""tiny-dp: a small Diffusion Policy (Chi et al., 2023) split into perception and generation.

Perception (one shot, :class:`TinyDPPerception`) maps an observation to ``H_o`` (B, D):

- a CNN over the 84x84 front image: conv blocks (3x3 stride-2 conv, GroupNorm, ReLU, 3x3 conv,
  GroupNorm, ReLU), then a spatial softmax that turns the last feature map into K keypoints
  (expected x, y per keypoint: 2K features), as in robomimic / Diffusion Policy's image encoder;
- the proprio state (hand xyz, gripper), normalised to [-1, 1] with min/max fitted on the data;
- the instruction: mean-pooled learned byte embeddings (``auras.perception.text``), so one model
  serves several tasks; cached per distinct instruction string at inference;
- a linear + Mish head over their concatenation -> ``H_o``.

Generation (iterative, :class:`TinyDPGeneration`) denoises an action chunk (B, H, A) with a
conditional 1-D temporal U-Net (Diffusion Policy's ``ConditionalUnet1D``: Conv1d residual blocks
FiLM-conditioned on [diffusion-step embedding, H_o], a down path and an up path over the chunk
horizon). Actions are normalised to [-1, 1] per dimension with min/max fitted in
:meth:`TinyDP.from_samples` (stored in the config). Noise schedules come from ``diffusers``:
``DDPMScheduler`` (100 train timesteps, ``squaredcos_cap_v2``, epsilon prediction, x_0 clipped to
[-1, 1]) for training, ``DDIMScheduler`` (eta = 0, same betas) with ``num_inference_steps`` steps
for inference.

Step indices: step index ``k`` (0 <= k < n) means "apply the DDIM update at
``ddim.timesteps[k]``" (the scheduler after ``set_timesteps(n)``), so a request starts at k = 0
from pure noise and is done after k = n - 1. ``denoise`` advances a batch of requests that sit at
different step indices by different numbers of steps: in each iteration the requests that still
need steps run through the U-Net in one batched call with per-request timesteps, and each one's
sample gets the DDIM update of its own timestep (a vectorised copy of ``DDIMScheduler.step``,
tested equal to it). The previous timestep follows diffusers' rule ``t - T // n``; choose n that
divides T = 100 (the default, 25, does) so that it is exactly ``timesteps[k + 1]``.

Execution: like Diffusion Policy, the policy predicts H = 16 actions and the robot executes the
first ``execute_steps`` = 8 of them before the next observation is used (``Policy.execute_steps``).

Sizes (defaults): 0.31 M perception parameters and 1.34 M U-Net parameters (1.65 M in all); on one
CPU thread a sequential request costs about 1.5 ms of perception (three stages of 0.4-0.8 ms) and
45 ms of generation (25 DDIM steps of ~1.8 ms), so generation is ~97% of a request.
:meth:`TinyDP.large` builds the same classes with a much larger config (DP-size U-Net, wider CNN)
and random weights for GPU throughput runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from auras.errors import InvalidInputError
from auras.perception.text import PAD_ID, VOCAB_SIZE
from auras.policies.base import Policy
from auras.policies.tiny_dp.adapter import TinyDPGeneration, TinyDPPerception
from auras.policies.tiny_dp.configuration import TinyDPConfig
from auras.policies.torch_policy import (
    ConvBlock,
    LearnedPolicy,
    SpatialSoftmax,
    checked_samples,
    group_count,
    image_to_tensor,
    random_shift,
)

__all__ = ["TinyDP"]

CAMERA = "front"


# ----------------------------------------------------------------------------------------------
# Perception modules
# ----------------------------------------------------------------------------------------------


class ObsEncoder(nn.Module):
    """image (B, 3, S, S) in [0, 1], state (B, 4) in [-1, 1], instruction embedding (B, E) -> H_o (B, D)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        channels = list(config["cnn_channels"])
        groups = int(config["n_groups"])
        size = int(config["image_size"])
        blocks, c_in = [], 3
        for c in channels:
            blocks.append(ConvBlock(c_in, c, groups))
            c_in = c
            size = (size + 1) // 2
        self.blocks = nn.ModuleList(blocks)
        self.keypoints = SpatialSoftmax(c_in, int(config["num_keypoints"]), size)
        text_dim = int(config["text_dim"])
        self.byte_embedding = nn.Embedding(VOCAB_SIZE, text_dim, padding_idx=PAD_ID)
        head_in = 2 * int(config["num_keypoints"]) + int(config["state_dim"]) + text_dim
        self.head = nn.Sequential(nn.Linear(head_in, int(config["obs_dim"])), nn.Mish())

    def embed_instruction(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 byte ids -> (B, E): mean of the non-padding byte embeddings."""
        mask = (ids != PAD_ID).to(self.byte_embedding.weight.dtype)[..., None]  # (B, L, 1)
        summed = (self.byte_embedding(ids) * mask).sum(1)
        return summed / mask.sum(1).clamp_min(1.0)

    def fuse(self, features: torch.Tensor, state: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Last feature map (B, C, h, w), state (B, 4), text (B, E) -> H_o (B, D)."""
        return self.head(torch.cat([self.keypoints(features), state.to(features.dtype), text.to(features.dtype)], 1))

    def forward(self, image: torch.Tensor, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = image
        for block in self.blocks:
            x = block(x)
        return self.fuse(x, state, self.embed_instruction(ids))


# ----------------------------------------------------------------------------------------------
# Generation modules (Diffusion Policy's ConditionalUnet1D, small)
# ----------------------------------------------------------------------------------------------


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000.0) / (half - 1)))
        args = t.float()[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)  # (B, dim)


class Conv1dBlock(nn.Module):
    """Conv1d, GroupNorm, Mish over (B, C, T)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, n_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
            nn.GroupNorm(group_count(c_out, n_groups), c_out),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1d blocks; the first one's output is FiLM-modulated (scale, bias) by the condition."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, n_groups: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [Conv1dBlock(c_in, c_out, kernel, n_groups), Conv1dBlock(c_out, c_out, kernel, n_groups)]
        )
        self.out_channels = c_out
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)  # (B, Co, T)
        scale, bias = self.cond_encoder(cond).reshape(cond.shape[0], 2, self.out_channels, 1).unbind(1)
        out = self.blocks[1](scale * out + bias)
        return out + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Noise predictor: (sample (B, H, A), timesteps (B,), H_o (B, D)) -> epsilon (B, H, A)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        action_dim, kernel, groups = int(config["action_dim"]), int(config["kernel_size"]), int(config["n_groups"])
        down_dims = [int(d) for d in config["down_dims"]]
        dsed = int(config["step_embed_dim"])
        self.step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, 4 * dsed), nn.Mish(), nn.Linear(4 * dsed, dsed)
        )
        cond_dim = dsed + int(config["obs_dim"])
        all_dims = [action_dim, *down_dims]
        in_out = list(itertools.pairwise(all_dims))

        def res(a: int, b: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(a, b, cond_dim, kernel, groups)

        mid = all_dims[-1]
        self.mid = nn.ModuleList([res(mid, mid), res(mid, mid)])
        self.down = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i >= len(in_out) - 1
            sample = nn.Conv1d(d_out, d_out, 3, 2, 1) if not last else nn.Identity()
            self.down.append(nn.ModuleList([res(d_in, d_out), res(d_out, d_out), sample]))
        self.up = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out[1:])):
            last = i >= len(in_out) - 1
            sample = nn.ConvTranspose1d(d_in, d_in, 4, 2, 1) if not last else nn.Identity()
            self.up.append(nn.ModuleList([res(2 * d_out, d_in), res(d_in, d_in), sample]))
        start = down_dims[0]
        self.final = nn.Sequential(Conv1dBlock(start, start, kernel, groups), nn.Conv1d(start, action_dim, 1))

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, h_o: torch.Tensor) -> torch.Tensor:
        x = sample.transpose(1, 2)  # (B, A, H)
        step = self.step_encoder[0](timesteps).to(h_o.dtype)  # sinusoidal (B, dsed), in the weights' dtype
        cond = torch.cat([self.step_encoder[1:](step), h_o], dim=-1)  # (B, dsed + D)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for block in self.mid:
            x = block(x, cond)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)  # (B, H, A)


# ----------------------------------------------------------------------------------------------
# Normalisation and scheduling helpers
# ----------------------------------------------------------------------------------------------


def _fit_range(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-dimension (min, max) of (N, K) values; a (nearly) constant dimension gets mid -/+ 1."""
    lo, hi = values.min(0).astype(np.float64), values.max(0).astype(np.float64)
    flat = hi - lo < 1e-4
    mid = (lo + hi) / 2
    lo, hi = np.where(flat, mid - 1.0, lo), np.where(flat, mid + 1.0, hi)
    return lo.tolist(), hi.tolist()




# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class TinyDP(LearnedPolicy):
    """Diffusion Policy: CNN + proprio + instruction encoder -> H_o; 1-D U-Net denoiser over (H, A) chunks."""

    policy_type: ClassVar[str] = "tiny-dp"
    config_class: ClassVar[type[TinyDPConfig]] = TinyDPConfig
    FLOAT32_BUFFERS: ClassVar[tuple[str, ...]] = ("action_lo", "action_span")
    LARGE: ClassVar[dict[str, Any]] = {
        "cnn_channels": [64, 128, 256, 256],
        "num_keypoints": 64,
        "text_dim": 128,
        "obs_dim": 512,
        "down_dims": [256, 512, 1024],  # Diffusion Policy's default U-Net
        "step_embed_dim": 256,
        "num_inference_steps": 50,
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)  # validated by TinyDPConfig
        config = self.config
        for kind, dim in (("action", "action_dim"), ("state", "state_dim")):
            if config[f"{kind}_min"] is None:  # unfitted: the identity normalisation
                config[f"{kind}_min"], config[f"{kind}_max"] = [-1.0] * config[dim], [1.0] * config[dim]
        self.encoder = ObsEncoder(config)
        self.unet = ConditionalUnet1D(config)
        for kind in ("action", "state"):
            lo = torch.tensor(config[f"{kind}_min"], dtype=torch.float32)
            hi = torch.tensor(config[f"{kind}_max"], dtype=torch.float32)
            self.register_buffer(f"{kind}_lo", lo, persistent=False)
            self.register_buffer(f"{kind}_span", hi - lo, persistent=False)
        n, t_train = int(config["num_inference_steps"]), int(config["num_train_timesteps"])
        from diffusers import DDIMScheduler, DDPMScheduler

        common = {
            "num_train_timesteps": t_train,
            "beta_schedule": config["beta_schedule"],
            "clip_sample": bool(config["clip_sample"]),
            "prediction_type": "epsilon",
        }
        self.train_scheduler = DDPMScheduler(**common)
        self.scheduler = DDIMScheduler(**common, set_alpha_to_one=True, timestep_spacing=config["timestep_spacing"])
        self.scheduler.set_timesteps(n)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_samples(cls, actions: np.ndarray, states: np.ndarray, instructions: list[str],
                     **overrides: Any) -> TinyDP:
        """A fresh model with action/state min-max bounds fitted to ``actions`` (N, A) and ``states`` (N, S)."""
        config = {**cls.defaults(), **overrides}
        actions, states = checked_samples(actions, states, instructions, config)
        config["action_min"], config["action_max"] = _fit_range(actions)
        config["state_min"], config["state_max"] = _fit_range(states)
        return cls(config)

    @classmethod
    def large(cls, **overrides: Any) -> TinyDP:
        """Same classes, much larger config (``LARGE``: DP-size U-Net, wider CNN), random weights."""
        return cls({**cls.LARGE, **overrides})

    @classmethod
    def scaled_config(cls, config: dict[str, Any], perception: float, generation: float) -> dict[str, Any]:
        """Width scaling: CNN channels by ``perception``, U-Net widths by ``generation`` (multiples of 8)."""

        def widths(values: list[int], factor: float) -> list[int]:
            return [max(8, round(v * factor / 8) * 8) for v in values]

        return {
            **config,
            "cnn_channels": widths(config["cnn_channels"], perception),
            "down_dims": widths(config["down_dims"], generation),
        }

    # -- normalisation ------------------------------------------------------------------------

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_lo) / self.action_span * 2 - 1

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions + 1) / 2 * self.action_span + self.action_lo

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_lo) / self.state_span * 2 - 1

    # -- training -----------------------------------------------------------------------------

    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Epsilon-prediction MSE at uniformly drawn DDPM timesteps (random-shift augmented images)."""
        device = self.action_lo.device
        image = image_to_tensor(batch["image"])
        if self.training and int(self.config["shift_pad"]) > 0:
            image = random_shift(image, int(self.config["shift_pad"]), generator)
        state = self.normalize_state(batch["state"].float().to(device))
        h_o = self.encoder(image.to(device), state, batch["instruction_ids"].to(device))
        target = self.normalize_actions(batch["actions"].float().to(device))  # (B, H, A)
        noise = torch.randn(target.shape, generator=generator).to(device)
        steps = torch.randint(0, int(self.config["num_train_timesteps"]), (target.shape[0],), generator=generator)
        steps = steps.to(device)
        noisy = self.train_scheduler.add_noise(target, noise, steps)
        return F.mse_loss(self.unet(noisy, steps, h_o), noise)

    # -- inference ----------------------------------------------------------------------------

    def as_policy(self, execute_steps: int | None = None) -> Policy:
        self.eval()
        steps = int(self.config["execute_steps"] if execute_steps is None else execute_steps)
        if not 1 <= steps <= self.chunk_horizon:
            raise InvalidInputError(f"execute_steps: expected 1..{self.chunk_horizon}, got {steps}")
        return Policy(self.policy_type, TinyDPPerception(self), TinyDPGeneration(self), execute_steps=steps)
