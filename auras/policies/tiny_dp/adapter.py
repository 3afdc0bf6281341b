"""tiny-dp's perception and generation halves over a :class:`~auras.policies.tiny_dp.modeling.TinyDP`
(what the runtime schedules); the model itself is in modeling.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from auras.compiled import CompiledStage
from auras.errors import InvalidInputError
from auras.generation.base import DiffusionGeneration, SeededNoise
from auras.generation.guidance import guide_epsilon, read_guide
from auras.perception.base import Context, Perception
from auras.perception.text import encode_instruction
from auras.policies.torch_policy import (
    ModelPart,
    image_to_tensor,
)
from auras.types import Observation, ObservationSpec

if TYPE_CHECKING:
    from auras.policies.tiny_dp.modeling import TinyDP

__all__ = ["TinyDPGeneration", "TinyDPPerception"]

CAMERA = "front"

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


class TinyDPGeneration(ModelPart, SeededNoise, DiffusionGeneration):
    """DDIM denoising of (B, H, A) action chunks conditioned on H_o; see the module docstring for step indices."""

    def __init__(self, model: TinyDP) -> None:
        self.model = model
        sched = model.scheduler
        self._timesteps = sched.timesteps.to(torch.int64)  # (n,): step index k -> timestep
        self._alphas = sched.alphas_cumprod.to(torch.float32)
        self._final_alpha = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float32)
        self._step_ratio = sched.config.num_train_timesteps // sched.num_inference_steps
        self._clip = float(sched.config.clip_sample_range) if sched.config.clip_sample else None
        self.seed_noise(int(model.config["noise_seed"]))
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

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.model.chunk_horizon, self.action_dim)

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
