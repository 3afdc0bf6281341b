"""`auras serve --backend ray` as users run it: the real command in a subprocess (its own local Ray),
a shipped policy by config (tiny-dp, ``-c pipeline-tiny-dp``: auras mode, perception and generation
actors joined by a compiled graph), real ZeroMQ sockets and the real robot client.

A robot gets actions; a SIGKILLed generation actor is replaced and the session goes on; several robots
are served side by side; a lost Ray cluster stops the server with its cause, after telling the robot
(and, in process and without Ray, the same fatal path for any failed health check).

Every wait below only bounds a hang (DEADLINE_S), never checks speed: this machine is loaded. Every
process a test starts (the server, its Ray) is stopped at its end, and only those."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest

from auras.bridge.health import HealthWatchdog
from auras.bridge.limits import ServeLimits
from auras.bridge.server import BridgeServer
from auras.config import load_config
from auras.errors import WorkerDiedError
from auras_client.client import ReceivedAction, RobotClient, ServiceError
from tests.ports import free_service_port

DEADLINE_S = 60.0
REQUEST_TIMEOUT_S = 10.0  # a robot's requests (a heartbeat to a server that is gone holds its close() this long)
POLICY = ["--policy", "tiny-dp", "-c", "pipeline-tiny-dp", "--backend", "ray"]
CAMERA = (84, 84)  # tiny-dp's camera
HORIZON, ACTION_DIM = 16, 4  # tiny-dp's action chunk


# -- the server ---------------------------------------------------------------------------------------


@dataclass
class Served:
    """A running `auras serve` subprocess: its address, process and log (stdout + stderr)."""

    address: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def workers(self, session: str) -> dict[str, int]:
        """{role: pid} of ``session``'s workers, from the server's log line for it."""
        match = re.search(rf"session {session} for robot .* on workers: (.*)", self.output())
        assert match, f"no log line with the workers of session {session}:\n{self.output()[-3000:]}"
        return {role: int(pid) for role, pid in re.findall(r"(\w+) pid (\d+)", match.group(1))}


@contextlib.contextmanager
def serving(tmp_path: Path, *extra: str) -> Iterator[Served]:
    """`auras serve` with tiny-dp on the Ray backend (its own local Ray); stopped at the end with every
    process it started (Ray's GCS, raylet and workers are its descendants)."""
    address = f"tcp://127.0.0.1:{free_service_port()}"
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "auras.cli", "serve", "--bind", address, *POLICY, *extra]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, MUJOCO_GL="egl"))
    seen: set[psutil.Process] = set()  # its descendants, noted while it runs: orphans are not found later
    done = threading.Event()

    def note_descendants() -> None:
        while not done.wait(0.5) and proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                seen.update(psutil.Process(proc.pid).children(recursive=True))

    watcher = threading.Thread(target=note_descendants, daemon=True)
    watcher.start()
    try:
        yield Served(address, proc, log)
    finally:
        done.set()
        watcher.join(timeout=DEADLINE_S)
        with contextlib.suppress(psutil.Error):
            seen.update(psutil.Process(proc.pid).children(recursive=True))
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=DEADLINE_S)
        deadline = time.monotonic() + 10  # Ray's processes end with the server
        while any(_running(child) for child in seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        for child in seen:
            with contextlib.suppress(psutil.Error):
                if _running(child):
                    child.kill()  # psutil checks the pid still names the process it found


@dataclass
class InProcess:
    """A BridgeServer serving from a thread of this process (what a test needs of a server)."""

    server: BridgeServer
    thread: threading.Thread
    raised: list[BaseException]

    @property
    def address(self) -> str:
        return self.server.bind

    def alive(self) -> bool:
        return self.thread.is_alive()

    def output(self) -> str:
        return f"(in process; serve_forever raised {self.raised})"


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # a zombie is dead, just not reaped
    except psutil.Error:
        return False


# -- the robots ---------------------------------------------------------------------------------------


@dataclass
class Robot:
    """A robot client that publishes a camera frame and joint state every 50 ms from its own thread
    (as a camera would) and records every observation it published, every action and every status
    event it received."""

    client: RobotClient
    published: dict[int, float] = field(default_factory=dict)  # seq -> capture stamp
    actions: list[ReceivedAction] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def last_published(self) -> int:
        return max(self.published, default=-1)

    def run(self, brightness: int) -> None:
        image = np.full((*CAMERA, 3), brightness, np.uint8)
        state = np.full(4, brightness / 255, np.float32)
        while not self.stop.wait(0.05):
            stamp = time.time()
            seq = self.client.publish({"front": image}, state, stamp=stamp)
            if seq is not None:
                self.published[seq] = stamp

    def wait_action(self, after: int, what: str, server: Served | InProcess) -> ReceivedAction:
        """The first action received that answers an observation newer than seq ``after``."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            assert server.alive(), f"the server stopped:\n{server.output()[-3000:]}"
            for action in list(self.actions):
                if action.seq > after:
                    return action
            time.sleep(0.05)
        raise AssertionError(f"{what}: no action for an observation after seq {after} within {DEADLINE_S} s; "
                             f"client counters {dict(self.client.counters)}\n{server.output()[-3000:]}")

    def wait_event(self, name: str, server: Served | InProcess, **fields: object) -> dict:
        """The first status event ``name`` on this robot's session topic with these ``fields``."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} event {fields} within {DEADLINE_S} s; events "
                             f"{self.events[-5:]}\n{server.output()[-3000:]}")


