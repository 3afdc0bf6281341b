"""The robot's control step (auras_client.runtime) on a fake clock: the deadline contract by values (hold,
decay, stop), the guide it sends during a fallback, and what it does with repeated, reordered and expired
actions; and the client's control-loop face (auras_client.control) over a scripted client."""

from __future__ import annotations

import time

import numpy as np
import pytest

from auras.agent import AurasAgent
from auras.bridge.server import BridgeServer
from auras.config import load_config
from auras.policies.base import Policy
from auras_client.client import RobotClient
from auras_client.control import RobotControl
from auras_client.runtime import Fallback, RobotRuntime
from auras_client.staleness import GUIDE_ACTIONS, GUIDE_WEIGHTS, ChunkExecutor, soft_mask
from tests.fakes import FakeGeneration, FakePerception
from tests.ports import free_service_port

H, A, DT, DEADLINE = 4, 2, 0.125, 0.25  # binary fractions: step times add up exactly


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chunk(first: float) -> np.ndarray:
    """Rows first, first + 1, ... (each row the same value in every dimension)."""
    return np.repeat((first + np.arange(H, dtype=np.float32))[:, None], A, axis=1)


def run(runtime: RobotRuntime, clock: FakeClock, steps: range, arrivals: dict[int, tuple[float, int]]) -> list:
    """Steps of DT seconds; ``arrivals``: step -> (first row value, observation id sent at step 0 of its
    own); returns the first dimension of each row applied."""
    rows = []
    for t in steps:
        clock.now = t * DT
        if t in arrivals:
            first, obs_id = arrivals[t]
            runtime.offer(t, chunk(first), obs_id, obs_id, age_s=0.0)
        rows.append(float(runtime.row(t)[0]))
    return rows


def make(fallback: Fallback, strategy: str = "none") -> tuple[RobotRuntime, FakeClock]:
    clock = FakeClock()
    runtime = RobotRuntime(ChunkExecutor(strategy, 1, (H, A)), DT, ttl_s=1.0, deadline_s=DEADLINE, fallback=fallback,
                           clock=clock)
    for obs_id, t in ((0, 0), (1, 8), (2, 14)):
        runtime.sent(obs_id, t)
    return runtime, clock


def test_before_the_first_action_the_robot_rests_and_misses_only_once_its_first_observation_is_overdue():
    clock = FakeClock()
    quiet = RobotRuntime(ChunkExecutor("none", 1, (H, A)), DT, ttl_s=1.0, deadline_s=DEADLINE, clock=clock)
    assert run(quiet, clock, range(5), {}) == [0.0] * 5  # nothing sent yet: nothing is late
    assert quiet.stats.idle_steps == 5 and quiet.stats.deadline_misses == 0
    runtime, clock = make(Fallback("hold"))  # observations went out; no answer yet: a filling pipeline, no miss
    assert run(runtime, clock, range(4), {}) == [0.0] * 4 and runtime.stats.deadline_misses == 0
    assert not runtime.offer(4, chunk(1.0), 0, 0, age_s=2.0)  # an answer, older than the 1 s TTL: the miss
    assert run(runtime, clock, range(4, 6), {}) == [0.0] * 2
    stats = runtime.stats
    assert stats.idle_steps == 6 and stats.deadline_misses == 1 and stats.fallback_steps == 2


def test_without_a_deadline_the_ttl_rule_rests_once_the_action_is_older_than_ttl_plus_its_rows():
    """Captured 0.25 s before it landed at step 0 (time 0) with a 0.5 s TTL and 4 rows of 0.125 s: stale
    from 0.25 + 0.5 s after its capture, i.e. time 0.75 (step 6); steps 4-5 hold its last row."""
    clock = FakeClock()
    runtime = RobotRuntime(ChunkExecutor("none", 1, (H, A)), DT, ttl_s=0.5, clock=clock)
    runtime.sent(0, 0)
    rows = []
    for t in range(8):
        clock.now = t * DT
        if t == 0:
            runtime.offer(0, chunk(1.0), 0, 0, age_s=0.25)
        rows.append(float(runtime.row(t)[0]))
    assert rows == [1, 2, 3, 4, 4, 4, 0, 0] and runtime.stats.deadline_misses == 1


def test_a_row_handed_out_is_the_callers_to_change():
    runtime, _ = make(Fallback("hold"))
    row = runtime.row(0)
    row += 5.0  # a robot scaling its command in place
    assert float(runtime.row(1)[0]) == 0.0 and not runtime.rest.any()
    runtime.offer(2, chunk(1.0), 0, 0, age_s=0.0)
    runtime.row(2)[:] = -1.0
    assert runtime.executor.chunk[0, 0] == 1.0


