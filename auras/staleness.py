"""Staleness strategies, the server's side, and the robot side re-exported.

What each strategy does, and :class:`ChunkExecutor` (the robot side of all of them: which row runs at
each control step, what each observation carries), live in the robot client,
:mod:`auras_client.staleness` (numpy only), so a robot runs them without installing auras; the bench's
clocks and `auras robot-sim` use that same executor. This module adds what is the server's: resolving
a strategy against a pipeline mode (the public context *is* mode ``auras``), an executor from an
:class:`~auras.config.AurasConfig`, and the executor's face on auras' own types. Guided denoising (rtc's
server half) is :mod:`auras.generation.guidance`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from auras.errors import ConfigError
from auras.types import Action, Observation
from auras_client.staleness import (
    EXECUTOR_SETTINGS,
    GUIDE_ACTIONS,
    GUIDE_WEIGHTS,
    STRATEGIES,
    ChunkExecutor,
    Strategy,
    StrategyError,
    soft_mask,
)

__all__ = [
    "EXECUTOR_SETTINGS",
    "GUIDE_ACTIONS",
    "GUIDE_WEIGHTS",
    "STRATEGIES",
    "ChunkExecutor",
    "Strategy",
    "StrategyError",
    "accept_action",
    "executor_from_config",
    "parse_strategy",
    "prepare_observation",
    "resolve_strategy",
    "soft_mask",
]


def parse_strategy(text: str) -> Strategy:
    """:meth:`Strategy.parse`, its error a :class:`~auras.errors.ConfigError`."""
    try:
        return Strategy.parse(text)
    except StrategyError as exc:
        raise ConfigError(str(exc)) from None


def resolve_strategy(text: str, mode: str) -> Strategy:
    """The strategy ``staleness.strategy`` means in ``pipeline.mode``. The public context *is* mode
    ``auras``: there it is always on (``auto``, ``none`` and ``rtc`` mean public_context, public_context
    and public_context+rtc), elsewhere naming it is an error. So one setting (a preset's ``rtc``) gives
    every mode the same robot-side fixes."""
    strategy = Strategy() if text == "auto" else parse_strategy(text)
    if strategy.public_context and mode != "auras":
        raise ConfigError(
            f"staleness.strategy {text!r}: public_context is mode auras, but pipeline.mode is {mode!r}"
        )
    return replace(strategy, public_context=mode == "auras")


def executor_from_config(config: Any, spec: Any) -> ChunkExecutor:
    """The executor of an AurasConfig's ``staleness`` section for a policy spec (its mode decides
    ``auto``)."""
    section = config.staleness
    settings = {key: getattr(section, key) for key in EXECUTOR_SETTINGS}
    try:
        return ChunkExecutor(resolve_strategy(section.strategy, config.pipeline.mode), spec.execute_steps,
                             (spec.chunk_horizon, spec.action_dim), **settings)
    except StrategyError as exc:
        raise ConfigError(str(exc)) from None


def prepare_observation(executor: ChunkExecutor, obs: Observation) -> Observation:
    """The observation to send at control step ``obs.step_id``: rtc adds the guide rows and mask,
    roll_forward advances the proprio state by the pending actions."""
    state, extras = executor.prepare_inputs(int(obs.step_id), obs.state)
    if state is obs.state and not extras:
        return obs
    return replace(obs, state=state, extras={**obs.extras, **extras})


def accept_action(executor: ChunkExecutor, action: Action, t: int) -> None:
    """``action`` lands at control step ``t`` (its first row applies at ``t``); its newest input is its
    context's observation."""
    source = action.context_step_id if action.context_step_id is not None else action.step_id
    executor.accept_chunk(action.values, int(source), t)
