"""auras_client.openpi.DeadlinePolicy: openpi's policy interface with the deadline contract, against a fake
inner policy (numpy; a gate holds its answers back, a switch makes it fail) and a fake robot clock. Times
are binary fractions (dt = 1/32 s) so that deadline arithmetic is exact."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from auras_client.openpi import DeadlinePolicy
from auras_client.runtime import Fallback

DT = 1 / 32  # 32 Hz
H, A = 4, 2
DEADLINE = 4 * DT


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chunk(k: int) -> np.ndarray:
    """Request k's chunk: row i is (10 k + i, -(10 k + i))."""
    rows = 10.0 * k + np.arange(H, dtype=np.float32)
    return np.stack([rows, -rows], 1)


class FakePolicy:
    """openpi's policy interface: answer k (1-based) is chunk(k); calls past ``open_calls`` wait for ``gate``;
    with ``failing`` set it raises OSError (a server gone)."""

    def __init__(self, open_calls: int = 10**9, base: int = 0) -> None:
        self.calls: list[dict] = []
        self.resets = 0
        self.open_calls, self.base = open_calls, base
        self.gate = threading.Event()
        self.failing = False

    def infer(self, obs: dict) -> dict:
        self.calls.append(obs)
        if len(self.calls) > self.open_calls:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.failing:
            raise OSError("server gone")
        if "__ctrl__" in obs:
            return {"ok": True}
        return {"actions": chunk(self.base + len(self.calls)), "server_timing": {"infer_ms": 12.5}}

    def reset(self) -> None:
        self.resets += 1


def obs(i: int) -> dict:
    return {"observation/state": np.full(3, float(i), np.float32), "prompt": "push", "i": i}


def make(policy, clock: Clock, **options) -> DeadlinePolicy:
    options.setdefault("fallback", Fallback("hold", rest=(0.0,) * A))
    options.setdefault("deadline_s", DEADLINE)
    return DeadlinePolicy(policy, 1 / DT, action_dim=A, chunk_horizon=H, clock=clock, **options)


def tick(adapter: DeadlinePolicy, clock: Clock, i: int | None = None) -> np.ndarray:
    """One control tick at clock time t * DT, timed: infer never waits for the inner policy."""
    clock.now = adapter.t * DT
    began = time.monotonic()
    row = adapter.infer(obs(adapter.t if i is None else i))["actions"]
    assert time.monotonic() - began < 0.1, "infer waited for the inner policy"
    return row


