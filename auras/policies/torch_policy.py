"""What the learned policies share: checkpoint round trip, image preprocessing, training hooks.

A learned policy is one ``torch.nn.Module`` (so it trains end to end) that hands out its
perception and generation halves as a :class:`~auras.policies.base.Policy` for inference.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from auras.devices import torch_dtype
from auras.errors import InvalidInputError
from auras.perception.text import encode_instruction
from auras.policies.base import Policy
from auras.policies.checkpoint import load_checkpoint, save_checkpoint
from auras.policies.configuration import PolicyModelConfig
from auras.types import Observation

if TYPE_CHECKING:
    from auras.config import AurasConfig

__all__ = [
    "ConvBlock",
    "LearnedPolicy",
    "ModelPart",
    "SpatialSoftmax",
    "checked_samples",
    "group_count",
    "image_to_tensor",
    "observations_to_batch",
    "random_shift",
]


def observations_to_batch(
    observations: Sequence[Observation], max_instruction_bytes: int, camera: str = "front"
) -> dict[str, torch.Tensor]:
    """Observations -> the batch layout training uses: image (B,S,S,3) uint8, state (B,4) float32,
    instruction_ids (B,L) int64 (byte ids, see auras.perception.text)."""
    return {
        "image": torch.from_numpy(np.stack([o.images[camera] for o in observations])),
        "state": torch.from_numpy(np.stack([o.state for o in observations])),
        "instruction_ids": torch.from_numpy(
            np.stack([_cached_instruction(o.instruction, max_instruction_bytes) for o in observations])
        ),
    }


@functools.lru_cache(maxsize=256)
def _cached_instruction(text: str, max_bytes: int) -> np.ndarray:
    return encode_instruction(text, max_bytes)


def checked_samples(
    actions: np.ndarray, states: np.ndarray, instructions: Sequence[str], config: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``actions`` (N, action_dim) and ``states`` (N, state_dim) as float32, after checking their shapes
    and that every instruction fits ``max_instruction_bytes`` (InvalidInputError otherwise)."""
    actions, states = np.asarray(actions, np.float32), np.asarray(states, np.float32)
    if actions.ndim != 2 or actions.shape[1] != config["action_dim"] or not len(actions):
        raise InvalidInputError(f"actions: expected (N, {config['action_dim']}), got {actions.shape}")
    if states.ndim != 2 or states.shape[1] != config["state_dim"] or not len(states):
        raise InvalidInputError(f"states: expected (N, {config['state_dim']}), got {states.shape}")
    for text in instructions:
        encode_instruction(text, int(config["max_instruction_bytes"]))  # raises if too long
    return actions, states


