"""Checkpoints: a directory with ``model.safetensors`` (weights) and ``config.json`` (everything
needed to rebuild the model: type, hyperparameters, normalisation, training provenance).

Shipped checkpoints live in ``auras/policies/checkpoints/<name>/`` inside the package;
``resolve_checkpoint("tiny-vla")`` finds them, any other value is taken as a path.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from auras.errors import InvalidInputError

__all__ = ["load_checkpoint", "resolve_checkpoint", "save_checkpoint", "shipped_checkpoints"]

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def shipped_checkpoints() -> list[str]:
    root = resources.files("auras.policies").joinpath("checkpoints")
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.joinpath(CONFIG).is_file())


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped checkpoint name ('tiny-vla') or a directory path -> the checkpoint directory."""
    if str(name_or_path) in shipped_checkpoints():
        return Path(str(resources.files("auras.policies").joinpath("checkpoints", str(name_or_path))))
    path = Path(name_or_path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise InvalidInputError(
            f"checkpoint {str(name_or_path)!r}: expected a shipped name {shipped_checkpoints()} or a directory "
            f"holding {CONFIG} and {WEIGHTS}"
        )
    return path


def save_checkpoint(path: str | Path, model: Any, config: dict[str, Any]) -> Path:
    """Write ``model``'s state dict (safetensors) and ``config`` (JSON) into directory ``path``."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_checkpoint(name_or_path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, state_dict) of a checkpoint."""
    from safetensors.torch import load_file

    path = resolve_checkpoint(name_or_path)
    config = json.loads((path / CONFIG).read_text())
    return config, load_file(str(path / WEIGHTS))
