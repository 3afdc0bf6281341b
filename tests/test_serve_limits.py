"""The limits both servers enforce (docs/bridge.md, "Limits"), each tried as a hostile or careless client would:
a session cap refused before anything is built, idle connections closed, oversized and overdeep messages
refused, a client's text clipped in logs and replies, an exposed bind warned about, an API key required,
instructions the policy cannot read refused at hello/configure, openpi episodes and controls, and accounting
that holds at any moment."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from auras import AurasAgent, load_config
from auras.bridge.limits import ServeLimits, is_loopback
from auras.bridge.openpi import OpenpiServer, parse_ws_address
from auras.bridge.server import BridgeServer
from auras.errors import ConfigError
from auras.policies.base import Policy
from auras_client.client import RobotClient, ServiceError
from tests.fakes import FakeDiffusion, FakeGeneration, FakePerception, FakeStagedPerception
from tests.openpi_client import OpenpiStyleClient, libero_obs, packb
from tests.ports import free_service_port

DEADLINE_S = 60.0  # bounds a hang, never checks speed
IMAGE = np.zeros((84, 84, 3), np.uint8)


class Counting:
    """An agent factory that counts the agents it built and the resets they received."""

    def __init__(self, generation_s: float = 0.0, config: list[str] | None = None) -> None:
        self.built, self.resets, self.closed = 0, 0, 0
        self.generation_s, self.overrides = generation_s, config or []

    def __call__(self) -> AurasAgent:
        self.built += 1
        counter = self

        class Generation(FakeGeneration):
            def reset(self) -> None:
                counter.resets += 1
                super().reset()

        policy = Policy("fake", FakePerception(image_size=84), Generation(self.generation_s))
        return AurasAgent(load_config(None, self.overrides), policy=policy)


def _openpi(factory, **limits) -> OpenpiServer:
    keys = load_config().serve.openpi_keys
    return OpenpiServer(host="127.0.0.1", port=0, agent_factory=factory, keys=keys, limits=ServeLimits(**limits))


def _closed_code(client: OpenpiStyleClient) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        client.ws.recv(timeout=DEADLINE_S)
    frame = closed.value.rcvd or closed.value.sent
    return frame.code, frame.reason


# -- openpi ---------------------------------------------------------------------------------------------
def test_openpi_refuses_a_connection_past_the_session_cap_before_building_an_agent():
    factory = Counting()
    with _openpi(factory, max_sessions=2).start() as server:
        a, b = OpenpiStyleClient(server.address), OpenpiStyleClient(server.address)
        try:
            started = time.monotonic()
            with pytest.raises(InvalidStatus) as refused:
                OpenpiStyleClient(server.address)
            assert refused.value.response.status_code == 503 and b"server full" in refused.value.response.body
            assert time.monotonic() - started < DEADLINE_S and factory.built == 2
            assert server.counters["refused_full"] == 1
        finally:
            a.close()
            b.close()
        deadline = time.monotonic() + DEADLINE_S
        while server.sessions and time.monotonic() < deadline:  # a place frees when a robot leaves
            time.sleep(0.01)
        again = OpenpiStyleClient(server.address)
        again.close()
        assert factory.built == 3


def test_openpi_closes_an_idle_connection_and_its_agent():
    factory = Counting()
    with _openpi(factory, openpi_idle_timeout_s=0.5).start() as server:
        client = OpenpiStyleClient(server.address)
        client.infer(libero_obs(0))
        code, reason = _closed_code(client)
        assert code == 1001 and "idle for 0.5 s" in reason
        deadline = time.monotonic() + DEADLINE_S
        while server.sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.sessions == 0 and server.counters["sessions_expired"] == 1


def test_openpi_refuses_an_oversized_message_and_serves_the_next_robot():
    with _openpi(Counting(), max_message_bytes=400_000).start() as server:  # a LIBERO observation: 300 kB
        client = OpenpiStyleClient(server.address)
        obs = libero_obs(0)
        obs["observation/image"] = np.zeros((400, 400, 3), np.uint8)  # 480 kB
        client.ws.send(packb(obs))
        code, _ = _closed_code(client)
        assert code == 1009  # message too big: read no further
        fresh = OpenpiStyleClient(server.address)
        try:
            assert fresh.infer(libero_obs(1))["actions"].shape[-1] == 4
        finally:
            fresh.close()


@pytest.mark.parametrize("shape", ["many_keys", "deep", "long_list"])
def test_openpi_refuses_maps_too_wide_or_too_deep_with_a_clear_error(shape):
    with _openpi(Counting()).start() as server:
        client = OpenpiStyleClient(server.address)
        obs = libero_obs(0)
        if shape == "many_keys":
            obs.update({f"k{i}": i for i in range(100_000)})
            expected = "at most 256 keys per map"
        elif shape == "deep":
            nested: dict = {}
            for _ in range(20):
                nested = {"x": nested}
            obs["extra"] = nested
            expected = "at most 8 levels of nesting"
        else:
            obs["extra"] = list(range(10_000))
            expected = "4096 items per list"
        with pytest.raises(RuntimeError, match=expected):
            client.infer(obs)
        assert _closed_code(client)[0] == 1011


def test_a_refused_prompt_is_clipped_in_the_log_and_in_the_error(caplog):
    config = load_config("pipeline-tiny-dp")
    with _openpi_real(config) as server, caplog.at_level(logging.WARNING, logger="auras.bridge.openpi"):
        client = OpenpiStyleClient(server.address)
        assert client.metadata["limits"]["instruction_bytes"] == 64
        obs = libero_obs(0)
        obs["prompt"] = "x" * 5_000_000
        with pytest.raises(RuntimeError) as failed:
            client.infer(obs)
        assert "at most 64 UTF-8 bytes" in str(failed.value) and len(str(failed.value)) < 400
    lines = [r.getMessage() for r in caplog.records if r.name == "auras.bridge.openpi"]
    assert lines and max(len(line) for line in lines) < 400, [len(line) for line in lines]


def _openpi_real(config) -> OpenpiServer:
    return OpenpiServer(config, "127.0.0.1", 0).start()


def test_openpi_bind_addresses_are_parsed_or_refused_clearly():
    assert parse_ws_address("ws://127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert parse_ws_address("ws://[::1]:9000") == ("::1", 9000)
    form = "expected ws://HOST:PORT"
    for bad, why in (("tcp://127.0.0.1:5555", form), ("ws://127.0.0.1:70000", "0..65535"), ("ws://127.0.0.1", form),
                     ("ws://:80", form)):
        with pytest.raises(ConfigError, match=why):
            parse_ws_address(bad)


def test_openpi_serves_on_ipv6_loopback():
    try:
        server = OpenpiServer(host="::1", port=0, agent_factory=Counting(), keys=load_config().serve.openpi_keys)
    except OSError as exc:  # a machine without IPv6
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server.start():
        assert server.address.startswith("ws://[::1]:") and server.warning is None
        client = OpenpiStyleClient(server.address)
        try:
            assert client.infer(libero_obs(0))["actions"].shape[-1] == 4
        finally:
            client.close()


def test_an_exposed_bind_without_credentials_is_warned_about_and_a_key_is_required_once_given(caplog):
    keys = load_config().serve.openpi_keys
    with caplog.at_level(logging.WARNING), OpenpiServer(host="0.0.0.0", port=0, agent_factory=Counting(), keys=keys):
        pass
    assert any("reachable from other machines" in r.getMessage() for r in caplog.records)
    key = "k" * 32
    with OpenpiServer(host="0.0.0.0", port=0, agent_factory=Counting(), keys=keys, api_key=key).start() as server:
        assert server.warning is None
        local = f"ws://127.0.0.1:{server.port}"
        for wrong in (None, "wrong-key-of-enough-length"):
            with pytest.raises(InvalidStatus) as refused:
                OpenpiStyleClient(local, api_key=wrong)
            assert refused.value.response.status_code == 401
        client = OpenpiStyleClient(local, api_key=key)
        try:
            assert client.infer(libero_obs(0))["actions"].shape[-1] == 4
        finally:
            client.close()
        assert server.counters["refused_unauthorized"] == 2
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("*") and not is_loopback("robot.lan")


def test_openpi_resets_the_agent_on_a_new_prompt_on_a_restarted_step_counter_and_on_episode_start():
    factory = Counting()
    keys = {**load_config().serve.openpi_keys, "step": "step"}
    with OpenpiServer(host="127.0.0.1", port=0, agent_factory=factory, keys=keys).start() as server:
        client = OpenpiStyleClient(server.address)
        try:
            def infer(i: int, step: int, prompt: str = "push the puck to the goal") -> None:
                client.infer({**libero_obs(i), "step": np.int64(step), "prompt": prompt})

            base = factory.resets  # an agent resets once as it starts
            for step in range(3):
                infer(step, step)
            assert factory.resets == base  # one episode: steps increase, the prompt stays
            infer(3, 0)
            assert factory.resets == base + 1  # the robot's step counter restarted: a new episode
            infer(4, 1, prompt="press the button")
            assert factory.resets == base + 2  # a new task
            assert client.infer({"__ctrl__": "episode_start"}) == {"ok": True, "__ctrl__": "episode_start"}
            assert factory.resets == base + 3
            unknown = client.infer({"__ctrl__": "episode_restart"})
            assert unknown["ok"] is False and "expected episode_start or episode_end" in unknown["error"]
            assert factory.resets == base + 3
            missing = dict(libero_obs(5))
            with pytest.raises(RuntimeError, match="expected key 'step'"):
                client.infer(missing)
        finally:
            client.close()


# -- ZeroMQ -------------------------------------------------------------------------------------------
def _robot(server: BridgeServer, **kwargs) -> RobotClient:
    kwargs.setdefault("instruction", "push the puck")
    return RobotClient(server.bind, cameras={"front": (84, 84)}, state_dim=4, timeout_s=DEADLINE_S,
                       ttl_s=DEADLINE_S, **kwargs)


def _refused(server: BridgeServer, **kwargs) -> ServiceError:
    """The error a robot's hello gets (its client closed after)."""
    with pytest.raises(ServiceError) as refused:
        _robot(server, **kwargs)  # connects: a refused client closes its own sockets
    return refused.value


