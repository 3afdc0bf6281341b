"""Carrying rtc's guide (staleness strategy ``rtc``) from the observation into the context.

The robot side puts the rows its current chunk will run and their weights in
``Observation.extras`` (:data:`~auras.staleness.GUIDE_ACTIONS`, :data:`~auras.staleness.GUIDE_WEIGHTS`);
the wrapped perception adds them to the context it returns, where the denoising generation reads
them (:mod:`auras.generation.guidance`) and, in mode ``auras``, the public context store hands the
freshest guide to every in-flight request. An observation without a guide gets zero weights (no
constraint), so the robot's first request and a robot that never sends one still work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from auras.errors import ConfigError, InvalidInputError
from auras.generation.guidance import PULL, GuidanceRule
from auras.perception.base import Context, ForwardingPerception, Perception
from auras.policies.base import Policy
from auras.staleness import GUIDE_ACTIONS, GUIDE_WEIGHTS
from auras.types import Observation

__all__ = ["guide_rows", "with_action_guide"]


def with_action_guide(policy: Policy, rule: GuidanceRule = PULL) -> Policy:
    """``policy`` whose contexts carry each observation's rtc guide (denoising chunk policies only), its flow
    steered by ``rule`` (flow-matching policies; the others pull their clean prediction)."""
    gen = policy.generation
    if gen.family != "denoising" or len(gen.action_shape) != 2:
        raise ConfigError(
            f"staleness.strategy rtc: needs a denoising policy that predicts action chunks; "
            f"{policy.name!r} is {gen.family} with actions of shape {tuple(gen.action_shape)}"
        )
    inner = gen
    while hasattr(inner, "_inner"):  # through wrappers (injected delays) to the generation itself
        inner = inner._inner
    if hasattr(inner, "guidance"):  # a flow-matching generation: it takes a guidance rule
        inner.guidance = rule
    elif rule.kind != "pull":
        raise ConfigError(
            f"staleness.rtc_guidance {rule.kind}: a rule of flow-matching generations; {policy.name!r} pulls its "
            "clean prediction (rtc_guidance pull)"
        )
    horizon, dim = (int(n) for n in gen.action_shape)
    return replace(policy, perception=_GuidedPerception(policy.perception, horizon, dim))


def guide_rows(observations: Sequence[Observation], horizon: int, action_dim: int) -> dict[str, torch.Tensor]:
    """The batched guide of ``observations``: actions (B, H, A) and weights (B, H), float32."""
    actions = np.zeros((len(observations), horizon, action_dim), np.float32)
    weights = np.zeros((len(observations), horizon), np.float32)
    for i, obs in enumerate(observations):
        if GUIDE_WEIGHTS not in obs.extras and GUIDE_ACTIONS not in obs.extras:
            continue
        rows = np.asarray(obs.extras.get(GUIDE_ACTIONS))
        mask = np.asarray(obs.extras.get(GUIDE_WEIGHTS))
        if rows.shape != (horizon, action_dim) or mask.shape != (horizon,):
            raise InvalidInputError(
                f"Observation.extras: expected {GUIDE_ACTIONS!r} ({horizon}, {action_dim}) and {GUIDE_WEIGHTS!r} "
                f"({horizon},), got {rows.shape} and {mask.shape}"
            )
        if not (np.isfinite(rows).all() and np.isfinite(mask).all() and ((mask >= 0) & (mask <= 1)).all()):
            raise InvalidInputError(
                f"Observation.extras: the rtc guide must be finite with weights in [0, 1] (step {obs.step_id})"
            )
        actions[i], weights[i] = rows, mask
    return {GUIDE_ACTIONS: torch.from_numpy(actions), GUIDE_WEIGHTS: torch.from_numpy(weights)}


class _GuidedPerception(ForwardingPerception):
    """The wrapped perception; its contexts gain the guide keys."""

    def __init__(self, inner: Perception, horizon: int, action_dim: int) -> None:
        super().__init__(inner)
        self._shape = (horizon, action_dim)

    def perceive(self, observations: Sequence[Observation]) -> Context:
        return {**self._inner.perceive(observations), **guide_rows(observations, *self._shape)}

    def stages(self) -> list[Callable[[Any], Any]]:
        """The inner stages; the guide rides next to the carry from the first stage to the last."""
        inner = self._inner.stages()
        last = len(inner) - 1

        def wrap(index: int, stage: Callable[[Any], Any]) -> Callable[[Any], Any]:
            def run(carry: Any) -> Any:
                if index == 0:
                    carry, guide = stage(carry), guide_rows(carry, *self._shape)
                else:
                    carry, guide = stage(carry[0]), carry[1]
                return {**carry, **guide} if index == last else (carry, guide)

            return run

        return [wrap(i, stage) for i, stage in enumerate(inner)]
