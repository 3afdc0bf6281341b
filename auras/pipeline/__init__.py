"""Execution modes: executors that schedule perception and generation (see base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auras.errors import ConfigError, unknown_name_message

if TYPE_CHECKING:
    from auras.config import PipelineConfig
    from auras.pipeline.base import Executor
    from auras.policies.base import Policy

__all__ = ["MODES", "build_executor"]

MODES = ("sequential", "decoupled", "pipeline", "auras")


def build_executor(config: PipelineConfig, policy: Policy) -> Executor:
    if config.mode == "sequential":
        from auras.pipeline.sequential import SequentialExecutor

        return SequentialExecutor(policy)
    if config.mode == "decoupled":
        from auras.pipeline.decoupled import DecoupledExecutor

        return DecoupledExecutor(policy)
    if config.mode in ("pipeline", "auras"):
        from auras.pipeline.frames import FrameExecutor, FrameShape

        shape = FrameShape(config.pp_perception, config.pp_generation, config.fetch_offset)
        return FrameExecutor(policy, shape, public=config.mode == "auras", alpha=config.alpha, emit=config.emit)
    raise ConfigError(unknown_name_message("pipeline mode", config.mode, MODES))
