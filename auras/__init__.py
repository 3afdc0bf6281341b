"""auras: an inference runtime for embodied agents.

Splits a policy into perception and generation and runs them as a controlled-depth pipeline (locally
or as Ray actors) whose requests read a public context: the freshest observation's perception output.
Importing ``auras`` is cheap: torch, ray, mujoco and transformers load only inside the modules that
need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AurasAgent",
    "AurasConfig",
    "AurasError",
    "InvalidInputError",
    "Observation",
    "ObservationSpec",
    "StepTimings",
    "__version__",
    "load_config",
]

_LAZY = {
    "Action": "auras.types",
    "Observation": "auras.types",
    "ObservationSpec": "auras.types",
    "StepTimings": "auras.types",
    "AurasAgent": "auras.agent",
    "AurasConfig": "auras.config",
    "load_config": "auras.config",
    "AurasError": "auras.errors",
    "InvalidInputError": "auras.errors",
}

if TYPE_CHECKING:
    from auras.agent import AurasAgent
    from auras.config import AurasConfig, load_config
    from auras.errors import AurasError, InvalidInputError
    from auras.types import Action, Observation, ObservationSpec, StepTimings


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'auras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