def test_hold_keeps_the_last_row_past_the_deadline_and_a_fresh_chunk_ends_the_miss():
    """Rows 1-4 run at steps 0-3; steps 4-5 hold row 4 within the 0.25 s deadline; from step 6 the fallback
    (hold: row 4 again) is a miss; the chunk landing at step 8 runs from its first row."""
    runtime, clock = make(Fallback("hold"))
    rows = run(runtime, clock, range(10), {0: (1.0, 0), 8: (11.0, 1)})
    assert rows == [1, 2, 3, 4, 4, 4, 4, 4, 11, 12]
    stats = runtime.stats
    assert stats.deadline_misses == 1 and stats.held_steps == 2 and stats.fallback_steps == 2
    assert stats.fallback_s == pytest.approx(0.25) and stats.longest_gap_s == pytest.approx(0.5)
    assert stats.resumed_at == [pytest.approx(1.0)]


def test_decay_goes_from_the_last_row_to_rest_over_its_time():
    runtime, clock = make(Fallback("decay", decay_s=0.25, rest=(-2.0, -2.0)))
    rows = run(runtime, clock, range(11), {0: (1.0, 0), 10: (11.0, 1)})
    # the fallback starts at step 6 (0.75 s): 4 -> -2 over 0.25 s, i.e. 4, 1, -2, then rest until the fresh chunk
    assert rows == pytest.approx([1, 2, 3, 4, 4, 4, 4, 1, -2, -2, 11])
    assert runtime.stats.deadline_misses == 1 and runtime.stats.idle_steps == 4


def test_the_fallback_runs_from_when_the_deadline_passed_not_from_the_next_step():
    """A 0.2 s deadline with 0.125 s steps: the gap begins at 0.5 s, the deadline passes at 0.7 s, the first step
    after it is at 0.75 s. The decay over 0.25 s is timed from 0.7 s at every step (0.2 and 0.7 of the way at 0.75
    and 0.875 s); timing it from the first fallback step would give 0.2, then 0.5."""
    clock = FakeClock()
    runtime = RobotRuntime(ChunkExecutor("none", 1, (H, A)), DT, ttl_s=1.0, deadline_s=0.2,
                           fallback=Fallback("decay", decay_s=0.25, rest=(-6.0, -6.0)), clock=clock)
    runtime.sent(0, 0)
    rows = run(runtime, clock, range(8), {0: (1.0, 0)})  # rows 1-4 at steps 0-3; last row 4
    assert rows[4:] == pytest.approx([4, 4, 4 - 10 * 0.2, 4 - 10 * 0.7])
    assert runtime.summary()["fallback_s"] == pytest.approx(0.875 - 0.7)


def test_stop_rests_at_once_and_calls_the_robot_once_per_miss():
    calls = []
    runtime, clock = make(Fallback("stop", on_stop=lambda stats: calls.append(stats.deadline_misses)))
    rows = run(runtime, clock, range(18), {0: (1.0, 0), 8: (11.0, 1)})
    assert rows[:10] == [1, 2, 3, 4, 4, 4, 0, 0, 11, 12]
    assert rows[12:] == [14, 14, 0, 0, 0, 0]  # the second chunk ran out at step 12: a second miss at step 14
    assert calls == [1, 2] and runtime.stats.deadline_misses == 2


def test_a_zero_deadline_falls_back_at_the_first_step_without_a_fresh_row():
    clock = FakeClock()
    runtime = RobotRuntime(ChunkExecutor("none", 1, (H, A)), DT, ttl_s=1.0, deadline_s=0.0, clock=clock)
    runtime.sent(0, 0)
    assert run(runtime, clock, range(6), {0: (1.0, 0)}) == [1, 2, 3, 4, 0, 0]
    assert runtime.stats.deadline_misses == 1 and runtime.stats.held_steps == 0


def test_the_rtc_guide_is_what_the_robot_will_apply_fallback_included():
    """During a gap the guide rows are the held row and then the decay the robot will really run, so the
    next chunk joins what ran; the chunk's own last row repeated (the executor alone) would be wrong."""
    runtime, clock = make(Fallback("decay", decay_s=0.25), strategy="rtc")
    run(runtime, clock, range(5), {0: (1.0, 0)})  # rows 1-4 ran at steps 0-3; step 4 held row 4 (the gap began)
    clock.now = 5 * DT
    _, extras = runtime.prepare(5, np.zeros(4, np.float32))
    # step 5 held (one step into the gap), 6: the fallback starts at 4, 7: half way to rest, 8: rest
    assert extras[GUIDE_ACTIONS][:, 0] == pytest.approx([4, 4, 2, 0])
    assert extras[GUIDE_WEIGHTS] == pytest.approx(soft_mask(H, runtime.executor.delay_steps, 1))
    executor_alone = runtime.executor.pending(5, H)[:, 0]
    assert list(executor_alone) == [4, 4, 4, 4]