@contextlib.contextmanager
def robot(server: Served | InProcess, name: str = "robot", brightness: int = 0) -> Iterator[Robot]:
    """A connected robot publishing from its own thread until the end."""
    actions: list[ReceivedAction] = []
    events: list[dict] = []
    client = RobotClient(server.address, cameras={"front": CAMERA}, state_dim=4, instruction="press the button",
                         robot=name, ttl_s=DEADLINE_S, timeout_s=REQUEST_TIMEOUT_S, on_action=actions.append,
                         on_status=events.append, connect=False)
    client.hello_timeout_s = DEADLINE_S  # the first hello starts the session's two actors
    try:
        client.connect()
    except (TimeoutError, ServiceError) as exc:
        client.close()
        raise AssertionError(f"hello: {exc}; server alive: {server.alive()}\n{server.output()[-3000:]}") from None
    with client:
        bot = Robot(client, actions=actions, events=events)
        thread = threading.Thread(target=bot.run, args=(brightness,), daemon=True)
        thread.start()
        try:
            yield bot
        finally:
            bot.stop.set()
            thread.join(timeout=DEADLINE_S)


def _check_chunk(action: ReceivedAction) -> None:
    assert action.chunk.shape == (HORIZON, ACTION_DIM) and np.all(np.isfinite(action.chunk))


# -- the tests ----------------------------------------------------------------------------------------


@pytest.mark.ray
def test_a_robot_gets_actions_from_auras_serve_on_the_ray_backend(tmp_path):
    """The issue's reproduction: the server used to exit (status 1, no message) once the robot's session
    started its Ray actors. Now actions come, computed by two Ray actors outside the server's process."""
    with serving(tmp_path) as server, robot(server) as bot:
        first = bot.wait_action(-1, "first action", server)
        later = bot.wait_action(first.seq, "a later action", server)
        for action in (first, later):
            _check_chunk(action)
            assert action.header["session"] == bot.client.session
            assert action.stamp == bot.published[action.seq]  # it answers the observation of that seq
        workers = server.workers(bot.client.session)
        assert set(workers) == {"perception", "generation"}
        assert server.proc.pid not in workers.values()  # the Ray actors computed them, not the server
        stats = bot.client.stats()
        assert stats["state"] == "serving" and stats["counters"]["actions"] >= 2
        assert server.alive()
    assert "in auras mode" in server.output()


