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
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from auras.compiled import CompiledStage
from auras.errors import InvalidInputError
from auras.generation.base import DiffusionGeneration
from auras.generation.guidance import guide_epsilon, read_guide
from auras.perception.base import Context, Perception
from auras.perception.text import PAD_ID, VOCAB_SIZE, encode_instruction
from auras.policies.base import Policy
from auras.policies.torch_policy import (
    ConvBlock,
    LearnedPolicy,
    ModelPart,
    SpatialSoftmax,
    checked_samples,
    group_count,
    image_to_tensor,
    random_shift,
)
from auras.types import Observation, ObservationSpec

__all__ = ["TinyDP", "TinyDPGeneration", "TinyDPPerception"]

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


def ddim_step(
    alphas_cumprod: torch.Tensor,
    final_alpha_cumprod: torch.Tensor,
    step_ratio: int,
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    sample: torch.Tensor,
    clip_sample: float | None = 1.0,
) -> torch.Tensor:
    """``DDIMScheduler.step`` (epsilon prediction, eta = 0) with one timestep per request.

    model_output, sample (B, H, A); timesteps (B,) int64; the previous timestep is ``t - step_ratio``
    (diffusers: ``num_train_timesteps // num_inference_steps``), ``final_alpha_cumprod`` below 0.
    """
    prev = timesteps - step_ratio
    alpha_t = alphas_cumprod[timesteps]
    alpha_prev = torch.where(prev >= 0, alphas_cumprod[prev.clamp_min(0)], final_alpha_cumprod)
    alpha_t, alpha_prev = alpha_t[:, None, None], alpha_prev[:, None, None]
    beta_t = 1 - alpha_t
    pred_x0 = (sample - beta_t**0.5 * model_output) / alpha_t**0.5
    if clip_sample is not None:
        pred_x0 = pred_x0.clamp(-clip_sample, clip_sample)
    return alpha_prev**0.5 * pred_x0 + (1 - alpha_prev) ** 0.5 * model_output


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class TinyDP(LearnedPolicy):
    """Diffusion Policy: CNN + proprio + instruction encoder -> H_o; 1-D U-Net denoiser over (H, A) chunks."""

    policy_type: ClassVar[str] = "tiny-dp"
    TRAINING_KEYS: ClassVar[frozenset[str]] = frozenset({"shift_pad"})
    FLOAT32_BUFFERS: ClassVar[tuple[str, ...]] = ("action_lo", "action_span")
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "chunk_horizon": 16,  # H, actions predicted per request
        "execute_steps": 8,  # actions executed before the next observation is used
        "action_dim": 4,
        "state_dim": 4,
        "image_size": 84,
        "max_instruction_bytes": 64,
        "cnn_channels": [32, 64, 128],  # one stride-2 conv block each
        "num_keypoints": 32,  # spatial-softmax keypoints (2 features each)
        "text_dim": 32,  # byte-embedding width
        "obs_dim": 128,  # D, width of H_o
        "down_dims": [32, 64, 128],  # U-Net widths per level
        "kernel_size": 5,
        "n_groups": 8,
        "step_embed_dim": 64,
        "num_train_timesteps": 100,
        "num_inference_steps": 25,
        "beta_schedule": "squaredcos_cap_v2",
        "timestep_spacing": "trailing",  # inference starts at t = T - 1 (pure noise)
        "clip_sample": True,
        "shift_pad": 4,  # random-shift augmentation in training (pixels)
        "noise_seed": 0,  # seed of generate()'s initial noise (reseeded on reset)
        "action_min": None,  # per-dimension normalisation bounds, fitted in from_samples
        "action_max": None,
        "state_min": None,
        "state_max": None,
    }
    LARGE: ClassVar[dict[str, Any]] = {
        "cnn_channels": [64, 128, 256, 256],
        "num_keypoints": 64,
        "text_dim": 128,
        "obs_dim": 512,
        "down_dims": [256, 512, 1024],  # Diffusion Policy's default U-Net
        "step_embed_dim": 256,
        "num_inference_steps": 50,
    }

    def __init__(self, config: dict[str, Any]) -> None:
        config = {**self.DEFAULTS, **config}
        unknown = sorted(set(config) - set(self.DEFAULTS))
        if unknown:
            raise InvalidInputError(f"tiny-dp config: unknown keys {unknown}; known: {sorted(self.DEFAULTS)}")
        horizon, levels = int(config["chunk_horizon"]), len(config["down_dims"])
        if horizon < 1 or horizon % 2 ** (levels - 1):
            raise InvalidInputError(
                f"tiny-dp chunk_horizon: expected a positive multiple of {2 ** (levels - 1)} "
                f"(U-Net with {levels} levels), got {horizon}"
            )
        if not 1 <= int(config["execute_steps"]) <= horizon:
            raise InvalidInputError(f"tiny-dp execute_steps: expected 1..{horizon}, got {config['execute_steps']}")
        n, t_train = int(config["num_inference_steps"]), int(config["num_train_timesteps"])
        if not 1 <= n <= t_train:
            raise InvalidInputError(f"tiny-dp num_inference_steps: expected 1..{t_train}, got {n}")
        for kind, dim in (("action", "action_dim"), ("state", "state_dim")):
            if config[f"{kind}_min"] is None:
                config[f"{kind}_min"], config[f"{kind}_max"] = [-1.0] * config[dim], [1.0] * config[dim]
            if len(config[f"{kind}_min"]) != config[dim] or len(config[f"{kind}_max"]) != config[dim]:
                raise InvalidInputError(f"tiny-dp {kind}_min/{kind}_max: expected {config[dim]} values each")
        super().__init__(config)
        self.encoder = ObsEncoder(config)
        self.unet = ConditionalUnet1D(config)
        for kind in ("action", "state"):
            lo = torch.tensor(config[f"{kind}_min"], dtype=torch.float32)
            hi = torch.tensor(config[f"{kind}_max"], dtype=torch.float32)
            self.register_buffer(f"{kind}_lo", lo, persistent=False)
            self.register_buffer(f"{kind}_span", hi - lo, persistent=False)
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
        config = {**cls.DEFAULTS, **overrides}
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


