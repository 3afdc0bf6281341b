"""The robot side of a real-time control loop: one implementation for every robot auras drives on
the robot's own clock, the bench's ``realtime`` clock (the agent in this process) and
`auras robot-sim` (the agent behind `auras serve`).

Every control step ``t`` the robot

1. takes the freshest action the link holds, if it is fresher than the current one (ranked by its
   newest input, then its request: :attr:`LinkAction.order`) and younger than the TTL, and hands it
   to the executor, time-aligned to the control step its newest input was captured at;
2. at a camera tick (every ``round(1 / (camera_hz * control_dt))`` steps), if the staleness
   executor wants a request (chunk_blend waits until its queue is short), renders a frame and sends
   it with the joint state, prepared by the executor (rtc's guide rows and mask, roll_forward's
   advanced state); it never waits for the agent;
3. applies the row for ``t`` (standing still before any action; past a chunk's end its last row is
   held, and once the robot ran its deadline without a fresh row, its fallback: the deadline contract of
   :mod:`auras_client.runtime`);
4. steps the simulation and waits for the next slot of the clock.

Steps 1-3 are the robot client's :class:`~auras_client.runtime.RobotRuntime` (numpy only), the same
control step a robot runs with ``auras_client`` alone (``RobotClient.control``).

The link is how observations reach an agent and actions come back: :class:`AgentLink` (an
:class:`~auras.agent.AurasAgent` in this process, through its :class:`~auras.stream.ActionStream`) or
the bridge's client link (``auras.bridge.robot_sim.ClientLink``, through ``auras serve``). The server
runs the same ActionStream, so both paths drive the agent alike.

Clocks: :class:`RealTime` paces steps at wall-clock speed (an overrun slips the schedule; the robot
never runs fast to catch up). :class:`Lockstep` is deterministic: one observation in flight, its
action lands exactly ``delay_steps`` (>= 1) control steps after it was sent (the loop waits for it), so two
links serving the same agent apply the same rows at the same steps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from auras.types import Action, Observation
from auras_client.runtime import Fallback, RobotRuntime
from auras_client.staleness import ChunkExecutor

__all__ = [
    "AgentLink",
    "LinkAction",
    "Lockstep",
    "RealTime",
    "RobotEpisode",
    "RobotLink",
    "run_robot_episode",
]


@dataclass(frozen=True)
class LinkAction:
    """An action as the robot sees it: ``chunk`` (H, A); ``request_id`` the observation it answers,
    ``context_id`` the newest observation that influenced it (ids the link gave at ``send``);
    ``captured`` that newest observation's capture time on the link's clock; ``latency_ms`` the
    agent's admission-to-action time."""

    chunk: np.ndarray
    request_id: int
    context_id: int
    captured: float
    latency_ms: float | None
    clock: Callable[[], float] = field(repr=False, compare=False)

    @property
    def order(self) -> tuple[int, int]:
        """Freshness rank: newest input first, then request (a filling pipeline answers one request
        several times, each with a newer context)."""
        return (self.context_id, self.request_id)

    def age_s(self) -> float:
        """Seconds since its newest input was captured."""
        return self.clock() - self.captured


class RobotLink(Protocol):
    """How a robot reaches its agent."""

    def reset(self) -> None:
        """A new episode: the agent forgets every request; actions of earlier ones never come back."""

    def send(self, t: int, image: np.ndarray, state: np.ndarray, extras: Mapping[str, np.ndarray]) -> int | None:
        """Send the observation of control step ``t``; its id, or None when it was not sent (counted by
        the link)."""

    def latest(self) -> LinkAction | None:
        """The freshest action received since the last reset (any age), or None."""

    def answers(self) -> int:
        """Actions received so far, repeats included (one per observation the agent admitted)."""

    def wait_answers(self, count: int, timeout_s: float) -> None:
        """Block until :meth:`answers` reaches ``count``; TimeoutError after ``timeout_s``."""


