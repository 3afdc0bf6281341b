"""Meta-World v3 tasks behind the auras observation contract (see envs/base.py).

Determinism: ``reset(seed=s)`` seeds the task's own random generator and lets Meta-World sample
the object and goal positions with its own rejection rules (``seeded_rand_vec``). Freezing a
hand-sampled position vector instead can hang: push-v3 resamples in a ``while`` loop until the
object is far enough from the goal, and a frozen vector never changes. Each reset also clears all
of MjData, so nothing of the previous episode leaks into the next.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from gymnasium.utils import seeding

from auras.envs.base import AurasTaskEnv
from auras.errors import unknown_name_message
from auras.tasks import TASKS

__all__ = ["MetaWorldTaskEnv"]


class MetaWorldTaskEnv(AurasTaskEnv):
    """One Meta-World v3 task with the goal visible in the privileged state (as in MT1)."""

    def __init__(self, task: str = "push-v3", **kwargs: Any) -> None:
        if task not in TASKS or TASKS[task].family != "metaworld":
            names = [n for n, t in TASKS.items() if t.family == "metaworld"]
            raise ValueError(unknown_name_message("Meta-World task", task, names))
        super().__init__(task, **kwargs)
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        env = ALL_V3_ENVIRONMENTS[task]()
        env._set_task_called = True
        if env._partially_observable:  # expose the goal position to the scripted expert
            env._partially_observable = False
            del env.sawyer_observation_space  # cached property: recompute with the goal bounds
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.max_path_length = self.horizon + 1  # our wrapper truncates; Meta-World raises past its limit
        self._env = env
        self._obs = np.zeros(39)

    @property
    def _mj(self):
        return self._env.model, self._env.data

    def _sim_reset(self, seed: int | None) -> None:
        if seed is not None:
            self._env.np_random, _ = seeding.np_random(seed)
        # Meta-World resets qpos/qvel only; solver warm-starts and other MjData state would leak
        # from the previous episode into the first frames (push-v3 images differed under one seed).
        mujoco.mj_resetData(self._env.model, self._env.data)
        self._obs, _ = self._env.reset()

    def _sim_step(self, action: np.ndarray) -> tuple[float, bool]:
        self._obs, reward, _, _, info = self._env.step(action)
        return float(reward), bool(info["success"])

    def _proprio(self) -> np.ndarray:
        return self._obs[:4]

    def privileged_state(self) -> np.ndarray:
        return np.array(self._obs, dtype=np.float64)

    def close(self) -> None:
        super().close()
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None
