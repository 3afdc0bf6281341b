"""Scripted experts behind one interface.

An expert maps the privileged simulator state (``info["privileged_state"]``, which a real robot
does not have) to a (4,) float32 action in [-1, 1]. Meta-World tasks use Meta-World's own scripted
policies (``metaworld.policies``); auras tasks provide an analytic expert.
"""

from __future__ import annotations

import warnings

import numpy as np

from auras.envs.expert_base import Expert
from auras.errors import unknown_name_message
from auras.tasks import TASKS

__all__ = ["Expert", "MetaWorldExpert", "make_expert"]


class MetaWorldExpert(Expert):
    """Meta-World's scripted policy for one task (succeeds ~100% on the core tasks)."""

    def __init__(self, task: str) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self._policy = ENV_POLICY_MAP[task]()

    def act(self, privileged_state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip below, as the env does
            warnings.simplefilter("ignore", UserWarning)
            action = self._policy.get_action(np.asarray(privileged_state, dtype=np.float64))
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_expert(task: str) -> Expert:
    """The scripted expert of ``task``."""
    if task not in TASKS:
        raise ValueError(unknown_name_message("task", task, TASKS))
    if TASKS[task].family == "metaworld":
        return MetaWorldExpert(task)
    from auras.envs.track_target import TrackTargetExpert

    return TrackTargetExpert()