def test_before_the_first_action_the_rtc_guide_constrains_nothing():
    runtime, _ = make(Fallback("decay", rest=(3.0, 3.0)), strategy="rtc")
    _, extras = runtime.prepare(0, np.zeros(4, np.float32))
    assert not extras[GUIDE_WEIGHTS].any() and not extras[GUIDE_ACTIONS].any()


def test_repeated_reordered_and_expired_actions_never_take_over():
    runtime, _ = make(Fallback("hold"))
    runtime.sent(5, 5)
    assert runtime.offer(0, chunk(1.0), 0, 0, age_s=0.0)
    assert not runtime.offer(1, chunk(1.0), 0, 0, age_s=0.0)  # the same action again (a duplicate)
    assert runtime.offer(2, chunk(21.0), 5, 5, age_s=0.0)
    assert not runtime.offer(3, chunk(11.0), 1, 1, age_s=0.0)  # an older one, late (reordered)
    assert not runtime.offer(4, chunk(31.0), 6, 6, age_s=2.0)  # older than the TTL
    assert not runtime.offer(4, chunk(31.0), 6, 6, age_s=2.0)
    stats = runtime.stats
    assert stats.actions_applied == 2 and stats.not_newer == 1 and stats.expired == 1
    assert float(runtime.row(4)[0]) == 23.0  # the chunk that took over at step 2 runs its row for step 4


def test_fallback_settings_are_checked():
    with pytest.raises(ValueError, match="expected one of hold, decay, stop, got 'brake'"):
        Fallback("brake")
    with pytest.raises(ValueError, match="decay_s"):
        Fallback("decay", decay_s=-1)
    with pytest.raises(ValueError, match=r"fallback.rest: expected 2 values"):
        RobotRuntime(ChunkExecutor("none", 1, (H, A)), DT, fallback=Fallback(rest=(0.0, 0.0, 0.0)))


# -- the client's control-loop face ---------------------------------------------------------------------
class ScriptedClient:
    """What RobotControl uses of a RobotClient: a hello reply, published observations, the newest action."""

    ttl_s = 1.0

    def __init__(self, strategy: str = "rtc") -> None:
        self.server_info = {"action_shape": [H, A], "execute_steps": 1, "staleness_strategy": strategy,
                            "staleness_settings": {}}
        self.published: list[tuple[int, dict]] = []
        self.newest = None

    def publish(self, images, state, extras=None):
        self.published.append((len(self.published), dict(extras or {})))
        return len(self.published) - 1

    def newest_action(self):
        return self.newest

    def reset(self):
        return {"ok": True}


class Arrived:
    def __init__(self, seq: int, first: float, context_seq: int | None = None) -> None:
        self.chunk, self.seq, self.header = chunk(first), seq, {"latency_ms": 5.0}
        self.context_seq = seq if context_seq is None else context_seq

    @property
    def order(self):
        return (self.context_seq, self.seq)

    def age(self):
        return 0.01


def test_the_control_face_observes_only_on_camera_ticks_and_places_rows_from_the_capture_step():
    client, clock = ScriptedClient("rtc"), FakeClock()
    control = RobotControl(client, control_hz=10, camera_hz=5, deadline_s=DEADLINE, clock=clock)
    observed = []

    def observe():
        observed.append(control.t)
        return {"front": np.zeros((2, 2, 3), np.uint8)}, np.zeros(4, np.float32)

    rows = []
    for t in range(6):
        clock.now = t * DT
        if t == 3:
            client.newest = Arrived(seq=0, first=1.0)  # answers the observation of step 0, lands at step 3
        rows.append(float(control.step(observe)[0]))
    assert observed == [0, 2, 4]  # 10 Hz control, 5 Hz camera
    assert rows == [0, 0, 0, 4, 4, 4]  # rtc is time-aligned: row 3 of a chunk captured at step 0 runs at step 3
    assert GUIDE_ACTIONS in client.published[-1][1]  # the guide goes with every rtc observation
    assert control.stats()["actions_applied"] == 1
    client.newest = Arrived(seq=0, first=1.0)  # the same action seen again is not offered twice
    control.step(observe)
    assert control.stats()["not_newer"] == 0 and control.stats()["actions_applied"] == 1
    control.reset()
    assert control.t == 0 and control.stats()["actions_applied"] == 0


def test_the_control_face_needs_an_observation_on_a_sending_tick():
    control = RobotControl(ScriptedClient("none"), control_hz=10)
    with pytest.raises(ValueError, match="give observe, or images and state"):
        control.step()