class TinyDPPerception(ModelPart, Perception):
    """Observations -> {"H_o": (B, D) float tensor}. Cut into one stage per CNN block (the last also fuses)."""

    def __init__(self, model: TinyDP) -> None:
        self.model = model
        size = int(model.config["image_size"])
        self._spec = ObservationSpec({CAMERA: (size, size)}, state_dim=int(model.config["state_dim"]),
                                     max_instruction_bytes=model.max_instruction_bytes)
        self._text_cache: dict[str, torch.Tensor] = {}  # instruction -> its embedding (see cached_instructions)
        self._blocks: list[Callable[..., torch.Tensor]] = list(model.encoder.blocks)  # one per stage
        self._fuse: Callable[..., torch.Tensor] = model.encoder.fuse


    @property
    def cached_instructions(self) -> list[str]:
        """The instructions whose embeddings are cached (each is embedded once per device and dtype)."""
        return sorted(self._text_cache)
    def compile(self, mode: str, batch: int = 1) -> None:
        """Each CNN block (a stage) and the fusing head, compiled."""
        self._blocks = [CompiledStage(block, mode, batch) for block in self.model.encoder.blocks]
        self._fuse = CompiledStage(self.model.encoder.fuse, mode, batch)

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def _param(self) -> torch.Tensor:
        return self.model.action_lo

    def moved(self) -> None:
        self._text_cache.clear()  # embeddings of the old device and dtype

    def _instruction(self, text: str) -> torch.Tensor:
        """(E,) embedding of one instruction, computed once per distinct string."""
        cached = self._text_cache.get(text)
        if cached is None:
            ids = torch.from_numpy(encode_instruction(text, self.model.max_instruction_bytes))[None]
            cached = self.model.encoder.embed_instruction(ids.to(self._param().device))[0]
            self._text_cache[text] = cached
        return cached

    @torch.no_grad()
    def _prepare(self, observations: Sequence[Observation]) -> dict[str, torch.Tensor]:
        if not observations:
            raise InvalidInputError("perceive: expected at least one observation, got none")
        device = self._param().device
        dtype = self.model.encoder.head[0].weight.dtype
        images = np.stack([obs.images[CAMERA] for obs in observations])  # (B, S, S, 3) uint8
        states = torch.from_numpy(np.stack([obs.state for obs in observations])).to(device)  # (B, 4)
        return {
            "x": image_to_tensor(images).to(device, dtype),  # (B, 3, S, S)
            "state": self.model.normalize_state(states),
            "text": torch.stack([self._instruction(obs.instruction) for obs in observations]),  # (B, E)
        }

    def _block(self, index: int, last: bool) -> Callable[[dict[str, torch.Tensor]], Any]:
        @torch.no_grad()
        def run(carry: dict[str, torch.Tensor]) -> Any:
            x = self._blocks[index](carry["x"])
            if last:
                return {"H_o": self._fuse(x, carry["state"], carry["text"])}
            return {**carry, "x": x}

        return run

    def stages(self) -> list[Callable[[Any], Any]]:
        """[prepare + block 0, block 1, ..., last block + keypoints + head]: one stage per CNN block."""
        count = len(self.model.encoder.blocks)
        blocks = [self._block(i, i == count - 1) for i in range(count)]
        first = blocks[0]
        blocks[0] = lambda observations: first(self._prepare(observations))
        return blocks

    def perceive(self, observations: Sequence[Observation]) -> Context:
        carry: Any = observations
        for stage in self.stages():
            carry = stage(carry)
        return carry