def image_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 in [0, 1]."""
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).to(torch.float32).div(255.0)  # never in place: the caller's tensor stays


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by ``pad`` and crop back at a random offset per image.

    images (B, C, S, S) -> (B, C, S, S).
    """
    b, _, s, _ = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")  # (B, C, S+2p, S+2p)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(s)[None]).long()  # (B, S)
    cols = (dx[:, None] + torch.arange(s)[None]).long()  # (B, S)
    batch = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def group_count(channels: int, wanted: int = 8) -> int:
    """The largest GroupNorm group count <= wanted that divides ``channels``."""
    for g in range(min(wanted, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class ConvBlock(nn.Module):
    """3x3 stride-2 conv, GroupNorm, ReLU, 3x3 conv, GroupNorm, ReLU: (B, Ci, S, S) -> (B, Co, ceil(S/2), ...)."""

    def __init__(self, c_in: int, c_out: int, n_groups: int) -> None:
        super().__init__()
        g = group_count(c_out, n_groups)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
            nn.GroupNorm(g, c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.GroupNorm(g, c_out),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) -> (B, 2K): a 1x1 conv to K keypoint maps, softmax over space, expected (x, y) in [-1, 1]."""

    def __init__(self, channels: int, keypoints: int, size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, keypoints, 1)
        lin = torch.linspace(-1.0, 1.0, size)
        ys, xs = torch.meshgrid(lin, lin, indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), persistent=False)  # (hw, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.proj(x).flatten(2)  # (B, K, hw)
        weights = torch.softmax(maps, dim=-1)
        return (weights @ self.grid.to(weights.dtype)).flatten(1)  # (B, K, 2) -> (B, 2K)


class LearnedPolicy(nn.Module):
    """Base of tiny-vla and tiny-dp. Subclasses define the model, the loss and the split."""

    policy_type: ClassVar[str]
    # The typed hyperparameters (auras.policies.configuration); must include chunk_horizon, max_instruction_bytes.
    config_class: ClassVar[type[PolicyModelConfig]]
    # Buffers that stay float32 in any serving dtype (normalisation bounds the actions' precision depends on).
    FLOAT32_BUFFERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Mapping[str, Any]) -> None:
        """``config``: hyperparameters (missing ones take their defaults), validated by ``config_class``
        (ConfigError naming the key); ``self.config`` holds every key as plain JSON values."""
        super().__init__()
        self.config = self.config_class.parse(config, where=f"{self.policy_type} config").model_dump(mode="json")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every hyperparameter with its default value."""
        return cls.config_class.defaults()

    @classmethod
    @abstractmethod
    def from_samples(cls, actions: np.ndarray, states: np.ndarray, instructions: list[str],
                     **overrides: Any) -> LearnedPolicy:
        """A fresh model whose normalisation / tokenizer bounds are fitted to training data."""

    @abstractmethod
    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss of a batch: image (B,S,S,3) uint8, state (B,4), actions (B,H,A), instruction_ids (B,L)."""

    @abstractmethod
    def as_policy(self, execute_steps: int | None = None) -> Policy:
        """This model's perception and generation halves, ready for an executor (eval mode, no grad)."""

    @classmethod
    def build_policy(cls, config: AurasConfig) -> Policy:
        """The registry's factory: ``config.policy.checkpoint`` (default: the shipped checkpoint named like
        the policy) with ``policy.model``'s serving settings, resized by the scale factors (random weights
        when they are not 1), as a Policy. The hosting worker moves it to ``policy.device`` / ``policy.dtype``."""
        checkpoint = config.policy.checkpoint or cls.policy_type
        cls.config_class.check_overrides_of_trained(config.policy.model, checkpoint)
        model = cls.from_pretrained(checkpoint, **config.policy.model)
        model = model.scaled(config.policy.scale_perception, config.policy.scale_generation)
        return model.as_policy(config.policy.execute_steps)

    def place(self, device: str, dtype: str = "float32") -> LearnedPolicy:
        """Move parameters and buffers to ``device`` in ``dtype`` (``FLOAT32_BUFFERS`` stay float32)."""
        self.to(device=torch.device(device), dtype=torch_dtype(dtype))
        for name in self.FLOAT32_BUFFERS:
            self._buffers[name] = self._buffers[name].float()
        return self

    def save_pretrained(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        config = {"policy_type": self.policy_type, **self.config, **({"training": extra} if extra else {})}
        return save_checkpoint(path, self, config)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> LearnedPolicy:
        """Load a shipped checkpoint by name ('tiny-vla') or a checkpoint directory; ``overrides`` replace
        config values before the model is built (they must not change its parameter shapes)."""
        config, state = load_checkpoint(name_or_path)
        if config.get("policy_type") != cls.policy_type:
            raise InvalidInputError(
                f"checkpoint {str(name_or_path)!r}: expected a {cls.policy_type} checkpoint, "
                f"got policy_type={config.get('policy_type')!r}"
            )
        config.pop("policy_type")
        config.pop("training", None)
        model = cls({**config, **overrides})
        model.load_state_dict(state)
        return model.eval()

    @classmethod
    @abstractmethod
    def scaled_config(cls, config: dict[str, Any], perception: float, generation: float) -> dict[str, Any]:
        """``config`` with perception and generation grown (or shrunk) by these factors in depth or width,
        for throughput sweeps; normalisation statistics are kept."""

    def scaled(self, perception: float = 1.0, generation: float = 1.0) -> LearnedPolicy:
        """A model of this class from :meth:`scaled_config`, with RANDOM weights (sizes differ)."""
        if (perception, generation) == (1.0, 1.0):
            return self
        return type(self)(self.scaled_config(dict(self.config), perception, generation)).eval()

    @property
    def chunk_horizon(self) -> int:
        return int(self.config["chunk_horizon"])

    @property
    def max_instruction_bytes(self) -> int:
        return int(self.config["max_instruction_bytes"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ModelPart:
    """Mixin of the perception and generation halves of a :class:`LearnedPolicy` (both hold ``model``):
    ``to`` moves the shared model (idempotent, so the second half's call costs nothing) and drops
    caches computed on the old device."""

    model: LearnedPolicy

    def to(self, device: str, dtype: str = "float32") -> None:
        self.model.place(device, dtype)
        self.moved()

    def moved(self) -> None:
        """Drop what was computed on the previous device or dtype (default: nothing)."""
