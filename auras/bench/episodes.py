"""Closed-loop episodes and observation streams: the two measurements of a benchmark.

Accuracy: the agent drives the env for whole episodes under a time model (``bench.clock``, an object
of :data:`TIME_MODELS`): ``frame`` and ``virtual`` share one lock-step episode loop and differ only in
how many control steps a request spans and when its action takes over; ``realtime`` is the robot loop
of :mod:`auras.robot_loop` (the one `auras robot-sim` runs), the agent behind its ActionStream.
Throughput: a pre-recorded stream of observations is fed as fast as the agent accepts them, so
rendering does not compete with inference.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from auras.agent import AurasAgent
from auras.envs.base import AurasTaskEnv, to_observation
from auras.pipeline.pacing import pacer_for
from auras.robot_loop import AgentLink, RealTime, RobotEpisode, run_robot_episode
from auras.staleness import accept_action, executor_from_config, prepare_observation
from auras.types import Action, Observation

__all__ = [
    "TIME_MODELS",
    "EpisodeRecord",
    "FrameTime",
    "LockstepTime",
    "RealTimeModel",
    "StreamRecord",
    "TimeModel",
    "VirtualTime",
    "lockstep_episode",
    "run_episode",
    "run_stream",
]


@dataclass
class EpisodeRecord:
    seed: int
    success: bool
    steps: int
    steps_to_success: int | None
    latency_ms: list[float] = field(default_factory=list)
    staleness_ms: list[float] = field(default_factory=list)
    staleness_frames: list[int] = field(default_factory=list)
    overruns: int = 0  # realtime clock: control steps that started late (the sim could not keep pace)
    late_ms_max: float = 0.0  # realtime clock: the largest lag behind the wall-clock schedule
    idle_steps: int = 0  # realtime clock: control steps the robot held still (no valid action)
    expired: int = 0  # realtime clock: actions older than the TTL when the robot saw them (never applied)
    deadline_misses: int = 0  # realtime clock: runs without a fresh row past the deadline (the fallback took over)
    fallback_s: float = 0.0  # realtime clock: time in the deadline fallback
    actions_sha: str | None = None  # frame and virtual clocks: SHA-1 of every row applied, in order (float32 bytes)
    control_dt_s: float | None = None  # the env's control period (robot time per step)


@dataclass
class StreamRecord:
    output_times: list[float]  # the agent's clock, seconds, at each action out, warm-up excluded
    latency_ms: list[float]
    stage_ms: dict[str, list[float]]
    startup_ms: float  # reset -> first action out


class TimeModel(ABC):
    """How robot time relates to the agent's compute in a benchmark episode (``bench.clock``)."""

    name: str

    @abstractmethod
    def run(self, agent: AurasAgent, env: AurasTaskEnv, seed: int,
            record: Callable[[Observation], None] | None = None) -> EpisodeRecord:
        """One closed-loop episode; ``record`` receives every observation (to build a throughput stream)."""


class LockstepTime(TimeModel):
    """The robot waits for each ``step``: repeatable, the time models of :func:`lockstep_episode`. A model
    says how many control steps pass per request and when the new action takes over."""

    takes_over_at_once: bool  # the new action runs from the step it was requested at (else after the wait)

    @abstractmethod
    def rows_per_request(self, compute_ms: float, period_ms: float, dt_ms: float, execute_steps: int) -> int:
        """Control steps the robot runs for one request (on the chunk it has, or on the new one)."""

    def run(self, agent: AurasAgent, env: AurasTaskEnv, seed: int,
            record: Callable[[Observation], None] | None = None) -> EpisodeRecord:
        return lockstep_episode(agent, env, seed, self, record)


class FrameTime(LockstepTime):
    """``frame``: the env waits for each action; a chunk action executes its first ``policy.execute_steps``
    rows, one env step each, before the next observation is taken. Staleness is stamped at every row, in robot
    time (the newest input's age in env steps x ``env.control_dt``: the robot stood still while the agent
    computed), so the clock's results do not depend on the machine's speed."""

    name, takes_over_at_once = "frame", True

    def rows_per_request(self, compute_ms: float, period_ms: float, dt_ms: float, execute_steps: int) -> int:
        return execute_steps


