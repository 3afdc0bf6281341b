"""The fault-injecting proxy (auras.bridge.faults) over real ZeroMQ sockets: its fault engine against a fake
server made of bare sockets, and a RobotClient driving a real `auras serve --policy tiny-dp` through it
(drops, duplicates and reorders in both directions; the server killed and restarted behind it)."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import zmq

from auras.bridge.faults import FaultProxy, Faults, ServerProcess, data_endpoints
from auras_client.client import RobotClient
from auras_client.protocol import decode_map, encode_map
from tests.ports import free_service_port

IMAGE = np.zeros((84, 84, 3), np.uint8)
STATE = np.zeros(4, np.float32)
DEADLINE_S = 60.0  # bounds a hang only: this machine is loaded
FAULTY = {"drop": 0.2, "duplicate": 0.2, "reorder": 0.2}


def _address() -> str:
    return f"tcp://127.0.0.1:{free_service_port()}"


def _wait(condition, what: str, timeout: float = DEADLINE_S, every=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        if every is not None:
            every()
        time.sleep(0.02)


# -- Faults ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "expected"), [
    ("drop", 1.5, "probability in [0, 1]"), ("duplicate", -0.1, "probability in [0, 1]"),
    ("reorder", float("nan"), "probability in [0, 1]"), ("drop", "0.2", "probability in [0, 1]"),
    ("delay_ms", -1, ">= 0"), ("reorder_ms", float("inf"), ">= 0"), ("seed", 1.5, "an int"),
])
def test_faults_refuse_values_out_of_range_naming_field_range_and_value(field, value, expected):
    with pytest.raises(ValueError) as error:
        Faults(**{field: value})
    message = str(error.value)
    assert message.startswith(f"Faults.{field}: expected ") and expected in message and message.endswith(
        f"got {value!r}"), message
    assert Faults(drop=1, duplicate=0.0, reorder=1.0, delay_ms=0, reorder_ms=0).drop == 1


def test_data_endpoints_sit_next_to_the_service_endpoint():
    assert data_endpoints("tcp://127.0.0.1:7000") == ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002")
    assert data_endpoints("ipc:///tmp/x") == ("ipc:///tmp/x.obs", "ipc:///tmp/x.act")
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        data_endpoints("tcp://127.0.0.1")


# -- the fault engine, against a fake server of bare sockets -------------------------------------------
class FakeServer:
    """A ROUTER that answers hello with data endpoints of its choosing, a PULL and a PUB (no agent)."""

    def __init__(self, service: str, obs: str, act: str, named: tuple[str, str] | None = None) -> None:
        self.ctx = zmq.Context()
        self.router, self.pull, self.pub = (self.ctx.socket(k) for k in (zmq.ROUTER, zmq.PULL, zmq.PUB))
        for sock, endpoint in ((self.router, service), (self.pull, obs), (self.pub, act)):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(endpoint)
        self.named = named or (obs, act)

    def answer(self, timeout_ms: int = 5000, reply: bool = True) -> dict:
        assert self.router.poll(timeout_ms), "no request reached the fake server"
        *envelope, body = self.router.recv_multipart()
        request = decode_map(body)
        if reply:
            extra = {"publish_to": self.named[0], "subscribe_to": self.named[1]} if request["op"] == "hello" else {}
            self.router.send_multipart([*envelope, encode_map({"v": 1, "ok": True, "id": request.get("id"), **extra})])
        return request

    def close(self) -> None:
        for sock in (self.router, self.pull, self.pub):
            sock.close(linger=0)
        self.ctx.term()


def _req(ctx: zmq.Context, address: str, op: str, **fields) -> zmq.Socket:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    sock.send(encode_map({"v": 1, "op": op, **fields}))
    return sock


def test_each_message_meets_the_fate_its_seed_gives_it_delayed_duplicated_and_reordered():
    service = _address()
    fake = FakeServer(service, *data_endpoints(service))
    faults = Faults(drop=0.3, duplicate=0.3, reorder=0.3, delay_ms=20, reorder_ms=1000, seed=7)
    ctx = zmq.Context()
    try:
        with FaultProxy(service, _address()) as proxy:
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(proxy.obs_bind)
            _wait(lambda: fake.pull.poll(0), "a probe through the proxy (connected)", timeout=10,
                  every=lambda: push.send_multipart([b"probe"]))
            time.sleep(0.1)
            while fake.pull.poll(0):
                fake.pull.recv_multipart()
            proxy.set_faults(observations=faults)  # its random numbers start from the seed here
            before = proxy.counters["observations"]
            n = 200
            for i in range(n):
                push.send_multipart([b"joint_states", str(i).encode(), repr(time.monotonic()).encode()])
            rng = random.Random(7)  # the model: three draws per message, whatever its fate
            fates = [(rng.random() < 0.3, rng.random() < 0.3, rng.random() < 0.3) for _ in range(n)]
            expected = [i for i, (drop, dup, _) in enumerate(fates) if not drop for _ in range(2 if dup else 1)]
            arrivals = []
            while len(arrivals) < len(expected):
                assert fake.pull.poll(5000), f"got {len(arrivals)} of {len(expected)}: {proxy.counters}"
                _, index, sent = fake.pull.recv_multipart()
                arrivals.append((int(index), time.monotonic() - float(sent)))
            assert not fake.pull.poll(400), "more messages than the seed allows"
            push.close()
            counters = {k: v - before[k] for k, v in proxy.counters["observations"].items()}
        indices = [i for i, _ in arrivals]
        assert sorted(indices) == sorted(expected)  # dropped and duplicated exactly as the seed says
        assert counters == {"received": n, "forwarded": sum(not d for d, _, _ in fates), "overflow": 0,
                            "dropped": sum(d for d, _, _ in fates),
                            "duplicated": sum(not d and u for d, u, _ in fates),
                            "reordered": sum(not d and r for d, _, r in fates)}
        assert min(age for _, age in arrivals) >= 0.020  # every message waited delay_ms
        held = {i for i, (drop, _, reorder) in enumerate(fates) if reorder and not drop}
        on_time = [i for i in indices if i not in held]
        assert on_time == sorted(on_time)  # the others keep their order (a copy right after its original)
        # all sent within a few ms, far less than reorder_ms: every held message arrives after all the others
        copies = sum(i in held for i in indices)
        assert held and set(indices[-copies:]) == held and indices != sorted(indices)
    finally:
        ctx.destroy(linger=0)
        fake.close()


def test_hello_replies_point_at_the_proxy_which_follows_the_servers_data_endpoints():
    service = _address()
    obs, act = data_endpoints(_address())  # not next to the service endpoint, and named with 0.0.0.0
    port_obs, port_act = obs.rpartition(":")[2], act.rpartition(":")[2]
    fake = FakeServer(service, obs, act, named=(f"tcp://0.0.0.0:{port_obs}", f"tcp://0.0.0.0:{port_act}"))
    ctx = zmq.Context()
    try:
        with FaultProxy(service, _address()) as proxy:
            req = _req(ctx, proxy.bind, "hello", id=1)
            fake.answer()
            assert req.poll(5000)
            reply = decode_map(req.recv())
            assert (reply["publish_to"], reply["subscribe_to"]) == (proxy.obs_bind, proxy.action_bind)
            assert proxy.upstream == (obs, act) and proxy.counters["service"]["upstream_changes"] == 1
            push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
            push.connect(reply["publish_to"])
            sub.connect(reply["subscribe_to"])
            sub.setsockopt(zmq.SUBSCRIBE, b"action/")
            _wait(lambda: fake.pull.poll(0), "an observation through the proxy", timeout=10,
                  every=lambda: push.send_multipart([b"joint_states", b"x"]))  # lost until the proxy has connected
            assert fake.pull.recv_multipart() == [b"joint_states", b"x"]

            def publish():
                fake.pub.send_multipart([b"action/s", b"y"])
                fake.pub.send_multipart([b"status/s", b"z"])  # not subscribed to by this robot

            _wait(lambda: sub.poll(0), "an action through the proxy", timeout=10, every=publish)
            assert sub.recv_multipart() == [b"action/s", b"y"]
            for sock in (req, push, sub):
                sock.close(linger=0)
    finally:
        ctx.destroy(linger=0)
        fake.close()


def test_a_request_whose_reply_never_comes_wedges_nothing():
    service = _address()
    ctx = zmq.Context()
    fake = FakeServer(service, *data_endpoints(service))
    try:
        with FaultProxy(service, _address()) as proxy:
            first = _req(ctx, proxy.bind, "health", id=1)
            assert fake.answer(reply=False)["id"] == 1  # the server took it and died before answering
            assert not first.poll(200)
            first.close(linger=0)  # as RobotClient does after a timeout
            second = _req(ctx, proxy.bind, "health", id=2)
            assert fake.answer()["id"] == 2
            assert second.poll(5000) and decode_map(second.recv())["id"] == 2
            second.close(linger=0)

            fake.close()  # now nobody is there: a request waits for the server's successor
            third = _req(ctx, proxy.bind, "health", id=3)
            assert not third.poll(300)
            third.close(linger=0)
            fake = FakeServer(service, *data_endpoints(service))
            assert fake.answer()["id"] == 3  # delivered late; its reply finds no sender
            _wait(lambda: proxy.counters["service"]["orphan_replies"] == 1, "the stale reply counted", timeout=10)
            fourth = _req(ctx, proxy.bind, "health", id=4)
            assert fake.answer()["id"] == 4
            assert fourth.poll(5000) and decode_map(fourth.recv())["id"] == 4
            fourth.close(linger=0)
            assert proxy.counters["service"]["requests"] == 4
    finally:
        ctx.destroy(linger=0)
        fake.close()


def test_close_never_hangs_with_messages_held_and_no_server():
    proxy = FaultProxy(_address(), _address(), observations=Faults(delay_ms=10_000)).start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(proxy.obs_bind)
    push.send_multipart([b"joint_states", b"x"])
    _wait(lambda: proxy.stats()["held"] == 1, "a held message", timeout=10)
    started = time.monotonic()
    proxy.close()
    proxy.close()
    assert time.monotonic() - started < 2 and not proxy.stats()["running"]
    ctx.destroy(linger=0)


# -- a real server behind the proxy ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(["--policy", "tiny-dp"], _address(), log_path=tmp_path_factory.mktemp("serve") / "log") as srv:
        srv.wait_ready(DEADLINE_S)
        yield srv


@pytest.fixture
def proxy(server):
    with FaultProxy(server.service, _address()) as p:
        yield p


def _robot(proxy: FaultProxy) -> RobotClient:
    return RobotClient(proxy.bind, cameras={"front": (84, 84)}, state_dim=4, instruction="push the puck",
                       ttl_s=DEADLINE_S, timeout_s=1.0, heartbeat_s=0.2)


def _publish_until(robot: RobotClient, condition, what: str) -> None:
    _wait(condition, f"{what}; robot {dict(robot.counters)}", every=lambda: robot.publish({"front": IMAGE}, STATE))


def _unaccounted(stats: dict) -> tuple[int, int]:
    """(seqs, submitted observations) the session's counters do not account for (docs/bridge.md, section 5):
    every seq from 0 (the robot's first, delivered) to max_seen is submitted, rejected, dropped incomplete or
    at a reset, lost, unseen at a reset or pending; every submitted one answered, superseded, unanswered or in
    the agent."""
    c = stats["counters"]
    seqs = stats["max_seen"] + 1 - sum(c.get(k, 0) for k in ("submitted", "rejected", "dropped_incomplete",
                                                           "dropped_at_reset", "lost", "unseen_at_reset", "pending"))
    submitted = c.get("submitted", 0) - sum(c.get(k, 0) for k in ("answered", "superseded", "unanswered", "in_agent"))
    return seqs, submitted


def test_a_robot_through_a_clean_proxy_is_served_on_the_proxys_endpoints(proxy):
    with _robot(proxy) as robot:
        assert (robot.server_info["publish_to"], robot.server_info["subscribe_to"]) == (proxy.obs_bind,
                                                                                      proxy.action_bind)
        _publish_until(robot, lambda: robot.take_action() is not None, "an action")
        counters = proxy.counters
    assert counters["service"]["rewritten_hellos"] == 1
    for direction in ("observations", "actions"):
        assert counters[direction]["forwarded"] > 0 and counters[direction]["forwarded"] == counters[direction][
            "received"], counters
        assert counters[direction]["dropped"] == counters[direction]["duplicated"] == 0


def test_under_drops_duplicates_and_reorders_the_robot_is_served_and_the_server_accounts_exactly(proxy):
    with _robot(proxy) as robot:
        _publish_until(robot, lambda: robot.take_action() is not None, "a first action (no faults yet)")
        received = robot.counters["actions"]
        proxy.set_faults(observations=Faults(**FAULTY, reorder_ms=30, seed=1),
                         actions=Faults(**FAULTY, reorder_ms=300, seed=2))  # later than the next action (~7 Hz)
        checked = []

        def faults_seen() -> bool:
            if len(checked) < 3:  # the accounting is exact at any moment, also while faulty traffic flows
                checked.append(_unaccounted(robot.stats()))
            c = proxy.counters
            actions = proxy.stats()["topics"].get("action", {})
            return (all(c[d][k] > 0 for d in ("observations", "actions") for k in ("dropped", "duplicated",
                                                                                      "reordered"))
                    and actions.get("duplicated", 0) > 0 and robot.counters["actions"] > received + 10)

        _publish_until(robot, faults_seen, f"every fault, refused repeats at the robot; proxy {proxy.counters}")
        proxy.set_faults(Faults(), Faults())
        _wait(lambda: proxy.stats()["held"] == 0, "held messages released", timeout=10)
        stats = robot.stats()
        assert checked == [(0, 0)] * len(checked), checked
        assert _unaccounted(stats) == (0, 0), stats
        assert stats["counters"].get("late_messages", 0) > 0, stats  # repeated and overtaken parts were refused

        def actions_settled() -> bool:  # every action the server sent reached the proxy, every copy the robot
            sent, seen = robot.stats()["counters"]["actions"], proxy.stats()["topics"]["action"]
            return sent == seen["received"] and (robot.counters["actions"] + robot.counters["duplicate_actions"]
                                                 == seen["forwarded"] + seen["duplicated"])

        _wait(actions_settled, f"actions accounted: {proxy.stats()['topics']}, robot {dict(robot.counters)}", 10)
        duplicated = proxy.stats()["topics"]["action"]["duplicated"]
        assert robot.counters["duplicate_actions"] == duplicated > 0, (dict(robot.counters), duplicated)  # dropped
        assert robot.episode_actions <= robot.counters["actions"]  # copies are not answers
        assert robot.counters["bad_messages"] == 0


def test_the_robot_comes_back_by_itself_after_the_server_is_killed_and_restarted(server, proxy):
    with _robot(proxy) as robot:
        _publish_until(robot, lambda: robot.take_action() is not None, "an action")
        old = robot.session
        killed = time.time()
        server.kill()
        server.start()
        back = server.wait_ready(DEADLINE_S)
        assert isinstance(back, float) and back > killed
        _publish_until(robot, lambda: robot.session not in (None, old), "a new session")
        _publish_until(robot, lambda: (a := robot.take_action()) is not None and a.header["session"] == robot.session,
                       "an action of the new session")
        assert robot.counters["session_lost"] == 1 and robot.counters["hellos"] == 2, dict(robot.counters)
        assert robot.server_info["publish_to"] == proxy.obs_bind  # the second hello was rewritten too
        assert proxy.counters["service"]["rewritten_hellos"] == 2
