"""Real-time chunking guidance for the denoising family (staleness strategy ``rtc``).

The robot side (:class:`auras.staleness.ChunkExecutor`) sends, with each observation, the rows of
its current chunk that will run before the new chunk lands and a soft mask over the new chunk's rows
(1 for those rows, decaying to 0). Perception carries both into the context
(:func:`auras.policies.guide.with_action_guide`) under the keys below; in mode ``auras`` they reach
every in-flight request through the public context, so the guide is the freshest one.

At every denoising step the generation predicts the clean chunk, pulls it towards the guide rows by
their weights, and re-derives its model output from the pulled prediction (velocity for flow
matching, noise for DDIM), so the step moves the sample towards a chunk whose first rows are what the
robot actually runs and whose later rows join them. This is RTC's inpainting (Black et al. 2025)
with the guidance applied to the predicted clean chunk directly instead of through the
vector-Jacobian product of the network, so it needs no gradients and costs nothing measurable.

Two rules weigh the pull for flow matching (``staleness.rtc_guidance``, :class:`GuidanceRule`):

- ``pull`` (default): the step's clean prediction moves onto the guide rows by their weights and the velocity is
  re-derived from it, i.e. v - w (target - clean) / t;
- ``lerobot``: what LeRobot 0.4.4's ``RTCProcessor.denoise_step`` computes, v - g(t) w (target - clean) with
  g(t) = min(max, (t^2 + (1 - t)^2) / (t (1 - t))), over every padded action dimension (the padding's target is 0).
  LeRobot evaluates the network before its input requires gradients, so its vector-Jacobian product is the identity
  and its correction is the weighted error itself: no gradients here either (tests/test_pi0_rtc.py checks it
  against LeRobot's own chunks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from auras.staleness import GUIDE_ACTIONS, GUIDE_WEIGHTS

__all__ = ["PULL", "GuidanceRule", "Guide", "guide_epsilon", "guide_velocity", "read_guide"]

Guide = tuple[torch.Tensor, torch.Tensor]
"""(target (B, H, A) in the model's action units, weights (B, H, 1))."""


@dataclass(frozen=True, slots=True)
class GuidanceRule:
    """How strongly a flow step follows rtc's guide (see the module doc): ``kind`` pull or lerobot;
    ``max_weight``: lerobot's cap on its weight."""

    kind: str = "pull"
    max_weight: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in ("pull", "lerobot") or not self.max_weight > 0:
            raise ValueError(f"GuidanceRule: expected kind pull or lerobot and max_weight > 0, got {self}")

    def lerobot_weight(self, time: torch.Tensor) -> torch.Tensor:
        """g(t) per row (B,), computed as LeRobot computes it (tau = 1 - t)."""
        cap = torch.as_tensor(self.max_weight, dtype=time.dtype, device=time.device)
        tau = 1 - time
        c = torch.nan_to_num((1 - tau) / tau, posinf=self.max_weight)
        inv_r2 = ((1 - tau) ** 2 + tau**2) / (1 - tau) ** 2
        return torch.minimum(torch.nan_to_num(c * inv_r2, posinf=self.max_weight), cap)


PULL = GuidanceRule()


def read_guide(context: Any, normalize: Callable[[torch.Tensor], torch.Tensor], device: Any) -> Guide | None:
    """The context's guide in model units, or None when it carries none or every weight is 0."""
    if GUIDE_ACTIONS not in context or GUIDE_WEIGHTS not in context:
        return None
    weights = torch.as_tensor(context[GUIDE_WEIGHTS]).float().to(device)
    if not bool((weights > 0).any()):
        return None
    target = normalize(torch.as_tensor(context[GUIDE_ACTIONS]).float().to(device))
    return target, weights[..., None]


def _pull(clean: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``clean`` with its first A action dims moved ``weights`` of the way to ``target``."""
    dims = target.shape[-1]
    pulled = clean.clone()
    pulled[..., :dims] = clean[..., :dims] + weights * (target - clean[..., :dims])
    return pulled


def guide_velocity(velocity: torch.Tensor, sample: torch.Tensor, time: torch.Tensor, guide: Guide,
                   rule: GuidanceRule = PULL) -> torch.Tensor:
    """Flow matching with x_t = t e + (1 - t) a (t from 1 to 0): the clean prediction is
    x_t - t v; returns the guided velocity under ``rule``. ``time`` (B,) > 0."""
    t = time.to(sample.dtype)[:, None, None]
    clean = sample - t * velocity
    if rule.kind == "pull":
        return (sample - _pull(clean, *guide)) / t
    target, weights = guide
    padded = torch.zeros_like(clean)
    padded[..., : target.shape[-1]] = target
    error = (padded - clean) * weights
    return velocity - rule.lerobot_weight(time.to(sample.dtype))[:, None, None] * error


def guide_epsilon(eps: torch.Tensor, sample: torch.Tensor, alpha_prod: torch.Tensor, guide: Guide) -> torch.Tensor:
    """DDPM/DDIM epsilon prediction: x0 = (x - sqrt(1 - a) eps) / sqrt(a); returns the noise that
    leads to the pulled x0. ``alpha_prod`` (B,): the cumulative alpha of each row's timestep."""
    a = alpha_prod.to(sample.dtype)[:, None, None]
    clean = (sample - (1 - a).sqrt() * eps) / a.sqrt()
    return (sample - a.sqrt() * _pull(clean, *guide)) / (1 - a).sqrt()