def test_zmq_refuses_a_hello_past_the_session_cap_before_building_an_agent():
    factory = Counting()
    address = f"tcp://127.0.0.1:{free_service_port()}"
    with BridgeServer(bind=address, agent_factory=factory, limits=ServeLimits(max_sessions=1)).start() as server:
        with _robot(server):
            refused = _refused(server)
            assert "server full: 1 sessions already" in refused.message
            assert refused.code == "bad_request" and factory.built == 1
        with _robot(server):  # the first robot said bye: its place is free
            assert factory.built == 2


def test_zmq_refuses_an_instruction_the_policy_cannot_read_at_hello_and_configure_and_states_the_limits():
    config = load_config("pipeline-tiny-dp")
    address = f"tcp://127.0.0.1:{free_service_port()}"
    with BridgeServer(config, address).start() as server:
        refused = _refused(server, instruction="é" * 33)  # 66 bytes in 33 characters
        assert refused.code == "bad_request" and "at most 64 UTF-8 bytes" in refused.message
        assert server.stats()["sessions"] == []  # refused before a session existed
        with _robot(server) as robot:
            limits = {"instruction_bytes": 64, "state_dim": 4, "cameras": {"front": [84, 84]}}
            assert robot.server_info["limits"] == limits
            with pytest.raises(ServiceError, match="at most 64 UTF-8 bytes"):
                robot.configure(instruction="press the button " * 5)
            assert robot.configure(instruction="press the button")["instruction"] == "press the button"


