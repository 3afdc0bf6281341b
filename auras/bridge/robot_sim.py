"""`auras robot-sim`: a MuJoCo task acting as a real robot behind the bridge, in its own process.

The control loop runs at the task's control rate in wall-clock time (80 Hz for Meta-World). Every
control step it applies the row of the newest valid action chunk that the staleness executor
picks for that step (:class:`~auras.staleness.ChunkExecutor`, the server's strategy unless told
otherwise; an action older than the client's TTL when it arrives is never applied; past the
chunk's end the last row is held, and once the chunk is older than TTL + its own duration, or
before any action, the arm holds still), and at ``camera_hz`` it renders a camera frame and
publishes it with the joint state, prepared by the executor (rtc's guide, roll_forward's state).
It never waits for the agent. Per episode it reports success and timing: actions received and
applied, expired or missing steps, action age at takeover, and control-loop overruns.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from auras.staleness import EXECUTOR_SETTINGS, ChunkExecutor, Strategy
from auras_client.client import ReceivedAction, RobotClient

__all__ = ["EpisodeReport", "executor_for", "run_robot"]


@dataclass
class EpisodeReport:
    seed: int
    success: bool = False
    steps: int = 0
    steps_to_success: int | None = None
    frames_published: int = 0
    actions_applied: int = 0  # distinct actions that took over
    idle_steps: int = 0  # control steps with no valid action (holding still)
    overruns: int = 0  # control steps that started late
    action_age_ms: list[float] = field(default_factory=list)  # capture -> takeover, per applied action

    def summary(self) -> dict[str, Any]:
        ages = np.asarray(self.action_age_ms) if self.action_age_ms else None
        data = asdict(self)
        data.pop("action_age_ms")
        data["action_age_ms_p50"] = float(np.percentile(ages, 50)) if ages is not None else None
        data["action_age_ms_p99"] = float(np.percentile(ages, 99)) if ages is not None else None
        return data


def run_robot(
    client: RobotClient,
    env: Any,
    seed: int,
    camera_hz: float = 30.0,
    privileged: bool = False,
    executor: ChunkExecutor | None = None,
) -> EpisodeReport:
    """One real-time episode of ``env`` driven through ``client`` (see module doc). ``executor``: the
    robot side of a staleness strategy (default: the one the server's hello reply names)."""
    client.reset()
    env.reset(seed=seed)
    executor = executor if executor is not None else executor_for(client)
    executor.reset()
    report = EpisodeReport(seed=seed)
    dt, camera_every = env.control_dt, max(1, round(1.0 / (camera_hz * env.control_dt)))
    captured: dict[int, int] = {}  # observation seq -> the control step it was captured at
    current: ReceivedAction | None = None
    info: dict[str, Any] = {}
    start = time.perf_counter()
    for t in range(env.horizon):
        if t % camera_every == 0 and executor.wants_request(t):
            obs = env.observe()
            state, extras = executor.prepare_inputs(t, obs["state"])
            if privileged:
                extras["privileged_state"] = env.privileged_state()
            seq = client.publish({"front": obs["image"]}, state, extras=extras or None)
            if seq is not None:
                report.frames_published += 1
                captured[seq] = t
        action = client.latest_action()
        if action is not None and (current is None or action.order > current.order):
            current = action
            executor.accept_chunk(action.chunk, captured.get(action.context_seq, captured.get(action.seq, t)), t)
            report.actions_applied += 1
            report.action_age_ms.append(action.age() * 1e3)
        values = executor.row(t)
        if values is None or current is None or current.age() > client.ttl_s + executor.horizon * dt:
            values = np.zeros(env.action_space.shape, np.float32)  # nothing valid (agent away): hold still
            report.idle_steps += 1
        _, terminated, truncated, info = env.advance(values)
        report.steps = t + 1
        if info["success"] and not report.success:
            report.success, report.steps_to_success = True, t + 1
        if terminated or truncated:
            break
        late = time.perf_counter() - (start + (t + 1) * dt)
        if late > 0:
            report.overruns += 1
            start += late  # slip the schedule; never run fast to catch up
        else:
            time.sleep(-late)
    return report


def executor_for(client: RobotClient, strategy: str | None = None) -> ChunkExecutor:
    """The executor of the session ``client`` holds: its policy's chunk shape and execute steps and the
    server's staleness settings (blend weight, queue threshold, execution horizon, ...) from the hello
    reply, and ``strategy`` (default: the server's; public_context is the server's own part)."""
    info = client.server_info
    shape = info.get("action_shape", [1, 1])
    chunk_shape = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
    name = strategy if strategy is not None else info.get("staleness_strategy", "none")
    settings = {key: value for key, value in info.get("staleness_settings", {}).items() if key in EXECUTOR_SETTINGS}
    return ChunkExecutor(Strategy.parse(name).robot_side, int(info.get("execute_steps", 1)), chunk_shape, **settings)
