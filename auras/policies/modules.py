"""What the policies built on native torch modules share (SmolVLA, π0, π0.5, OpenVLA): building modules directly in
a dtype, loading a checkpoint's weights after checking them key by key, the perception / generation halves moving
the shared modules, and a bounded cache of tokenized instructions."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from auras.devices import torch_dtype
from auras.errors import ConfigError, InvalidInputError

__all__ = ["ModulesPart", "built_in", "cached_encoder", "load_weights", "refuse_scaling"]

T = TypeVar("T")


@contextlib.contextmanager
def built_in(dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed in this block have parameters of ``dtype`` (a multi-billion-parameter model built in float32
    first would need twice the memory)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], file: str, what: str) -> None:
    """``state`` into ``module`` after checking every key and shape (an error names the first difference)."""
    expected = module.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise InvalidInputError(f"{what} checkpoint {file!r}: unexpected key {key!r} (its config describes no "
                                    "such parameter)")
        if tuple(expected[key].shape) != tuple(value.shape):
            raise InvalidInputError(
                f"{what} checkpoint {file!r}: {key!r} has shape {tuple(value.shape)}, but its config.json "
                f"gives {tuple(expected[key].shape)}"
            )
    missing = sorted(set(expected) - set(state))
    if missing:
        raise InvalidInputError(f"{what} checkpoint {file!r}: missing {len(missing)} key(s), first {missing[:3]}")
    module.load_state_dict(state)


class ModulesPart:
    """Mixin of a perception or generation half over shared torch modules (``model``): ``to`` moves them (the
    second half's call finds them moved)."""

    model: nn.Module

    def to(self, device: str, dtype: str = "float32") -> None:
        self.model.to(device=torch.device(device), dtype=torch_dtype(dtype))


def cached_encoder(encode: Callable[[str], T], size: int = 1024) -> Callable[[str], T]:
    """``encode`` remembering its last ``size`` distinct texts (a robot repeats its instruction every request; a
    server with many robots stays bounded)."""
    return functools.lru_cache(maxsize=size)(encode)


def refuse_scaling(config: Any, name: str, hint: str = "it runs at its checkpoint's or its full size") -> None:
    """ConfigError if ``policy.scale_perception`` / ``scale_generation`` ask ``name`` (a model of fixed, real sizes)
    to scale; ``hint`` says what to do instead."""
    if (config.policy.scale_perception, config.policy.scale_generation) != (1.0, 1.0):
        raise ConfigError(f"{name}: scale_perception / scale_generation are not supported; {hint}")