@pytest.mark.ray
def test_a_sigkilled_generation_actor_is_replaced_and_the_session_keeps_serving(tmp_path):
    """SIGKILL the session's generation actor mid-session: the robot's status topic gets a
    `worker_restarted` event, fresh actions follow (from observations published after the kill, with
    nothing computed from before it), and the server process never exits."""
    with serving(tmp_path) as server, robot(server) as bot:
        bot.wait_action(-1, "first action", server)
        old = server.workers(bot.client.session)
        killed_after = bot.last_published  # every observation up to this one went out before the kill
        os.kill(old["generation"], signal.SIGKILL)

        event = bot.wait_event("worker_restarted", server)
        assert isinstance(event["step_id"], int) and "replaced" in event["message"]
        fresh = [bot.wait_action(killed_after, "first action after the kill", server)]
        while len(fresh) < 3:  # and they keep coming
            fresh.append(bot.wait_action(fresh[-1].seq, "a later action after the kill", server))
        for action in fresh:
            _check_chunk(action)
            assert action.header["context_seq"] > killed_after  # no context from the lost workers

        stats = bot.client.stats()
        assert stats["state"] == "serving" and stats["counters"]["worker_restarts"] == 1
        assert server.alive() and not psutil.pid_exists(old["generation"])
        restarted = re.search(rf"session {bot.client.session}: workers replaced; now on workers: (.*?); cause:",
                              server.output())
        assert restarted, server.output()[-3000:]  # the server's log says so, with the new workers
        new = {role: int(pid) for role, pid in re.findall(r"(\w+) pid (\d+)", restarted.group(1))}
        assert set(new) == {"perception", "generation"} and set(new.values()).isdisjoint(old.values())


@pytest.mark.ray
@pytest.mark.slow  # 30-55 s: two Ray sessions side by side
@pytest.mark.parametrize("engine", ["shared", "per-robot"])
def test_two_robots_on_one_server_each_get_their_own_actions(tmp_path, engine):
    """Two robots, a session each, on one engine (one pair of actors, their frames batched) or an agent (and
    two actors) each. Every action a robot receives answers one of its own observations: same seq and the
    same capture stamp that robot sent (the other robot's observation of that seq was captured at another
    instant). Two per-robot sessions fill the local Ray this server starts on a machine with up to 4 cores
    (4 logical CPUs, one per actor)."""
    with serving(tmp_path, "--engine", engine) as server, robot(server, "left", 0) as left, \
            robot(server, "right", 255) as right:
        assert left.client.session != right.client.session
        for bot in (left, right):
            first = bot.wait_action(-1, f"{bot.client.robot}: first action", server)
            bot.wait_action(first.seq, f"{bot.client.robot}: a later action", server)
        for bot in (left, right):
            for action in list(bot.actions):
                assert action.header["session"] == bot.client.session
                assert bot.published.get(action.seq) == action.stamp, (bot.client.robot, action.seq)
            stats = bot.client.stats()
            assert stats["state"] == "serving" and stats["counters"]["actions"] >= 2
        left_workers, right_workers = server.workers(left.client.session), server.workers(right.client.session)
        if engine == "shared":
            assert left_workers == right_workers  # one model serves both
        else:
            assert set(left_workers.values()).isdisjoint(right_workers.values())  # a pipeline per robot
        assert server.alive()


@pytest.mark.ray
def test_a_killed_engine_restarts_only_its_own_robots_each_once_with_exact_accounting(tmp_path):
    """Two engines (``serve.engines=2``: a copy of the model and a pair of actors each), four robots, two on
    each (a new robot joins the least loaded engine). SIGKILL one engine's generation actor under load: its
    two robots each get exactly one `worker_restarted` event and fresh actions after it; the other engine's
    robots get none and never stop; every robot's accounting stays exact (every observation submitted is
    answered, superseded, unanswered or still in the agent) and every action answers its own observation."""
    names = ["a0", "b0", "a1", "b1"]
    with serving(tmp_path, "--set", "serve.engines=2") as server, contextlib.ExitStack() as stack:
        bots = {name: stack.enter_context(robot(server, name, 40 * i)) for i, name in enumerate(names)}
        for bot in bots.values():
            bot.wait_action(-1, f"{bot.client.robot}: first action", server)
        workers = {name: server.workers(bot.client.session) for name, bot in bots.items()}
        assert workers["a0"] == workers["a1"] and workers["b0"] == workers["b1"]  # two robots per engine
        assert set(workers["a0"].values()).isdisjoint(workers["b0"].values())  # on engines of their own
        killed_after = {name: bot.last_published for name, bot in bots.items()}
        os.kill(workers["a0"]["generation"], signal.SIGKILL)
        for name in ("a0", "a1"):
            bots[name].wait_event("worker_restarted", server)
            fresh = bots[name].wait_action(killed_after[name], f"{name}: first action after the kill", server)
            assert fresh.header["context_seq"] > killed_after[name]  # nothing from the lost workers
        for name in ("b0", "b1"):  # the other engine's robots carry on
            later = bots[name].wait_action(killed_after[name], f"{name}: an action after the kill", server)
            bots[name].wait_action(later.seq, f"{name}: a later action", server)
        time.sleep(1.0)  # any late event would have arrived
        for name, bot in bots.items():
            restarts = [e for e in bot.events if e.get("event") == "worker_restarted"]
            assert len(restarts) == (1 if name.startswith("a") else 0), (name, bot.events)
            stats = bot.client.stats()
            counters = stats["counters"]
            assert counters.get("worker_restarts", 0) == len(restarts)
            assert counters["submitted"] == (counters.get("answered", 0) + counters.get("superseded", 0)
                                             + counters.get("unanswered", 0) + counters["in_agent"]), counters
            assert all(bot.published.get(a.seq) == a.stamp for a in bot.actions)  # its own observations only
            assert stats["state"] == "serving" and len(bot.actions) >= 2
        assert server.alive()