def until(condition, timeout_s: float = 5.0) -> None:
    """Wait (real time) until the worker got as far as ``condition`` says."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the worker never got there"
        time.sleep(0.001)


@pytest.fixture
def closing():
    adapters: list[DeadlinePolicy] = []
    yield adapters.append
    for adapter in adapters:
        adapter.close()


def test_rows_of_a_chunk_run_in_order_while_the_next_request_is_in_flight(closing):
    """Fails if rows are skipped, repeated or off by one, if infer blocks on a request in flight, if a second
    request goes out while one is in flight, or if the observation is not copied when it goes out."""
    inner, clock = FakePolicy(open_calls=1), Clock()
    adapter = make(inner, clock, deadline_s=1.0)  # no chunk expires here
    closing(adapter)
    first = obs(0)
    assert np.array_equal(adapter.infer(first)["actions"], np.zeros(A))  # before any chunk: the rest command
    first["observation/state"][:] = 99.0  # the robot reuses its buffer: what went out is unchanged
    assert adapter.wait_idle(5)
    rows = [tick(adapter, clock) for _ in range(H)]  # request 2 (obs of t=1) is held back by the gate
    until(lambda: len(inner.calls) == 2)
    assert np.array_equal(np.stack(rows), chunk(1))
    assert np.array_equal(tick(adapter, clock), chunk(1)[-1])  # past its end: the last row, held
    assert [c["i"] for c in inner.calls] == [0, 1] and np.array_equal(inner.calls[0]["observation/state"], [0, 0, 0])
    inner.gate.set()
    assert adapter.wait_idle(5)
    assert np.array_equal(tick(adapter, clock), chunk(2)[0])  # the next chunk takes over from its first row
    assert adapter.wait_idle(5)  # request 3, sent at t = 6, answered
    stats = adapter.stats()
    assert stats["actions_applied"] == 2 and stats["deadline_misses"] == 0 and stats["held_steps"] == 1
    assert stats["requests"] == 3 and stats["responses"] == 3 and stats["errors"] == 0 and stats["connected"]


@pytest.mark.parametrize("kind", ["hold", "decay", "stop"])
def test_a_slow_policy_past_the_deadline_gets_the_fallback_rows_then_a_fresh_chunk_ends_it(closing, kind):
    """Fails if the fallback starts early or late, applies other rows than hold / decay / stop prescribe,
    calls on_stop other than once, blocks the robot, or if a fresh chunk does not end it (or an expired
    one does)."""
    inner, clock = FakePolicy(open_calls=1), Clock()
    stops = []
    rest = (0.5, -0.5)
    fallback = Fallback(kind, decay_s=4 * DT, rest=rest, on_stop=stops.append)
    adapter = make(inner, clock, fallback=fallback)
    closing(adapter)
    tick(adapter, clock)
    assert adapter.wait_idle(5)
    rows = np.stack([tick(adapter, clock) for _ in range(14)])  # t = 1 .. 14; the inner policy stalls
    last, rest_row = chunk(1)[-1], np.asarray(rest, np.float32)
    assert np.array_equal(rows[:4], chunk(1))  # t = 1..4 fresh
    assert np.array_equal(rows[4:8], [last] * 4)  # t = 5..8: held, 0..3 DT into the gap (deadline 4 DT)
    after = rows[8:]  # t = 9..14: the fallback, 0..5 DT into it
    if kind == "hold":
        expected = [last] * 6
    elif kind == "stop":
        expected = [rest_row] * 6
    else:  # decay over 4 DT from the last row to rest
        expected = [(1 - w) * last + w * rest_row for w in (0, 0.25, 0.5, 0.75, 1, 1)]
    assert np.allclose(after, expected, atol=1e-6), after
    assert len(stops) == (1 if kind == "stop" else 0)
    stats = adapter.stats()
    assert stats["deadline_misses"] == 1 and stats["fallback_steps"] == 6 and stats["requests"] == 2
    inner.gate.set()  # the stalled answer lands 14 DT after its observation: older than the TTL, not taken
    assert adapter.wait_idle(5)
    assert np.allclose(tick(adapter, clock), expected[-1])  # t = 15: expired; request 3 goes out
    assert adapter.wait_idle(5)
    assert np.array_equal(tick(adapter, clock), chunk(3)[0])  # t = 16: fresh, the fallback ends
    stats = adapter.stats()
    assert stats["expired"] == 1 and stats["deadline_misses"] == 1 and stats["fallback_s"] == pytest.approx(7 * DT)
    assert stats["longest_gap_s"] == pytest.approx(11 * DT)


def test_a_policy_from_a_factory_reconnects_after_the_server_is_lost_and_the_robot_resumes(closing):
    """Fails if an error escapes to the robot, if the worker does not reconnect (or replaces the policy
    without one failing), if requests queue up while disconnected and go out stale, or if the first fresh
    chunk from the new connection does not end the fallback."""
    made: list[FakePolicy] = []
    allow = threading.Event()
    refused = []

    def factory() -> FakePolicy:
        if made and not allow.is_set():
            refused.append(time.monotonic())
            raise ConnectionRefusedError(111, "Connection refused")
        made.append(FakePolicy(base=100 * len(made)))
        return made[-1]

    clock = Clock()
    adapter = make(factory, clock, backoff_s=(0.01, 0.04))
    closing(adapter)
    assert adapter.wait_connected(5)  # connects in the background
    tick(adapter, clock)
    assert adapter.wait_idle(5)
    made[0].failing = True  # the server dies: request 2 fails
    assert np.array_equal(tick(adapter, clock), chunk(1)[0])
    assert adapter.wait_idle(5)
    deadline = time.monotonic() + 5
    while len(refused) < 3:  # the worker retries with backoff while the robot runs on
        assert time.monotonic() < deadline
        time.sleep(0.01)
    rows = [tick(adapter, clock) for _ in range(11)]  # t = 2 .. 12
    assert np.array_equal(rows[-1], chunk(1)[-1])  # hold: the last row, in the fallback
    stats = adapter.stats()
    assert stats["deadline_misses"] == 1 and not stats["connected"] and stats["requests"] == 2
    assert stats["errors"] == 1 and stats["connect_errors"] >= 2 and "ConnectionRefusedError" in stats["last_error"]
    gaps = np.diff(refused)
    assert gaps[0] >= 0.009 and gaps[1] >= 0.019 and gaps.max() < 0.5  # backoff: 0.01 s doubling to 0.04 s
    allow.set()
    assert adapter.wait_connected(5) and len(made) == 2
    tick(adapter, clock)  # t = 13: the first observation after the reconnection goes out
    assert adapter.wait_idle(5)
    assert np.array_equal(tick(adapter, clock), chunk(101)[0])  # t = 14: fresh from the new connection
    assert made[1].calls[0]["i"] == 13
    stats = adapter.stats()
    assert stats["reconnects"] == 1 and stats["connected"] and stats["actions_applied"] == 2
    assert stats["deadline_misses"] == 1 and stats["fallback_steps"] == 14 - 9  # t = 9 .. 13


def test_a_policy_given_as_such_is_retried_after_errors_never_replaced(closing):
    """Fails if errors escape, if a failing policy is hammered every tick, or if it is not retried."""
    inner, clock = FakePolicy(), Clock()
    adapter = make(inner, clock, backoff_s=(0.05, 0.05))
    closing(adapter)
    inner.failing = True
    began = time.monotonic()
    for _ in range(20):
        tick(adapter, clock)
        time.sleep(0.005)
    assert adapter.wait_idle(5)  # the last request failed too, and its pause ran out
    assert 2 <= len(inner.calls) <= 2 + (time.monotonic() - began) / 0.05  # one request per pause at most
    inner.failing = False
    assert adapter.wait_idle(5)
    tick(adapter, clock)
    assert adapter.wait_idle(5)
    answered = len(inner.calls)  # the last call, answered
    assert np.array_equal(tick(adapter, clock), chunk(answered)[0])  # applied
    assert adapter.wait_idle(5)  # the next request, answered too
    stats = adapter.stats()
    assert stats["actions_applied"] == 1 and stats["errors"] == len(inner.calls) - 2 and stats["reconnects"] == 0


def test_reset_starts_a_new_episode_and_drops_the_answer_in_flight(closing):
    """Fails if reset keeps the old chunk or counters, applies an answer to an observation of the last
    episode, blocks on the request in flight, or skips the inner reset and the reset message."""
    inner, clock = FakePolicy(open_calls=1), Clock()
    adapter = make(inner, clock, reset_message={"__ctrl__": "episode_start"})
    closing(adapter)
    tick(adapter, clock)
    assert adapter.wait_idle(5)
    assert np.array_equal(tick(adapter, clock), chunk(1)[0])
    until(lambda: len(inner.calls) == 2)  # request 2 is in flight, held back
    began = time.monotonic()
    adapter.reset()
    assert time.monotonic() - began < 0.1
    assert adapter.t == 0 and adapter.stats()["steps"] == 0
    inner.gate.set()
    assert adapter.wait_idle(5)  # request 2 lands, then the worker resets the inner policy
    assert inner.resets == 1 and inner.calls[-1] == {"__ctrl__": "episode_start"}
    assert np.array_equal(tick(adapter, clock), np.zeros(A))  # the rest command: chunk 2 was discarded
    assert adapter.wait_idle(5)
    assert np.array_equal(tick(adapter, clock), chunk(4)[0])  # the new episode's first answer
    stats = adapter.stats()
    assert stats["discarded"] == 1 and stats["idle_steps"] == 1 and stats["actions_applied"] == 1
    assert stats["deadline_misses"] == 0


def test_chunk_blend_with_threshold_0_asks_only_when_the_chunk_ran_out(closing):
    """As openpi's ActionChunkBroker: one request per chunk, sent at the step past its last row (rows stay
    time-aligned to the step the observation was taken at). Fails if it asks every tick or never again."""
    inner, clock = FakePolicy(), Clock()
    adapter = make(inner, clock, strategy="chunk_blend", queue_threshold=0.0)
    closing(adapter)
    rows = []
    for _ in range(9):
        rows.append(tick(adapter, clock))
        assert adapter.wait_idle(5)
    assert [c["i"] for c in inner.calls] == [0, 4, 8]
    assert np.array_equal(rows[1:4], chunk(1)[1:])  # landed at t=1 for the observation of t=0
    assert np.array_equal(rows[4], chunk(1)[-1])  # t=4: asked, holding the last row meanwhile
    assert np.array_equal(rows[5:8], chunk(2)[1:])


def test_only_chunk_horizon_rows_of_a_longer_chunk_run(closing):
    """As openpi's action_horizon: fails if rows past ``chunk_horizon`` are applied."""
    class Long(FakePolicy):
        def infer(self, obs):
            reply = super().infer(obs)
            reply["actions"] = np.concatenate([reply["actions"], np.full((3, A), 7.0, np.float32)])
            return reply

    inner, clock = Long(open_calls=1), Clock()
    adapter = make(inner, clock)
    closing(adapter)
    tick(adapter, clock)
    assert adapter.wait_idle(5)
    rows = [tick(adapter, clock) for _ in range(H + 2)]
    inner.gate.set()
    assert np.array_equal(np.stack(rows), np.concatenate([chunk(1), [chunk(1)[-1]] * 2]))


