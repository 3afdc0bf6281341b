"""`auras robot-sim`: a MuJoCo task acting as a real robot behind the bridge, in its own process.

The control loop is :func:`auras.robot_loop.run_robot_episode`, the same robot side as the bench's
realtime clock: at the task's control rate in wall-clock time (80 Hz for Meta-World) it applies the
row of the freshest valid action chunk that the staleness executor picks for that step (the
server's strategy unless told otherwise; an action older than the client's TTL is never applied;
past the chunk's end the last row is held, and before any action or once the deadline contract of
:mod:`auras_client.runtime` says so, the fallback runs: by default the arm holds still once the chunk
is older than TTL + its own duration), and at ``camera_hz`` it renders a camera frame and
publishes it with the joint state, prepared by the executor (rtc's guide, roll_forward's state).
It never waits for the agent. Here the link to the agent is a :class:`ClientLink` over
:class:`~auras_client.client.RobotClient`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from auras.errors import ConfigError, StepFailedError
from auras.robot_loop import LinkAction, Lockstep, RealTime, RobotEpisode, run_robot_episode
from auras.staleness import ChunkExecutor, StrategyError
from auras_client.client import RobotClient

__all__ = ["ClientLink", "executor_for", "run_robot"]


class ClientLink:
    """The robot loop's link through ``auras serve``: observations published by ``client``, which
    declares one camera (the simulated robot's), actions as the client received them (ids are the
    client's seqs; ages on the robot's clock, from the capture stamp of the action's newest input).
    An agent that failed on the server raises StepFailedError here, as an in-process one does."""

    def __init__(self, client: RobotClient) -> None:
        if len(client.cameras) != 1:
            raise ConfigError(f"ClientLink: expected a client declaring one camera, got {list(client.cameras)}")
        self.client = client
        self.camera = next(iter(client.cameras))

    def reset(self) -> None:
        self.client.reset()

    def send(self, t: int, image: np.ndarray, state: np.ndarray, extras: Mapping[str, np.ndarray]) -> int | None:
        self._raise_failure()
        return self.client.publish({self.camera: image}, state, extras=dict(extras) or None)

    def _raise_failure(self) -> None:
        if self.client.server_state == "failed":
            errors = [e for e in self.client.events if e.get("event") == "error"]
            detail = f": {errors[-1].get('code')}: {errors[-1].get('message')}" if errors else ""
            raise StepFailedError(f"the agent failed on the server{detail}")

    def latest(self) -> LinkAction | None:
        self._raise_failure()
        action = self.client.newest_action()
        if action is None:
            return None
        latency = action.header.get("latency_ms")
        return LinkAction(action.chunk, action.seq, action.context_seq, action.context_stamp,
                          float(latency) if isinstance(latency, int | float) else None, time.time)

    def answers(self) -> int:
        return self.client.episode_actions

    def wait_answers(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.answers() < count:
            self._raise_failure()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server answered {self.answers()} observations, expected {count}; "
                                   f"client counters {dict(self.client.counters)}")
            time.sleep(0.0005)


def run_robot(
    client: RobotClient,
    env: Any,
    seed: int,
    camera_hz: float = 30.0,
    privileged: bool = False,
    executor: ChunkExecutor | None = None,
    clock: RealTime | Lockstep | None = None,
) -> RobotEpisode:
    """One episode of ``env`` driven through ``client`` (see module doc). ``executor``: the robot side
    of a staleness strategy (default: the one the server's hello reply names); ``clock``: default
    real time with the client's TTL."""
    executor = executor if executor is not None else executor_for(client)
    clock = clock if clock is not None else RealTime(client.ttl_s)
    return run_robot_episode(ClientLink(client), env, seed, executor, camera_hz=camera_hz, clock=clock,
                             privileged=privileged)


def executor_for(client: RobotClient, strategy: str | None = None) -> ChunkExecutor:
    """The executor of the session ``client`` holds (:meth:`ChunkExecutor.from_server`: its policy's chunk
    shape and execute steps, the server's staleness settings, and ``strategy``, default the server's); a
    malformed strategy is a ConfigError."""
    try:
        return ChunkExecutor.from_server(client.server_info, strategy)
    except StrategyError as exc:
        raise ConfigError(str(exc)) from None
