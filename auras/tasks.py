"""The task catalogue: every task auras knows, its instruction text and its family.

Pure Python (no simulator import), so configuration can validate task names cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CORE_TASKS", "TASKS", "TaskInfo", "gym_id"]

# Meta-World v3 task names (metaworld.env_dict.ALL_V3_ENVIRONMENTS; a test keeps the two in sync).
METAWORLD_V3 = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3",
    "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3",
    "door-lock-v3", "door-open-v3", "door-unlock-v3", "hand-insert-v3", "drawer-close-v3",
    "drawer-open-v3", "faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3",
    "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3", "pick-place-wall-v3",
    "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3", "plate-slide-side-v3",
    "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-insert-side-v3", "peg-unplug-side-v3",
    "soccer-v3", "stick-push-v3", "stick-pull-v3", "push-v3", "push-wall-v3", "push-back-v3",
    "reach-v3", "reach-wall-v3", "shelf-place-v3", "sweep-into-v3", "sweep-v3", "window-open-v3",
    "window-close-v3",
)

_INSTRUCTIONS = {
    "push-v3": "push the puck to the green goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "button-press-v3": "press the button",
    "reach-v3": "reach the goal position",
    "drawer-open-v3": "open the drawer",
    "track-target-v0": "track the moving red ball with the gripper",
}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    name: str
    family: Literal["metaworld", "auras"]
    instruction: str


def _instruction(name: str) -> str:
    return _INSTRUCTIONS.get(name) or name.rsplit("-v", 1)[0].replace("-", " ")


TASKS: dict[str, TaskInfo] = {name: TaskInfo(name, "metaworld", _instruction(name)) for name in METAWORLD_V3} | {
    "track-target-v0": TaskInfo("track-target-v0", "auras", _instruction("track-target-v0"))
}

# The five Meta-World tasks every report covers, plus our dynamic task.
CORE_TASKS = ("push-v3", "pick-place-v3", "button-press-v3", "reach-v3", "drawer-open-v3", "track-target-v0")


def gym_id(task: str) -> str:
    """The gymnasium id of a task: 'push-v3' -> 'auras/push-v3'."""
    return f"auras/{task}"
