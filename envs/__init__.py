"""auras task environments (installed as ``auras.envs``; source folder ``envs/``).

Importing this package registers every task with gymnasium under ``auras/<task>``:
``gymnasium.make("auras/push-v3")``. See envs/base.py for the observation contract.
"""

from __future__ import annotations

import gymnasium

from auras.errors import unknown_name_message
from auras.tasks import CORE_TASKS, TASKS, gym_id

__all__ = ["CORE_TASKS", "TASKS", "gym_id", "make_env", "register_envs"]


def register_envs() -> None:
    """Register every task in the catalogue with gymnasium (idempotent)."""
    for name, info in TASKS.items():
        env_id = gym_id(name)
        if env_id in gymnasium.registry:
            continue
        entry = (
            "auras.envs.metaworld_env:MetaWorldTaskEnv"
            if info.family == "metaworld"
            else "auras.envs.track_target:TrackTargetEnv"
        )
        kwargs = {"task": name} if info.family == "metaworld" else {}
        gymnasium.register(id=env_id, entry_point=entry, kwargs=kwargs, disable_env_checker=True)


def make_env(task: str, **kwargs):
    """Build the env of ``task`` directly (no gymnasium wrappers); kwargs go to its constructor."""
    if task not in TASKS:
        raise ValueError(unknown_name_message("task", task, TASKS))
    if TASKS[task].family == "metaworld":
        from auras.envs.metaworld_env import MetaWorldTaskEnv

        return MetaWorldTaskEnv(task, **kwargs)
    from auras.envs.track_target import TrackTargetEnv

    return TrackTargetEnv(**kwargs)


register_envs()