def test_replies_without_actions_of_the_right_shape_are_counted_not_applied(closing):
    class Bad(FakePolicy):
        def infer(self, obs):
            super().infer(obs)
            return {"actions": np.zeros((H, A + 1), np.float32)}

    clock = Clock()
    adapter = make(Bad(), clock)
    closing(adapter)
    tick(adapter, clock)
    assert adapter.wait_idle(5)
    assert np.array_equal(tick(adapter, clock), np.zeros(A))
    stats = adapter.stats()
    assert stats["bad_replies"] >= 1 and stats["actions_applied"] == 0 and stats["connected"]
    assert "expected actions of shape (H, 2), got (4, 3)" in stats["last_error"]


def test_only_strategies_that_openpi_can_carry(closing):
    with pytest.raises(ValueError, match="expected none or chunk_blend"):
        DeadlinePolicy(FakePolicy(), 50, action_dim=A, chunk_horizon=H, strategy="rtc",
                       fallback=Fallback("hold", rest=(0.0,) * A))
    with pytest.raises(TypeError, match="expected an object with infer"):
        DeadlinePolicy(42, 50, action_dim=A, chunk_horizon=H, fallback=Fallback("hold", rest=(0.0,) * A))
    with pytest.raises(ValueError, match="needs the robot's rest command"):  # zeros are no rest for absolute control
        DeadlinePolicy(FakePolicy(), 50, action_dim=A, chunk_horizon=H, fallback=Fallback("hold"))


def test_the_adapter_imports_numpy_alone():
    code = ("import sys, auras_client.openpi; "
            "print(sorted(m for m in ('openpi_client', 'websockets', 'zmq', 'msgpack', 'auras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
