"""auras-client: the robot side of the auras bridge (docs/bridge.md). Needs only numpy, pyzmq and
msgpack (OpenCV only if you send JPEG or PNG frames), so it installs on a robot's computer without
torch, Ray or a simulator.

    from auras_client import Fallback, RobotClient

    with RobotClient("tcp://SERVER:5555", cameras={"front": (84, 84)}, state_dim=4,
                     instruction="push the puck to the green goal") as robot:
        control = robot.control(control_hz=80, camera_hz=30, deadline_s=0.2, fallback=Fallback("decay", 0.3))
        while running:
            apply(control.step(lambda: ({"front": camera.read()}, joint_state())))  # the row to apply now

or, for a robot that runs its own executor, ``robot.publish(...)`` and ``robot.take_action()``. A robot
script written for openpi gets the same deadline from ``auras_client.openpi.DeadlinePolicy``. The staleness
strategies (``auras_client.staleness``) and the control step with its deadline fallback
(``auras_client.runtime``) import numpy alone; names are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "ChunkExecutor",
    "DeadlinePolicy",
    "Fallback",
    "ProtocolError",
    "ReceivedAction",
    "RobotClient",
    "RobotControl",
    "RobotRuntime",
    "ServiceError",
    "Strategy",
]

_HOMES = {
    "SCHEMA_VERSION": "auras_client.protocol",
    "ProtocolError": "auras_client.protocol",
    "ReceivedAction": "auras_client.client",
    "RobotClient": "auras_client.client",
    "ServiceError": "auras_client.client",
    "RobotControl": "auras_client.control",
    "DeadlinePolicy": "auras_client.openpi",
    "Fallback": "auras_client.runtime",
    "RobotRuntime": "auras_client.runtime",
    "ChunkExecutor": "auras_client.staleness",
    "Strategy": "auras_client.staleness",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'auras_client' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