class VirtualTime(LockstepTime):
    """``virtual``: simulated time advances by the agent's measured compute time. While ``step`` runs (wall
    time c), the robot keeps executing the rows of the chunk it has, one per control step
    (``env.control_dt``), holding the last row once the chunk is used up (and standing still before the
    first action); the new action takes over after ceil(c / dt) control steps (at least one), from its
    first row, and the next observation is taken then. A faster agent therefore acts more often and on
    fresher observations, as on a real robot. A paced agent (``pipeline.frame_period_ms``) takes at least
    its period per frame. Staleness is stamped when an action takes over."""

    name, takes_over_at_once = "virtual", False

    def rows_per_request(self, compute_ms: float, period_ms: float, dt_ms: float, execute_steps: int) -> int:
        return max(1, math.ceil(max(compute_ms, period_ms) / dt_ms))


class RealTimeModel(TimeModel):
    """``realtime``: the env at wall-clock pace, as on a real robot: the robot side of
    :mod:`auras.robot_loop` (the same loop `auras robot-sim` runs against `auras serve`) with the agent in
    this process behind its ActionStream, as on the server. The camera runs at ``bench.camera_hz``; an
    action older than ``bench.action_ttl_ms`` is never applied. Not repeatable: timing depends on the
    machine; an overrun slips the schedule and is counted."""

    name = "realtime"

    def run(self, agent: AurasAgent, env: AurasTaskEnv, seed: int,
            record: Callable[[Observation], None] | None = None) -> EpisodeRecord:
        if record is not None:
            raise ValueError("run_episode: record is for the frame and virtual clocks (a realtime robot sends its own)")
        bench = agent.config.bench
        executor = executor_from_config(agent.config, agent.policy_spec)
        with AgentLink(agent, env.instruction) as link:
            robot = run_robot_episode(link, env, seed, executor, camera_hz=bench.camera_hz,
                                      clock=RealTime(bench.action_ttl_ms / 1e3), privileged=agent.privileged)
        return replace(episode_record(robot), control_dt_s=env.control_dt)


TIME_MODELS: dict[str, TimeModel] = {model.name: model for model in (FrameTime(), VirtualTime(), RealTimeModel())}


def run_episode(
    agent: AurasAgent,
    env: AurasTaskEnv,
    seed: int,
    clock: str = "frame",
    record: Callable[[Observation], None] | None = None,
) -> EpisodeRecord:
    """One closed-loop episode under the time model ``clock`` (a key of :data:`TIME_MODELS`: ``frame``,
    ``virtual`` or ``realtime``); ``record`` receives every observation (frame and virtual)."""
    if clock not in TIME_MODELS:
        raise ValueError(f"clock: expected 'frame', 'virtual' or 'realtime', got {clock!r}")
    return TIME_MODELS[clock].run(agent, env, seed, record)


