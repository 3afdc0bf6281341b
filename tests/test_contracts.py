"""Robot contracts on a server whose robots share one frame engine: parsing, admission by the engine's
measured frame cost, and each session's performance in its stats."""

from __future__ import annotations

import time

import numpy as np
import pytest

from auras.bridge.contracts import Contract, Performance, admit, parse_contract
from auras.bridge.server import BridgeServer
from auras.config import load_config
from auras.pipeline.engine import FrameEngine
from auras.pipeline.frames import FrameExecutor, FrameShape
from auras_client.client import RobotClient, ServiceError
from auras_client.protocol import ProtocolError
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation
from tests.ports import free_service_port


def test_a_contract_parses_and_a_malformed_one_is_refused_saying_what_was_expected():
    assert parse_contract({}) is None
    assert parse_contract({"contract": {"rate_hz": 10, "staleness_ms": 150.5}}) == Contract(10.0, 150.5, False)
    for bad, field in (({"rate_hz": -1}, "rate_hz"), ({"rate_hz": "fast"}, "rate_hz"),
                       ({"staleness_ms": float("nan")}, "staleness_ms"), ({"accept_lower_rate": 1}, "accept_lower"),
                       ({"speed": 3}, "expected")):
        with pytest.raises(ProtocolError, match=field) as info:
            parse_contract({"contract": bad})
        assert info.value.code == "bad_request"


def test_admission_refuses_what_would_break_a_promise_and_grants_the_rate_left_when_allowed():
    assert admit(None, [Contract(1000.0)], Contract(1000.0), 3) is None  # nothing measured: admitted
    assert admit(20.0, [Contract(10.0)], Contract(15.0), 1) is None  # every contract met
    with pytest.raises(ProtocolError, match=r"12\.0 Hz a robot already served") as info:
        admit(11.0, [Contract(12.0)], None, 2)  # would slow a robot below its promise
    assert info.value.code == "over_capacity"
    with pytest.raises(ProtocolError, match="capacity left per robot") as info:
        admit(11.0, [], Contract(20.0), 2)
    assert "11.0 Hz" in str(info.value)
    assert admit(11.0, [], Contract(20.0, accept_lower_rate=True), 2) == 11.0


def test_performance_reports_rate_percentiles_and_misses_of_the_staleness_bound():
    performance = Performance(Contract(rate_hz=10.0, staleness_ms=50.0))
    for i in range(20):
        performance.record(latency_ms=10.0 + i, staleness_ms=40.0 if i % 4 else 80.0)
        time.sleep(0.002)
    stats = performance.stats()
    assert stats["actions"] == 20 and stats["deadline_misses"] == 5 and stats["rate_hz"] > 0
    assert stats["latency_ms"]["p50"] == pytest.approx(19.5) and stats["staleness_ms"]["p99"] > 50.0
    assert stats["contract"] == {"rate_hz": 10.0, "staleness_ms": 50.0, "accept_lower_rate": False,
                                 "deadline_ms": None, "control_hz": None}
    assert stats["robot_deadline"] is None  # no deadline declared