def _ray_processes(server: Served, name: str) -> list[psutil.Process]:
    return [p for p in psutil.Process(server.proc.pid).children(recursive=True) if p.name() == name]


@pytest.mark.ray
@pytest.mark.slow  # about 50 s each; the injected health checks below cover the fatal path by default
@pytest.mark.parametrize("victim", ["raylet", "gcs_server"])
def test_a_lost_ray_cluster_stops_the_server_with_its_cause_after_telling_the_robot(tmp_path, victim):
    """Kill the server's Ray (its raylet: the node dies; or its GCS, after which Ray would end the server's
    process by itself within 60 s, silently for the robots). The server notices, publishes an `error`
    event to the connected robot, and exits with status 1 and the cause in its output."""
    with serving(tmp_path) as server, robot(server) as bot:
        bot.wait_action(-1, "first action", server)
        processes = _ray_processes(server, victim)
        assert len(processes) == 1, [p.name() for p in psutil.Process(server.proc.pid).children(recursive=True)]
        processes[0].kill()

        event = bot.wait_event("error", server, code="internal")
        assert "the server stops" in event["message"] and "Ray" in event["message"], event
        returncode = server.proc.wait(timeout=2 * DEADLINE_S)
    output = server.output()
    assert returncode == 1, output[-3000:]
    assert "bridge: fatal:" in output and "error: auras serve stopped:" in output, output[-3000:]


@pytest.mark.parametrize("failure", ["problem", "no_answer"])
def test_a_failed_health_check_is_fatal_announced_to_the_robot_and_raised(failure):
    """The fatal path without Ray: a server (tiny-dp, local backend, in this process) whose health check
    reports a problem, or stops answering for its deadline, publishes an `error` event to its robot
    and raises the cause from serve_forever (which `auras serve` turns into exit status 1)."""
    broken, released = threading.Event(), threading.Event()

    def check() -> str | None:
        if not broken.is_set():
            return None
        if failure == "problem":
            return "the cluster is gone"
        released.wait(DEADLINE_S)  # a check that hangs, as Ray's do without a GCS
        return None

    server = BridgeServer(load_config("pipeline-tiny-dp"), f"tcp://127.0.0.1:{free_service_port()}",
                          limits=ServeLimits(session_timeout_s=DEADLINE_S),
                          health_check=HealthWatchdog(check, period_s=0.05, deadline_s=1.0))
    raised: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever()
        except Exception as exc:  # recorded for the test
            raised.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    served = InProcess(server, thread, raised)
    try:
        with robot(served) as bot:
            bot.wait_action(-1, "first action", served)
            assert served.alive()  # healthy checks keep it serving
            broken.set()
            event = bot.wait_event("error", served, code="internal")
            thread.join(timeout=DEADLINE_S)
        assert not thread.is_alive() and len(raised) == 1 and isinstance(raised[0], WorkerDiedError)
        cause = "the cluster is gone" if failure == "problem" else "did not answer health checks"
        assert cause in str(raised[0]) and cause in event["message"] and "the server stops" in event["message"]
        assert server.failure is raised[0]
    finally:
        released.set()
        server.close()