class TinyDPGeneration(ModelPart, DiffusionGeneration):
    """DDIM denoising of (B, H, A) action chunks conditioned on H_o; see the module docstring for step indices."""

    def __init__(self, model: TinyDP) -> None:
        self.model = model
        sched = model.scheduler
        self._timesteps = sched.timesteps.to(torch.int64)  # (n,): step index k -> timestep
        self._alphas = sched.alphas_cumprod.to(torch.float32)
        self._final_alpha = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float32)
        self._step_ratio = sched.config.num_train_timesteps // sched.num_inference_steps
        self._clip = float(sched.config.clip_sample_range) if sched.config.clip_sample else None
        self._seed = int(model.config["noise_seed"])
        self._generator = torch.Generator().manual_seed(self._seed)
        self._step_net: Callable[..., torch.Tensor] = model.unet  # one denoising step's network

    def compile(self, mode: str, batch: int = 1) -> None:
        """The U-Net of one denoising step, compiled for ``batch`` rows (every in-flight request)."""
        self._step_net = CompiledStage(self.model.unet, mode, batch)

    @property
    def action_dim(self) -> int:
        return int(self.model.config["action_dim"])

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (self.model.chunk_horizon, self.action_dim)

    @property
    def num_inference_steps(self) -> int:
        return len(self._timesteps)

    def reset(self) -> None:
        """Reseed the initial noise of ``generate`` (episodes are reproducible)."""
        self._generator = torch.Generator().manual_seed(self._seed)

    def initial_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (batch, self.model.chunk_horizon, self.action_dim)
        return torch.randn(shape, generator=generator if generator is not None else self._generator)

    @torch.no_grad()
    def denoise(self, sample: Any, step_index: Any, num_steps: Any, context: Context) -> torch.Tensor:
        """Advance request b from step ``step_index[b]`` by ``num_steps[b]`` DDIM steps (k -> timesteps[k]),
        conditioned on ``context["H_o"][b]``."""
        device = self.model.action_lo.device
        dtype = self.model.encoder.head[0].weight.dtype
        x = torch.as_tensor(sample, dtype=torch.float32).to(device).clone()
        k0 = torch.as_tensor(step_index, dtype=torch.int64).reshape(-1).cpu()
        count = torch.as_tensor(num_steps, dtype=torch.int64).reshape(-1).cpu()
        cond = torch.as_tensor(context["H_o"]).to(device, dtype)
        batch, n = x.shape[0], self.num_inference_steps
        horizon, dim = self.model.chunk_horizon, self.action_dim
        if x.shape != (batch, horizon, dim):
            raise InvalidInputError(f"denoise sample: expected (B, {horizon}, {dim}), got {tuple(x.shape)}")
        obs_dim = int(self.model.config["obs_dim"])
        if cond.shape != (batch, obs_dim):
            raise InvalidInputError(f"denoise context['H_o']: expected ({batch}, {obs_dim}), got {tuple(cond.shape)}")
        if k0.shape != (batch,) or count.shape != (batch,):
            raise InvalidInputError(
                f"denoise step_index/num_steps: expected ({batch},) each, "
                f"got {tuple(k0.shape)} and {tuple(count.shape)}"
            )
        if bool((k0 < 0).any() or (count < 0).any() or (k0 + count > n).any()):
            raise InvalidInputError(
                f"denoise: expected 0 <= step_index and step_index + num_steps <= {n}, "
                f"got step_index={k0.tolist()} num_steps={count.tolist()}"
            )
        alphas, final = self._alphas.to(device), self._final_alpha.to(device)
        guide = read_guide(context, self.model.normalize_actions, device)  # rtc
        for it in range(int(count.max()) if batch else 0):
            active = torch.nonzero(count > it).flatten()  # requests that still need a step
            t = self._timesteps[k0[active] + it].to(device)  # (b,) per-request timesteps
            idx = active.to(device)
            eps = self._step_net(x[idx].to(dtype), t, cond[idx]).float()
            if guide is not None:
                eps = guide_epsilon(eps, x[idx], alphas[t], (guide[0][idx], guide[1][idx]))
            x[idx] = ddim_step(alphas, final, self._step_ratio, eps, t, x[idx], self._clip)
        return x

    @torch.no_grad()
    def to_actions(self, sample: Any) -> np.ndarray:
        """Unnormalise a denoised (B, H, A) sample to env units, float32 numpy."""
        return self.model.unnormalize_actions(torch.as_tensor(sample)).float().cpu().numpy()