def test_the_server_counts_a_robots_deadline_misses_from_the_cover_of_the_chunks_it_sent():
    """16 rows at 80 Hz cover 200 ms from the newest input's arrival; a robot with a 100 ms deadline misses
    when the next action goes out more than 300 ms after that arrival. Fails if the cover ignores the
    staleness (the input's age when the action left) or if a gap is counted more than once."""
    assert parse_contract({"contract": {"deadline_ms": 100, "control_hz": 80}}) == Contract(deadline_ms=100.0,
                                                                                            control_hz=80.0)
    with pytest.raises(ProtocolError, match="come together"):
        parse_contract({"contract": {"deadline_ms": 100}})
    performance = Performance(Contract(deadline_ms=100.0, control_hz=80.0), chunk_rows=16)
    performance.record(10.0, staleness_ms=50.0, now=100.0)  # input arrived at 99.95: covered until 100.15
    performance.record(10.0, staleness_ms=50.0, now=100.24)  # 90 ms after the cover ended: no miss
    performance.record(10.0, staleness_ms=50.0, now=100.60)  # cover ended 100.39: 210 ms later, a miss
    performance.record(10.0, staleness_ms=400.0, now=100.70)  # an old input does not shorten the cover (100.75)
    robot = performance.stats(now=100.76)["robot_deadline"]
    assert robot["misses"] == 1 and robot["longest_gap_ms"] == pytest.approx(210.0)
    robot = performance.stats(now=100.90)["robot_deadline"]  # a gap still open counts once it passed the deadline
    assert robot["misses"] == 2 and robot["longest_gap_ms"] == pytest.approx(210.0)
    performance.episode_start()  # a reset: the pause until the next episode's first action is no gap
    performance.record(10.0, staleness_ms=50.0, now=102.0)
    assert performance.stats(now=102.0)["robot_deadline"]["misses"] == 1


def test_the_engine_predicts_the_per_session_rate_from_the_frames_it_ran():
    engine = FrameEngine(__import__("auras.policies.base", fromlist=["Policy"]).Policy(
        "fake-dp", FakeStagedPerception(2), FakeDiffusion(12, delay_s=0.02)))
    assert engine.predicted_rate_hz(1) is None  # nothing ran yet
    executor = FrameExecutor(engine, FrameShape(1, 2))
    for i in range(6):
        executor.step(fake_observation(i))
    one = engine.predicted_rate_hz(1)
    assert 1.0 < one < 1 / 0.02  # a frame costs at least the injected 20 ms
    assert engine.predicted_rate_hz(4) == pytest.approx(one / 4)  # one size measured: no better than linear
    assert engine.admission_rate_hz() == pytest.approx(one / 2)
    executor.close()
    engine.close()


def _robot(server: BridgeServer, name: str, contract: dict | None = None) -> RobotClient:
    return RobotClient(server.bind, cameras={"front": (84, 84)}, state_dim=4, instruction="press the button",
                       robot=name, ttl_s=30.0, timeout_s=30.0, contract=contract)


def test_a_served_robot_whose_contract_cannot_be_met_is_refused_or_admitted_at_the_rate_left():
    config = load_config("pipeline-tiny-dp")
    with BridgeServer(config, f"tcp://127.0.0.1:{free_service_port()}").start() as server:
        first = _robot(server, "first", {"rate_hz": 5.0, "staleness_ms": 10_000.0})
        try:
            image = np.zeros((84, 84, 3), np.uint8)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and first.latest_action() is None:  # the engine ran frames
                first.publish({"front": image}, np.array([0.0, 0.6, 0.2, 1.0], np.float32))
                time.sleep(0.03)
            assert first.latest_action() is not None
            with pytest.raises(ServiceError, match=r"over_capacity.*capacity left per robot"):
                _robot(server, "greedy", {"rate_hz": 100_000.0})
            lower = _robot(server, "modest", {"rate_hz": 100_000.0, "accept_lower_rate": True})
            try:
                granted = lower.server_info["granted_rate_hz"]
                assert 0 < granted < 100_000.0
            finally:
                lower.close()
            stats = first.stats()
            performance = stats["performance"]
            assert performance["actions"] >= 1 and performance["deadline_misses"] == 0
            assert performance["contract"]["rate_hz"] == 5.0 and server.stats()["engine"]["frames"] > 0
            assert server.host.counters["refused_over_capacity"] == 1
        finally:
            first.close()


def test_a_robot_admitted_below_its_ask_is_held_to_the_rate_it_was_granted():
    modest = Performance(Contract(100.0, accept_lower_rate=True), granted_rate_hz=40.0)
    assert modest.promised().rate_hz == 40.0 and modest.stats()["granted_rate_hz"] == 40.0
    assert admit(45.0, [modest.promised()], None, 2) is None  # 100 Hz was asked, never promised
    with pytest.raises(ProtocolError, match="over_capacity"):
        admit(39.0, [modest.promised()], None, 2)