@dataclass
class RobotEpisode:
    """One episode as the robot saw it."""

    seed: int
    success: bool = False
    steps: int = 0
    steps_to_success: int | None = None
    frames_published: int = 0
    actions_applied: int = 0  # distinct actions that took over
    expired: int = 0  # distinct actions that were older than the TTL when the robot saw them
    idle_steps: int = 0  # control steps with no chunk row: before the first action, or in the deadline fallback
    deadline_misses: int = 0  # runs without a fresh row that outlasted the deadline (the fallback took over)
    fallback_s: float = 0.0  # time spent in the fallback
    longest_gap_s: float = 0.0  # the longest run without a fresh row after the first action
    overruns: int = 0  # control steps that started late
    late_ms_max: float = 0.0  # the largest lag behind the wall-clock schedule
    action_age_ms: list[float] = field(default_factory=list)  # newest input's capture -> takeover
    staleness_steps: list[int] = field(default_factory=list)  # control steps since the newest input, at takeover
    latency_ms: list[float] = field(default_factory=list)  # the agent's latency of each applied action
    applied: list[np.ndarray] | None = None  # every row applied (Lockstep(record_rows=True))
    resumed_at: list[float] = field(default_factory=list)  # monotonic time of the first fresh row after each miss
    control: dict[str, Any] = field(default_factory=dict)  # the control loop's own summary (RobotRuntime.summary)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: counters and action-age percentiles."""
        ages = np.asarray(self.action_age_ms) if self.action_age_ms else None
        data = asdict(self)
        for name in ("action_age_ms", "staleness_steps", "latency_ms", "applied", "resumed_at", "control"):
            data.pop(name)
        data["action_age_ms_p50"] = float(np.percentile(ages, 50)) if ages is not None else None
        data["action_age_ms_p99"] = float(np.percentile(ages, 99)) if ages is not None else None
        return data


class RealTime:
    """Wall-clock pace: step ``t`` starts ``t * control_dt`` after the first; an overrun slips the
    schedule. ``ttl_s``: never take over an action older than this; ``deadline_s`` (default: the TTL
    rule) and ``fallback``: the deadline contract (:class:`~auras_client.runtime.Fallback`; default: the
    rest command at once)."""

    record_rows = False  # the rows applied are not kept (wall-clock timing makes them unrepeatable)

    def __init__(self, ttl_s: float = 0.25, deadline_s: float | None = None, fallback: Fallback | None = None) -> None:
        self.ttl_s = float(ttl_s)
        self.deadline_s, self.fallback = deadline_s, fallback
        self._start = 0.0

    def begin(self) -> None:
        self._start = time.perf_counter()

    def may_send(self) -> bool:
        return True

    def sent(self, answered_before: int, t: int) -> None:
        pass

    def arrived(self, link: RobotLink, t: int) -> LinkAction | None:
        return link.latest()

    def wait_slot(self, t: int, dt: float, episode: RobotEpisode) -> None:
        """Wait for the slot of step ``t``; count an overrun."""
        late = time.perf_counter() - (self._start + t * dt)
        if late > 0:
            episode.overruns += 1
            episode.late_ms_max = max(episode.late_ms_max, late * 1e3)
            self._start += late  # the schedule slips; never run fast to catch up
        else:
            time.sleep(-late)


class Lockstep:
    """Deterministic robot time: one observation in flight; its action lands ``delay_steps`` control
    steps after it was sent, the loop waiting (up to ``timeout_s`` of wall time) for the agent. Ages
    are counted in control steps (no wall clock), so nothing expires. ``record_rows``: keep every
    row applied (RobotEpisode.applied). It needs a link that loses nothing (in process, or loopback):
    a lost observation or action is never answered, and the wait raises TimeoutError."""

    def __init__(self, delay_steps: int = 1, timeout_s: float = 120.0, record_rows: bool = True) -> None:
        if delay_steps < 1:
            raise ValueError(f"Lockstep.delay_steps: expected >= 1 (an action lands after its step), got {delay_steps}")
        self.delay_steps, self.timeout_s, self.record_rows = int(delay_steps), float(timeout_s), record_rows
        self.ttl_s = self.deadline_s = float("inf")  # robot time stands still while it waits: no deadline
        self.fallback: Fallback | None = None
        self._due: tuple[int, int] | None = None  # (answers to wait for, control step it lands)

    def begin(self) -> None:
        self._due = None

    def may_send(self) -> bool:
        return self._due is None

    def sent(self, answered_before: int, t: int) -> None:
        """An observation went out at step ``t`` when the link had ``answered_before`` answers (read
        before sending: a fast answer may arrive before this call)."""
        self._due = (answered_before + 1, t + self.delay_steps)

    def arrived(self, link: RobotLink, t: int) -> LinkAction | None:
        if self._due is None or t < self._due[1]:
            return None
        link.wait_answers(self._due[0], self.timeout_s)
        self._due = None
        return link.latest()

    def wait_slot(self, t: int, dt: float, episode: RobotEpisode) -> None:
        pass


