"""The control-loop face of the robot client: one call per control tick gives the row to apply now.

    with RobotClient("tcp://SERVER:5555", cameras={"front": (84, 84)}, state_dim=4,
                     instruction="push the puck") as robot:
        control = robot.control(control_hz=80, camera_hz=30, deadline_s=0.2,
                                fallback=Fallback("decay", decay_s=0.3))
        while running:
            apply(control.step(lambda: ({"front": camera.read()}, joint_states())))
            sleep_until_next_tick()

Each :meth:`RobotControl.step` hands the freshest action the client received to the
:class:`~auras_client.runtime.RobotRuntime` (the server's staleness strategy, carried out here: rows
time-aligned to the capture step of the action's newest input, blended, rolled forward or RTC-guided,
with the execution horizon), sends an observation when the strategy wants one (calling ``observe`` only
then, so a camera is read only on the ticks that send), and returns the row to apply, the deadline
fallback included. It keeps the client's connection handling: after a server restart the client says
hello again by itself, the robot runs its fallback meanwhile, and the first fresh chunk ends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from auras_client.runtime import Fallback, RobotRuntime
from auras_client.staleness import ChunkExecutor

if TYPE_CHECKING:
    from auras_client.client import RobotClient

__all__ = ["RobotControl"]

Observe = Callable[[], tuple[Mapping[str, np.ndarray], np.ndarray]]


class RobotControl:
    """A robot's control loop over a :class:`~auras_client.client.RobotClient` (see module doc).

    ``control_hz``: the rate :meth:`step` is called at; ``camera_hz``: the most observations per second
    it sends (default: one per step); ``strategy``: the robot-side staleness strategy (default: the
    server's, from its hello reply); ``deadline_s`` (default: the TTL rule with the client's ``ttl_s``)
    and ``fallback``: the deadline contract; ``clock``: the robot's monotonic clock (injectable for
    tests). The chunk shape and strategy are read from the hello reply once, here.
    """

    def __init__(
        self,
        client: RobotClient,
        control_hz: float,
        *,
        camera_hz: float | None = None,
        strategy: str | None = None,
        deadline_s: float | None = None,
        fallback: Fallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not control_hz > 0:
            raise ValueError(f"control_hz: expected a rate > 0, got {control_hz}")
        if camera_hz is not None and not camera_hz > 0:
            raise ValueError(f"camera_hz: expected a rate > 0, got {camera_hz}")
        if not client.server_info.get("action_shape"):
            raise ValueError("RobotControl: the client has no session yet (connect it first: the hello reply "
                             "names the chunk shape and the staleness strategy)")
        self.client = client
        self.executor = ChunkExecutor.from_server(client.server_info, strategy)
        camera_every = 1 if camera_hz is None else max(1, round(control_hz / camera_hz))
        self.runtime = RobotRuntime(self.executor, 1.0 / control_hz, camera_every=camera_every, ttl_s=client.ttl_s,
                                    deadline_s=deadline_s, fallback=fallback, clock=clock)
        self.t = 0  # the next control step
        self.offered: tuple[int, int] | None = None  # order of the last action handed to the runtime

    def step(
        self,
        observe: Observe | None = None,
        *,
        images: Mapping[str, np.ndarray] | None = None,
        state: np.ndarray | None = None,
    ) -> np.ndarray:
        """One control tick: the row (A,) float32 to apply now. ``observe()`` returns (images, state) and is
        called only when an observation goes out; or pass ``images`` and ``state`` directly (a robot that
        reads them every tick anyway)."""
        t = self.t
        action = self.client.newest_action()
        if action is not None and action.order != self.offered:
            self.offered = action.order
            latency = action.header.get("latency_ms")
            self.runtime.offer(t, action.chunk, action.seq, action.context_seq, action.age(),
                               float(latency) if isinstance(latency, int | float) else None)
        if self.runtime.wants_observation(t):
            if observe is not None:
                images, state = observe()
            if images is None or state is None:
                raise ValueError("step: give observe, or images and state (this tick sends an observation)")
            sent_state, extras = self.runtime.prepare(t, np.asarray(state, np.float32))
            seq = self.client.publish(images, sent_state, extras=extras or None)
            if seq is not None:
                self.runtime.sent(seq, t)
        self.t = t + 1
        return self.runtime.row(t)

    def reset(self) -> dict[str, Any]:
        """A new episode: the server drops in-flight work, the robot forgets its chunk and counters."""
        self.runtime.reset()  # first: a server that is away (TimeoutError below) must not leave the old episode
        self.t, self.offered = 0, None
        return self.client.reset()

    def stats(self) -> dict[str, Any]:
        """The control loop's counters: deadline misses, time in the fallback, the longest run without a
        fresh row, actions applied, expired and refused as not newer, idle and held steps, action ages."""
        return self.runtime.summary()