def test_with_two_engines_a_robot_is_judged_by_the_engine_it_joins_against_that_engines_robots_only():
    """Engine a serves a robot promised 80 Hz; engine b is empty and predicts 60 Hz with one more robot. A new
    robot goes to b, where no promise is at stake, so it is admitted; judged against every engine's robots
    (a's 80 Hz promise) it would be refused. A robot asking more than b can give is refused by b's figure."""
    from types import SimpleNamespace

    from auras.bridge.limits import ServeLimits
    from auras.bridge.sessions import SessionHost
    from auras.pipeline.router import EngineRouter

    class _Engine:
        def __init__(self, sessions: int, rate_hz: float) -> None:
            self.sessions, self.rate_hz = sessions, rate_hz

        def admission_rate_hz(self) -> float:
            return self.rate_hz

    a, b = _Engine(1, 90.0), _Engine(0, 60.0)
    host = SessionHost(lambda: None, EngineRouter([a, b]), ServeLimits())
    agent_on_a = SimpleNamespace(executor=SimpleNamespace(engine=a))
    with host.admission() as place:
        host.add(place, "fast", agent_on_a, "press", performance=Performance(Contract(80.0)))
    assert host.check_contract(Contract(40.0), "new") is None  # b: 60 Hz, nobody on b was promised more
    a.sessions = -1  # a robot leaves a before "new" is built: it still joins b, the engine it was judged by
    assert host.batcher.assign("new") is b and host.batcher.assign("other") is a
    a.sessions = 1
    with pytest.raises(ProtocolError, match=r"over_capacity.*60\.0 Hz"):
        host.check_contract(Contract(70.0), "greedy")  # judged by b
    a.sessions = -1
    assert host.batcher.assign("greedy") is a  # a refused robot's judgement does not bind a later join


def test_a_served_adaptive_robot_shares_the_engine_and_its_pipeline_holds_its_contract():
    """With pipeline.controller=adaptive the robots are still sessions of one engine (one model), and each
    robot's depth controller targets the rate it was admitted at within its staleness bound."""
    config = load_config("pipeline-tiny-dp", ["pipeline.controller=adaptive", "pipeline.target_hz=30"])
    with BridgeServer(config, f"tcp://127.0.0.1:{free_service_port()}").start() as server:
        first = _robot(server, "first", {"rate_hz": 5.0, "staleness_ms": 400.0})
        second = _robot(server, "second")
        try:
            agents = {s.robot: s.agent for s in server.host.sessions()}
            held = agents["first"].executor.controller
            assert (held.target_hz, held.bound_ms) == (5.0, 400.0)
            assert agents["second"].executor.controller.target_hz == 30.0  # no contract: the configured target
            assert agents["first"].executor.engine is agents["second"].executor.engine
            assert server.stats()["engine"]["sessions"] == 2
        finally:
            first.close()
            second.close()


def test_a_robot_admitted_below_its_ask_has_its_adaptive_pipeline_hold_the_granted_rate():
    from auras import AurasAgent
    from auras.bridge.contracts import hold_contract
    from auras.policies.base import Policy

    overrides = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.target_hz=30"]
    with AurasAgent(load_config(None, overrides), policy=Policy("fake-dp", FakeStagedPerception(2),
                                                                FakeDiffusion(12))) as agent:
        controller = agent.executor.controller
        hold_contract(agent, Contract(100.0, 200.0, accept_lower_rate=True), granted_rate_hz=40.0)
        assert (controller.target_hz, controller.bound_ms) == (40.0, 200.0)
        hold_contract(agent, Contract(staleness_ms=90.0), granted_rate_hz=None)  # no rate asked: the target stays
        assert (controller.target_hz, controller.bound_ms) == (40.0, 90.0)
        hold_contract(agent, None, None)
        assert (controller.target_hz, controller.bound_ms) == (40.0, 90.0)
