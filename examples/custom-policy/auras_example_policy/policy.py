"""example-flow: a small flow-matching policy written against the auras policy contract.

Perception (two stages): a small CNN over the front camera, then an MLP over the pooled image
features and the proprio state -> context ``{"H_o": (B, 64)}``. Generation (family ``denoising``):
a velocity field v(x, H_o, t) integrated with 10 Euler steps from Gaussian noise over an action
chunk (8, 4). The weights are a deterministic random initialisation from a fixed seed: this policy
shows the contract, it is not a trained model, so its actions do not solve tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from auras.config import AurasConfig
from auras.errors import ConfigError
from auras.generation.base import DiffusionGeneration
from auras.perception.base import Context, Perception
from auras.policies.base import Policy
from auras.types import Observation, ObservationSpec

__all__ = ["FlowGeneration", "FlowPerception", "build"]

CAMERA, STATE_DIM = "front", 4  # auras' MuJoCo tasks: one front camera, hand xyz + gripper
HORIZON, ACTION_DIM, STEPS, FEATURES = 8, 4, 10, 64
SEED = 0  # weights and initial noise


class FlowPerception(Perception):
    """Observations -> {"H_o": (B, FEATURES)} in two stages: CNN, then fuse with the proprio state."""

    def __init__(self, image_size: int) -> None:
        self._spec = ObservationSpec({CAMERA: (image_size, image_size)}, state_dim=STATE_DIM)
        self.cnn = nn.Sequential(nn.Conv2d(3, 16, 5, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(32 + STATE_DIM, FEATURES), nn.Tanh())

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def stages(self) -> list:
        return [self._image_features, self._fuse]

    @torch.no_grad()
    def _image_features(self, observations: Sequence[Observation]) -> dict[str, torch.Tensor]:
        weight = self.mlp[0].weight
        images = torch.from_numpy(np.stack([obs.images[CAMERA] for obs in observations]))  # (B, S, S, 3) uint8
        states = torch.from_numpy(np.stack([obs.state for obs in observations]))  # (B, 4)
        pixels = images.permute(0, 3, 1, 2).to(weight.device, weight.dtype) / 255.0
        return {"features": self.cnn(pixels), "state": states.to(weight.device, weight.dtype)}

    @torch.no_grad()
    def _fuse(self, carry: dict[str, torch.Tensor]) -> Context:
        return {"H_o": self.mlp(torch.cat([carry["features"], carry["state"]], dim=1))}

    def to(self, device: str, dtype: str = "float32") -> None:
        self.cnn.to(device, getattr(torch, dtype))
        self.mlp.to(device, getattr(torch, dtype))


class FlowGeneration(DiffusionGeneration):
    """Euler integration of dx/dt = v(x, H_o, t) from t = 0 (noise) to t = 1 (actions)."""

    def __init__(self) -> None:
        self.velocity = nn.Sequential(nn.Linear(HORIZON * ACTION_DIM + FEATURES + 1, 128), nn.SiLU(),
                                      nn.Linear(128, HORIZON * ACTION_DIM))
        self.reset()

    @property
    def action_dim(self) -> int:
        return ACTION_DIM

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (HORIZON, ACTION_DIM)

    @property
    def num_inference_steps(self) -> int:
        return STEPS

    def reset(self) -> None:
        """Every episode draws the same initial noise sequence."""
        self._noise = torch.Generator().manual_seed(SEED)

    def initial_noise(self, batch: int, generator: Any = None) -> torch.Tensor:
        return torch.randn((batch, HORIZON, ACTION_DIM), generator=generator if generator is not None else self._noise)

    @torch.no_grad()
    def denoise(self, sample: Any, step_index: Any, num_steps: Any, context: Context) -> torch.Tensor:
        weight = self.velocity[0].weight
        x = torch.as_tensor(sample).to(weight.device, weight.dtype)  # (B, H, A)
        step = torch.as_tensor(step_index).to(weight.device)  # (B,) where each request is
        count = torch.as_tensor(num_steps).to(weight.device)  # (B,) how far each one goes now
        h_o = torch.as_tensor(context["H_o"]).to(weight.device, weight.dtype)  # (B, FEATURES), row b for request b
        for i in range(int(count.max()) if len(count) else 0):
            t = ((step + i).to(weight.dtype) / STEPS)[:, None]  # (B, 1)
            v = self.velocity(torch.cat([x.flatten(1), h_o, t], dim=1)).view_as(x)
            x = torch.where((count > i)[:, None, None], x + v / STEPS, x)  # finished requests stay put
        return x

    def to_actions(self, sample: Any) -> np.ndarray:
        return torch.as_tensor(sample).float().clamp(-1.0, 1.0).cpu().numpy()  # env actions are in [-1, 1]

    def to(self, device: str, dtype: str = "float32") -> None:
        self.velocity.to(device, getattr(torch, dtype))


def build(config: AurasConfig) -> Policy:
    """The auras policy factory: ``policy.type = example-flow`` calls it in the process that hosts the policy."""
    execute_steps = config.policy.execute_steps or HORIZON // 2
    if execute_steps > HORIZON:
        raise ConfigError(f"policy.execute_steps: expected at most {HORIZON} for example-flow, got {execute_steps}")
    with torch.random.fork_rng(devices=[]):  # the same weights in every process, global RNG untouched
        torch.manual_seed(SEED)
        perception, generation = FlowPerception(config.env.image_size), FlowGeneration()
    return Policy(config.policy.type, perception, generation, execute_steps=execute_steps)
