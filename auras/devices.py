"""Devices and dtypes a policy runs on: names, checks, and what torch sees.

``policy.device`` is ``cpu``, ``cuda`` or ``cuda:N``; ``policy.dtype`` is ``float32``, ``bfloat16``
or ``float16``. The worker that hosts a policy moves it there (``Policy.to``). A device this machine
cannot provide is an error that says what was asked, what torch sees and what to do: auras never
falls back to another device quietly. What torch sees comes from a :data:`DeviceProbe`, injectable
so the checks are testable on a machine without CUDA.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auras.errors import ConfigError

__all__ = ["DTYPES", "DeviceProbe", "TorchView", "actor_device", "check_device", "torch_dtype", "torch_view"]

DTYPES = ("float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(cpu|cuda(:(\d+))?)$")


@dataclass(frozen=True, slots=True)
class TorchView:
    """What torch in this process sees: whether CUDA works and how many devices it has."""

    cuda_available: bool
    device_count: int
    torch_version: str = ""


DeviceProbe = Callable[[], TorchView]


def torch_view() -> TorchView:
    """The real probe: asks torch in this process."""
    import torch

    available = bool(torch.cuda.is_available())
    return TorchView(available, torch.cuda.device_count() if available else 0, torch.__version__)


def check_device(device: str, probe: DeviceProbe | None = None) -> str:
    """Return ``device`` if this process can use it; raise ConfigError otherwise (no fallback)."""
    match = _DEVICE.match(device) if isinstance(device, str) else None
    if match is None:
        raise ConfigError(f"policy.device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return device
    seen = (probe or torch_view)()
    if not seen.cuda_available:
        raise ConfigError(
            f"policy.device: asked for {device!r}, but torch {seen.torch_version} in this process sees no CUDA "
            "device (torch.cuda.is_available() is False). Run on a machine with an NVIDIA GPU and a CUDA build "
            "of torch, or set policy.device=cpu (--set policy.device=cpu)."
        )
    index = int(match.group(3) or 0)
    if index >= seen.device_count:
        raise ConfigError(
            f"policy.device: asked for {device!r}, but torch sees {seen.device_count} CUDA device(s) "
            f"(cuda:0..cuda:{seen.device_count - 1}). Choose one of those, or check CUDA_VISIBLE_DEVICES."
        )
    return device


def actor_device(requested: str, gpu_ids: list[str]) -> str:
    """The device of a Ray actor: ``cpu`` stays ``cpu``; ``cuda`` is the GPU Ray assigned the actor
    (``gpu_ids``; Ray narrows CUDA_VISIBLE_DEVICES to them, so torch sees it as ``cuda``)."""
    if requested == "cpu":
        return "cpu"
    if not gpu_ids:
        raise ConfigError(
            f"policy.device={requested!r}: Ray assigned this actor no GPU; the placement group must reserve GPUs "
            "for actors that use CUDA"
        )
    return "cuda"


def torch_dtype(name: str) -> Any:
    """'bfloat16' -> torch.bfloat16 (a clear error for any other name)."""
    if name not in DTYPES:
        raise ConfigError(f"policy.dtype: expected one of {list(DTYPES)}, got {name!r}")
    import torch

    return getattr(torch, name)