def run_robot_episode(
    link: RobotLink,
    env: Any,
    seed: int,
    executor: ChunkExecutor,
    *,
    camera_hz: float = 30.0,
    clock: RealTime | Lockstep | None = None,
    privileged: bool = False,
) -> RobotEpisode:
    """One episode of ``env`` (an :class:`~auras.envs.base.AurasTaskEnv`) driven through ``link`` (see
    the module doc). ``executor``: the robot side of the staleness strategy; ``privileged`` also sends
    the simulator state (the scripted expert's input). The control step itself is the robot client's
    :class:`~auras_client.runtime.RobotRuntime`, as on any robot that runs ``auras_client``."""
    clock = clock if clock is not None else RealTime()
    link.reset()
    env.reset(seed=seed)
    dt = env.control_dt
    runtime = RobotRuntime(executor, dt, camera_every=max(1, round(1.0 / (camera_hz * dt))), ttl_s=clock.ttl_s,
                           deadline_s=clock.deadline_s, fallback=clock.fallback, clock=time.monotonic)
    episode = RobotEpisode(seed=seed, applied=[] if clock.record_rows else None)
    clock.begin()
    for t in range(env.horizon):
        action = clock.arrived(link, t)
        if action is not None:
            runtime.offer(t, action.chunk, action.request_id, action.context_id, action.age_s(), action.latency_ms)
        if runtime.wants_observation(t) and clock.may_send():
            obs = env.observe()
            state, extras = runtime.prepare(t, obs["state"])
            if privileged:
                extras["privileged_state"] = env.privileged_state()
            answered = link.answers()
            sent = link.send(t, obs["image"], state, extras)
            if sent is not None:
                runtime.sent(sent, t)
                episode.frames_published += 1
                clock.sent(answered, t)
        values = runtime.row(t)
        if episode.applied is not None:
            episode.applied.append(np.array(values, np.float32))
        _, terminated, truncated, info = env.advance(values)
        episode.steps = t + 1
        if info["success"] and not episode.success:
            episode.success, episode.steps_to_success = True, t + 1
        if terminated or truncated:
            break
        clock.wait_slot(t + 1, dt, episode)
    episode.control, stats = runtime.summary(), runtime.stats
    episode.actions_applied, episode.expired = stats.actions_applied, stats.expired
    episode.idle_steps = stats.idle_steps
    episode.deadline_misses, episode.longest_gap_s = stats.deadline_misses, stats.longest_gap_s
    episode.fallback_s = episode.control["fallback_s"]
    episode.action_age_ms, episode.staleness_steps = stats.action_age_ms, stats.staleness_steps
    episode.latency_ms, episode.resumed_at = stats.latency_ms, stats.resumed_at
    return episode


class AgentLink:
    """An :class:`~auras.agent.AurasAgent` in this process, behind its ActionStream (the newest
    observation waits in a one-slot mailbox while the agent computes, as on the server). An
    observation's id (its ``step_id``) is its control step; ``camera`` names the image."""

    def __init__(self, agent: Any, instruction: str, camera: str = "front") -> None:
        self.agent, self.instruction, self.camera = agent, instruction, camera
        self._cond = threading.Condition()
        self._stamps: dict[int, float] = {}  # id -> capture time (monotonic)
        self._latest: LinkAction | None = None
        self._answers = 0
        self._episode = 0  # actions of an older episode's stream (one that outlived its close) are ignored
        self._stream: Any = None

    def reset(self) -> None:
        """A new episode: the old stream's error (if any) is raised, then a new stream starts."""
        self._raise_failure()
        self._close_stream()
        self.agent.reset()
        with self._cond:
            self._episode += 1
            self._latest, self._answers = None, 0
            self._stamps.clear()
        episode = self._episode
        self._stream = self.agent.stream(on_action=lambda action: self._on_action(action, episode))

    def send(self, t: int, image: np.ndarray, state: np.ndarray, extras: Mapping[str, np.ndarray]) -> int | None:
        self._raise_failure()
        with self._cond:
            self._stamps[t] = time.monotonic()
        obs = Observation(images={self.camera: image}, state=state, instruction=self.instruction, step_id=t,
                          capture_time=self._stamps[t], extras=dict(extras))
        self._stream.submit(obs)
        return t

    def _on_action(self, action: Action, episode: int) -> None:
        context = action.context_step_id if action.context_step_id is not None else action.step_id
        with self._cond:
            if episode != self._episode:
                return
            received = LinkAction(np.asarray(action.values, np.float32).reshape(-1, action.values.shape[-1]),
                                  int(action.step_id), int(context), self._stamps.get(context, action.capture_time),
                                  action.timings.latency_ms, time.monotonic)
            if self._latest is None or received.order > self._latest.order:
                self._latest = received
            self._answers += 1
            self._cond.notify_all()

    def latest(self) -> LinkAction | None:
        self._raise_failure()
        with self._cond:
            return self._latest

    def answers(self) -> int:
        with self._cond:
            return self._answers

    def wait_answers(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._answers < count:
                self._raise_failure()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the agent answered {self._answers} observations, expected {count}")
                self._cond.wait(min(left, 0.5))

    def _raise_failure(self) -> None:
        if self._stream is not None and self._stream.error is not None:
            raise self._stream.error

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._close_stream()

    def __enter__(self) -> AgentLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