def test_zmq_accounting_holds_while_observations_wait_in_a_pipeline_and_after_the_agent_fails():
    """An idle pipelined session holds its last observations in the pipeline (in_agent); the sum holds
    before any reset. A failed agent's observations in flight become unanswered at once."""
    fail = threading.Event()

    class Failing(FakeGeneration):
        def generate(self, context):
            if fail.is_set():
                raise RuntimeError("the generation broke")
            return super().generate(context)

    def pipelined() -> AurasAgent:
        policy = Policy("fake-dp", FakeStagedPerception(2, image_size=84), FakeDiffusion(6))
        return AurasAgent(load_config(None, ["pipeline.mode=auras", "pipeline.pp_generation=3"]), policy=policy)

    def failing() -> AurasAgent:
        return AurasAgent(load_config(), policy=Policy("fake", FakePerception(image_size=84), Failing()))

    def holds(c: dict) -> bool:
        return c["answered"] + c.get("superseded", 0) + c.get("unanswered", 0) + c["in_agent"] == c["submitted"]

    for factory, expect in ((pipelined, "in_agent"), (failing, "unanswered")):
        address = f"tcp://127.0.0.1:{free_service_port()}"
        with BridgeServer(bind=address, agent_factory=factory).start() as server, _robot(server) as robot:
            for i in range(6):
                if factory is failing and i == 3:
                    fail.set()
                robot.publish({"front": IMAGE}, np.zeros(4, np.float32))
                time.sleep(0.05)
            deadline = time.monotonic() + DEADLINE_S
            while True:
                c = robot.stats()["counters"]
                settled = c.get("submitted", 0) + c.get("rejected", 0) == 6 and c.get("answered", 0) >= 1
                if (settled and (factory is pipelined or c.get("agent_failures"))) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert holds(c), c
            if expect == "in_agent":
                assert c["in_agent"] >= 1, c  # the pipeline still holds observations: no reset yet
            else:
                assert c["in_agent"] == 0 and c["unanswered"] >= 1, c


def test_the_zmq_server_warns_about_an_exposed_bind_without_curve(caplog):
    with caplog.at_level(logging.WARNING, logger="auras.bridge"):
        server = BridgeServer(bind=f"tcp://0.0.0.0:{free_service_port()}", agent_factory=Counting())
    try:
        assert server.warning and "reachable from other machines" in server.warning
        assert any("reachable from other machines" in r.getMessage() for r in caplog.records)
    finally:
        server.close()