def lockstep_episode(agent: AurasAgent, env: AurasTaskEnv, seed: int, model: LockstepTime,
                     record: Callable[[Observation], None] | None = None) -> EpisodeRecord:
    """The one episode loop of the lock-step time models: observe, ``step``, then run the control steps
    ``model`` says the request spans.

    A step that returns the same action again (``parallel`` while its pool fills) does not restart the
    chunk: the robot carries on with the rows it has. The robot side of ``staleness.strategy``
    (:class:`~auras_client.staleness.ChunkExecutor`) decides which row runs at each control step, prepares each
    observation (rtc's guide, roll_forward's state) and, for chunk_blend, whether to send one at all; with
    the default strategy a new chunk runs from its first row when it takes over. Every row applied goes
    into the episode's ``actions_sha``.
    """
    agent.reset()
    env_obs, info = env.reset(seed=seed)
    result = EpisodeRecord(seed=seed, success=False, steps=0, steps_to_success=None, control_dt_s=env.control_dt)
    execute = agent.execute_steps
    dt_ms = env.control_dt * 1e3
    pacer = pacer_for(agent)  # its period, in robot time
    time_of = agent.clock.now  # the agent's clock: its compute time (the virtual clock advances by it)
    executor = executor_from_config(agent.config, agent.policy_spec)  # the robot side of the strategy
    standstill = np.zeros(env.action_space.shape, np.float32)  # before the first action
    applied = hashlib.sha1()  # every row the robot applies: two runs acted alike iff the digests match
    current: Action | None = None
    t, done = 0, False

    def act() -> None:  # one control step with the executor's row for it
        nonlocal env_obs, info, t, done
        values = standstill if (row := executor.row(t)) is None else row
        applied.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
        env_obs, _, terminated, truncated, info = env.step(values)
        t += 1
        result.steps = t
        if info["success"] and not result.success:
            result.success, result.steps_to_success = True, t
        done = terminated or truncated or t >= env.horizon

    while t < env.horizon and not done:
        if not executor.wants_request(t):  # chunk_blend: the queue is long enough; the robot just runs it
            act()
            continue
        obs = to_observation(env_obs, info, t, time_of(), privileged=agent.privileged)
        if record is not None:
            record(obs)
        start = time_of()
        action: Action = agent.step(prepare_observation(executor, obs))
        compute_ms = (time_of() - start) * 1e3
        period_ms = pacer.period_s * 1e3  # the period this frame was planned with
        pacer.record(compute_ms / 1e3)
        is_new = action is not current  # modes that may return the previous action again (parallel)
        if is_new:
            result.latency_ms.append(action.timings.latency_ms)
            current = action
        if model.takes_over_at_once and is_new:
            accept_action(executor, action, t)
        for _ in range(model.rows_per_request(compute_ms, period_ms, dt_ms, execute)):
            if model.takes_over_at_once:  # the robot's time stood still while the agent computed: frames x dt
                result.staleness_frames.append(t - _newest_input(action))  # env steps since its newest input
                result.staleness_ms.append((t - _newest_input(action)) * dt_ms)
            act()
            if done:
                break
        if not model.takes_over_at_once and is_new:
            accept_action(executor, action, t)
            result.staleness_frames.append(t - _newest_input(action))  # when it takes over
            result.staleness_ms.append((t - _newest_input(action)) * dt_ms)
    result.actions_sha = applied.hexdigest()
    return result


def episode_record(robot: RobotEpisode) -> EpisodeRecord:
    """The bench's record of an episode the robot loop ran (staleness: the newest input's age at takeover)."""
    return EpisodeRecord(
        seed=robot.seed, success=robot.success, steps=robot.steps, steps_to_success=robot.steps_to_success,
        latency_ms=list(robot.latency_ms), staleness_ms=list(robot.action_age_ms),
        staleness_frames=list(robot.staleness_steps), overruns=robot.overruns, late_ms_max=robot.late_ms_max,
        idle_steps=robot.idle_steps, expired=robot.expired, deadline_misses=robot.deadline_misses,
        fallback_s=robot.fallback_s,
    )


def _newest_input(action: Action) -> int:
    return action.context_step_id if action.context_step_id is not None else action.step_id


def run_stream(agent: AurasAgent, observations: Sequence[Observation], warmup: int) -> StreamRecord:
    """Feed ``observations`` back to back, or on the agent's frame period when it paces
    (``pipeline.frame_period_ms``), with fresh step ids and capture times; time the outputs.
    Only new actions count: a step that hands back the previous action again is not an output."""
    agent.reset()
    pacer = pacer_for(agent)
    clock = agent.clock
    output_times: list[float] = []
    latency_ms: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    start = clock.now()
    startup_ms = float("nan")
    previous = None
    for i, recorded in enumerate(observations):
        pacer.wait()
        obs = replace(recorded, step_id=i, capture_time=clock.now())
        action = agent.step(obs)
        pacer.record(clock.now() - obs.capture_time)
        pacer.release()  # on_tick: the action goes out at the next tick
        now = clock.now()
        if i == 0:
            startup_ms = (now - start) * 1e3
        is_new, previous = action is not previous, action
        if i < warmup or not is_new:
            continue
        output_times.append(now)
        latency_ms.append(action.timings.latency_ms)
        for stage, ms in action.timings.stages_ms.items():
            stage_ms.setdefault(stage, []).append(ms)
    return StreamRecord(output_times, latency_ms, stage_ms, startup_ms)