# -- live: a real server killed and started again --------------------------------------------------------
def _fake_agent() -> AurasAgent:
    """action = state + observation seq / 1000: every row traces to the observation it answers."""
    return AurasAgent(load_config(), policy=Policy("fake", FakePerception(image_size=84), FakeGeneration()))


@pytest.mark.parametrize("kind", ["hold", "decay", "stop"])
def test_a_robot_runs_its_fallback_while_the_server_is_dead_and_resumes_when_it_is_back(kind):
    """A 100 Hz robot with a 0.1 s deadline against `auras serve` (a fake policy: action = state + seq / 1000).
    The server is closed: the robot runs its fallback (by values), the server starts again on the same
    address, the client says hello by itself and the first fresh row ends the fallback."""
    address, rest = f"tcp://127.0.0.1:{free_service_port()}", (-1.0,) * 4
    stops: list[int] = []
    fallback = Fallback(kind, decay_s=0.3, rest=rest, on_stop=lambda stats: stops.append(stats.deadline_misses))
    server = BridgeServer(bind=address, agent_factory=_fake_agent).start()
    robot = RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction="x", heartbeat_s=0.1,
                        timeout_s=0.3, ttl_s=5.0, contract={"deadline_ms": 100.0, "control_hz": 100.0})
    control = robot.control(100.0, deadline_s=0.1, fallback=fallback)
    observe = lambda: ({"front": np.zeros((84, 84, 3), np.uint8)}, np.full(4, 5.0, np.float32))  # noqa: E731
    steps: list[tuple[str, np.ndarray]] = []  # (what kind of row, the row)

    def step_until(done, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < end, f"timed out; control {control.stats()}; client {dict(robot.counters)}"
            before = control.runtime.stats.fallback_steps
            row = control.step(observe)
            steps.append(("fallback" if control.runtime.stats.fallback_steps > before else "other", row))
            time.sleep(0.01)

    try:
        step_until(lambda: control.runtime.stats.actions_applied >= 3)
        last_fresh = control.runtime.stats.actions_applied
        server.close()
        steps.clear()
        step_until(lambda: control.runtime.stats.fallback_steps >= 40)  # 0.4 s into the fallback, server dead
        misses = control.runtime.stats.deadline_misses
        server = BridgeServer(bind=address, agent_factory=_fake_agent).start()
        step_until(lambda: len(control.runtime.stats.resumed_at) >= 1)
        row = control.step(observe)
        robot_view = robot.stats()["performance"]["robot_deadline"]
    finally:
        robot.close()
        server.close()
    first = next(i for i, (what, _) in enumerate(steps) if what == "fallback")
    held = steps[first - 1][1]  # the row applied before the fallback: the last chunk's, held past its end
    fallen = np.array([r for what, r in steps if what == "fallback"])
    assert np.all(held >= 5.0), held  # a row of the policy (5 + seq / 1000), not the rest command
    if kind == "hold":
        assert np.all(fallen == held)
    elif kind == "decay":  # from the held row to rest over 0.3 s: non-increasing, and at rest once it passed
        assert held[0] >= fallen[0, 0] > rest[0] and np.all(np.diff(fallen[:, 0]) <= 1e-6)  # starts at the held row
        assert np.all(fallen[-5:] == rest)
    else:
        assert np.all(fallen == rest) and stops and stops[-1] == misses  # called once per miss, at its start
    assert misses >= 1 and control.runtime.stats.actions_applied > last_fresh
    assert np.all(row >= 5.0)  # fresh rows again, from the new session
    assert robot_view is not None and robot_view["longest_gap_ms"] >= 0.0  # the new session knows the deadline


def test_after_a_restart_a_reset_and_the_heartbeat_open_one_session_between_them():
    """The receiver (heartbeat answered unknown_session) and reset() (answered the same) both find the session
    gone; one of them says hello, the other uses that session. Two hellos would leave an orphan session (an
    agent built for nobody) and send the reset to it."""
    address = f"tcp://127.0.0.1:{free_service_port()}"
    server = BridgeServer(bind=address, agent_factory=_fake_agent).start()
    robot = RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction="x", heartbeat_s=0.02,
                        timeout_s=0.5, ttl_s=5.0)
    try:
        for _ in range(3):
            server.close()
            server = BridgeServer(bind=address, agent_factory=_fake_agent).start()
            robot.reset()  # races the receiver's next heartbeat
            time.sleep(0.3)  # the receiver's heartbeats land too
            sessions = robot.stats(server=True)["sessions"]
            assert len(sessions) == 1, sessions
    finally:
        robot.close()
        server.close()
