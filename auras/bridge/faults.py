"""A fault-injecting proxy for the auras ZeroMQ bridge (docs/bridge.md): how a robot behaves on a bad network.

    robot (RobotClient)  <->  FaultProxy (bind)  <->  auras serve (server)

The proxy binds its own three endpoints (service ``bind``; observations and actions next to it, as
``auras serve`` does: tcp ``PORT + 1`` / ``PORT + 2``, ipc ``PATH.obs`` / ``PATH.act``), so a robot
pointed at ``bind`` needs no change. Per channel:

- service (ROUTER here, DEALER to the server): every request goes to the server unchanged and every
  reply back to the request's own sender (ZeroMQ routing envelopes, no state kept per request). Not
  faulted: it is the control channel with its own timeouts. A request whose reply never comes (the
  server is dead) costs nothing here; a request that arrives while the server is down waits in the
  DEALER's queue, as it would in a robot's own REQ socket, and reaches the server when it is back
  (its reply then finds no sender, counted ``service.orphan_replies``, when the robot has given up on
  it). Every ``hello`` reply's ``publish_to``/``subscribe_to`` are rewritten to the proxy's endpoints,
  and the server's own (which may change when it restarts) are connected upstream.
- observations (PULL here, PUSH to the server's ``publish_to``): every message (one ``camera/<name>``,
  ``joint_states`` or ``extras/<name>``) gets the ``observations`` faults. While no server is connected
  they are lost (``overflow``), not queued: a restarted server never gets the old session's (a robot
  connected directly would hand it the few its own PUSH queued, answered ``unknown_session``).
- actions + status (SUB to everything on the server's ``subscribe_to``, PUB here): every message
  (``action/<session>``, ``status/<session>``, ``status``) gets the ``actions`` faults, for every session.

Faults, per message, in this order: dropped with probability ``drop``; else passed on, a second copy
right after it with probability ``duplicate``, and held back ``reorder_ms`` with probability
``reorder`` (so that later messages overtake it); every message passed on is also delayed
``delay_ms``. Each message draws the same three numbers from its direction's ``random.Random(seed)``
whatever happens to it, so the n-th message of a direction always meets the same fate. One thread
with a poller moves every message; delayed ones wait in a heap of (release time, counter, frames).
A message the outgoing socket refuses (its queue is full: the server is away or behind) is lost and
counted ``overflow``. Plain ZeroMQ only: a server run with ``--curve-secret`` cannot be proxied (the proxy
would have to end CurveZMQ on both sides).

:class:`ServerProcess` runs ``python -m auras.cli serve --bind SERVICE ARGS...`` as a child process
that a test or a measurement can kill (SIGKILL) and restart on the same address.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zmq

from auras_client.protocol import SCHEMA_VERSION, ProtocolError, decode_map, encode_map

__all__ = ["FaultProxy", "Faults", "ServerProcess", "data_endpoints"]

DIRECTIONS = ("observations", "actions")
LANE_COUNTERS = ("received", "forwarded", "dropped", "duplicated", "reordered", "overflow")
SERVICE_COUNTERS = ("requests", "replies", "rewritten_hellos", "orphan_replies", "refused_requests",
                    "upstream_changes")
POLL_MS = 20  # the longest the proxy thread sleeps: how soon close() is noticed
DRAIN = 256  # messages taken from one socket before the others get a turn
MAX_KINDS = 16  # topic kinds counted apart per direction (more: "other")
OBS_HWM = 1000  # messages queued towards a connected server (the proxy releases held messages in bursts)


@dataclass(frozen=True)
class Faults:
    """Fault rates of one direction. ``drop``, ``duplicate``, ``reorder``: probabilities in [0, 1];
    ``delay_ms``: extra delay of every message passed on; ``reorder_ms``: how much later a reordered
    message is released (it arrives after the messages of that window); ``seed``: of the direction's
    random numbers. ValueError names the field, its range and the value given."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    reorder_ms: float = 50.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name}: expected a probability in [0, 1], got {value!r}")
        for name in ("delay_ms", "reorder_ms"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Faults.{name}: expected a finite number of milliseconds >= 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"Faults.seed: expected an int, got {self.seed!r}")

    @property
    def none(self) -> bool:
        """True when nothing is changed (every message passes at once)."""
        return not (self.drop or self.duplicate or self.reorder or self.delay_ms)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def data_endpoints(service: str) -> tuple[str, str]:
    """(observation endpoint, action endpoint) next to a service endpoint, as ``auras serve`` binds them:
    tcp://HOST:PORT -> PORT + 1 and PORT + 2; ipc://PATH -> PATH.obs and PATH.act."""
    if service.startswith("tcp://"):
        host, sep, port = service[len("tcp://") :].rpartition(":")
        if sep and port.isdigit():
            return f"tcp://{host}:{int(port) + 1}", f"tcp://{host}:{int(port) + 2}"
    elif service.startswith("ipc://"):
        return service + ".obs", service + ".act"
    raise ValueError(f"expected tcp://HOST:PORT (numeric port) or ipc://PATH, got {service!r}")


def _reachable(endpoint: str, service: str) -> str:
    """A server's data endpoint as reached from here: tcp ports from the reply, host from the service address
    (as RobotClient does: a server bound to 0.0.0.0 cannot name its own address)."""
    if endpoint.startswith("tcp://") and service.startswith("tcp://"):
        host = service[len("tcp://") :].rpartition(":")[0]
        return f"tcp://{host}:{endpoint.rpartition(':')[2]}"
    return endpoint


class _Lane:
    """One faulted direction: its faults, its random numbers and its counters (in all, and per topic kind)."""

    def __init__(self, name: str, faults: Faults) -> None:
        self.name = name
        self.state = (faults, random.Random(faults.seed))  # swapped as one (set_faults, from another thread)
        self.counters: collections.Counter = collections.Counter({key: 0 for key in LANE_COUNTERS})
        self.kinds: dict[str, collections.Counter] = {}

    def count(self, kind: str, key: str) -> None:
        self.counters[key] += 1
        if kind not in self.kinds:
            kind = kind if len(self.kinds) < MAX_KINDS else "other"
            self.kinds.setdefault(kind, collections.Counter({key: 0 for key in LANE_COUNTERS}))
        self.kinds[kind][key] += 1

    @property
    def faults(self) -> Faults:
        return self.state[0]


class FaultProxy:
    """Sits between robots and ``auras serve`` at ``server`` and faults their data (see the module doc).

    ``bind``: the proxy's service endpoint (robots connect here); its observation and action endpoints are
    ``obs_bind``/``action_bind`` (default: next to ``bind``, as the server's are). ``observations`` and
    ``actions``: the faults of each direction, changeable while running with :meth:`set_faults`.
    :meth:`start` binds (ValueError when it cannot) and starts the thread; :meth:`close` never hangs.
    """

    def __init__(
        self,
        server: str,
        bind: str,
        observations: Faults | None = None,
        actions: Faults | None = None,
        *,
        obs_bind: str | None = None,
        action_bind: str | None = None,
    ) -> None:
        self.server, self.bind = server, bind
        default_obs, default_act = data_endpoints(bind)
        self.obs_bind, self.action_bind = obs_bind or default_obs, action_bind or default_act
        self._lanes = {"observations": _Lane("observations", observations or Faults()),
                       "actions": _Lane("actions", actions or Faults())}
        self._service: collections.Counter = collections.Counter({key: 0 for key in SERVICE_COUNTERS})
        self._lock = threading.Lock()  # the counters, read from other threads
        self._heap: list[tuple[float, int, zmq.Socket, _Lane, str, list[bytes]]] = []
        self._order = itertools.count()
        try:  # the server's data endpoints until a hello reply names them
            guessed = data_endpoints(server)
        except ValueError:
            guessed = None
        self.upstream: tuple[str, str] | None = (
            (_reachable(guessed[0], server), _reachable(guessed[1], server)) if guessed else None
        )
        self._ctx: zmq.Context | None = None
        self._sockets: dict[str, zmq.Socket] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what ended the proxy thread, if anything did

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Bind the proxy's endpoints, connect to the server and start forwarding; returns self."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy.start: already started")
        self._ctx = zmq.Context()
        try:
            front = self._socket("front", zmq.ROUTER)
            front.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply for a sender that is gone raises: counted
            self._bind(front, self.bind)
            self._bind(self._socket("obs_in", zmq.PULL), self.obs_bind)
            self._bind(self._socket("act_out", zmq.PUB), self.action_bind)
            self._socket("back", zmq.DEALER).connect(self.server)
            obs_out = self._socket("obs_out", zmq.PUSH)
            obs_out.setsockopt(zmq.IMMEDIATE, 1)  # nothing waits for a dead server (to reach its successor)
            obs_out.setsockopt(zmq.SNDHWM, OBS_HWM)
            self._socket("act_in", zmq.SUB).setsockopt(zmq.SUBSCRIBE, b"")  # every topic: every session
            if self.upstream is not None:
                self._sockets["obs_out"].connect(self.upstream[0])
                self._sockets["act_in"].connect(self.upstream[1])
        except BaseException:
            self._close_sockets()
            raise
        self._thread = threading.Thread(target=self._run, name="auras-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread (joined with a timeout) and close every socket (LINGER 0: queued and held
        messages are dropped). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_sockets()

    def __enter__(self) -> FaultProxy:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_faults(self, observations: Faults | None = None, actions: Faults | None = None) -> None:
        """Change a direction's faults (its random numbers restart from the new seed); None keeps it.
        Messages already held keep their release time."""
        for name, faults in (("observations", observations), ("actions", actions)):
            if faults is not None:
                self._lanes[name].state = (faults, random.Random(faults.seed))

    # -- reading ------------------------------------------------------------------------------------
    @property
    def counters(self) -> dict[str, dict[str, int]]:
        """Per direction (``observations``, ``actions``): ``received``; ``forwarded`` (passed on, each once:
        received - dropped); ``dropped``; ``duplicated`` (second copies sent); ``reordered`` (held back
        ``reorder_ms``); ``overflow`` (refused by the outgoing socket, lost: its queue was full, or no server
        was connected). ``service``: ``requests``, ``replies``, ``rewritten_hellos``, ``orphan_replies`` (their
        sender was gone), ``refused_requests`` (the queue to the server was full), ``upstream_changes``."""
        with self._lock:
            out = {name: dict(lane.counters) for name, lane in self._lanes.items()}
            out["service"] = dict(self._service)
        return out

    def stats(self) -> dict[str, Any]:
        """Counters, also per topic kind (``topics``: the topic up to its first ``/``: ``action``, ``status``,
        ``camera``, ``joint_states``, ``extras``), faults, endpoints and how many messages are held back now."""
        with self._lock:
            topics = {kind: dict(c) for lane in self._lanes.values() for kind, c in lane.kinds.items()}
        return {
            "counters": self.counters, "topics": topics,
            "faults": {name: asdict(lane.faults) for name, lane in self._lanes.items()},
            "server": self.server, "bind": self.bind, "obs_bind": self.obs_bind, "action_bind": self.action_bind,
            "upstream": list(self.upstream) if self.upstream else None,
            "held": len(self._heap), "running": self._thread is not None and self._thread.is_alive(),
            "error": repr(self.error) if self.error is not None else None,
        }

    # -- sockets ------------------------------------------------------------------------------------
    def _socket(self, name: str, kind: int) -> zmq.Socket:
        assert self._ctx is not None
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self._sockets[name] = sock
        return sock

    @staticmethod
    def _bind(sock: zmq.Socket, endpoint: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ValueError(f"FaultProxy: cannot bind {endpoint}: {exc}") from None

    def _close_sockets(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # never close sockets under a running thread (it polls them): leak rather than crash
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # -- the proxy thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        s = self._sockets
        poller = zmq.Poller()
        handlers = {s["front"]: self._on_request, s["back"]: self._on_reply,
                    s["obs_in"]: lambda parts: self._fault(self._lanes["observations"], s["obs_out"], parts),
                    s["act_in"]: lambda parts: self._fault(self._lanes["actions"], s["act_out"], parts)}
        for sock in handlers:
            poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                wait = POLL_MS if not self._heap else (self._heap[0][0] - time.monotonic()) * 1000
                for sock, _ in poller.poll(max(0, min(POLL_MS, math.ceil(wait)))):
                    for _ in range(DRAIN):
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        handlers[sock](parts)
                self._release(time.monotonic())
        except BaseException as exc:  # a bug: keep it for stats() and close(), do not die silently
            self.error = exc
            raise

    def _on_request(self, parts: list[bytes]) -> None:
        with self._lock:
            self._service["requests"] += 1
        try:
            self._sockets["back"].send_multipart(parts, zmq.NOBLOCK)
        except zmq.Again:  # the queue to a dead server is full: the robot's request times out, as it would
            with self._lock:
                self._service["refused_requests"] += 1

    def _on_reply(self, parts: list[bytes]) -> None:
        if b"publish_to" in parts[-1]:
            parts = [*parts[:-1], self._rewrite(parts[-1])]
        with self._lock:
            self._service["replies"] += 1
        try:
            self._sockets["front"].send_multipart(parts, zmq.NOBLOCK)
        except zmq.ZMQError:  # EHOSTUNREACH (the REQ socket that asked was replaced) or a full queue
            with self._lock:
                self._service["orphan_replies"] += 1

    def _rewrite(self, body: bytes) -> bytes:
        """A hello reply: connect upstream to the server's data endpoints, tell the robot the proxy's."""
        try:
            reply = decode_map(body)
        except ProtocolError:
            return body
        publish_to, subscribe_to = reply.get("publish_to"), reply.get("subscribe_to")
        if not (reply.get("ok") and isinstance(publish_to, str) and isinstance(subscribe_to, str)):
            return body
        upstream = (_reachable(publish_to, self.server), _reachable(subscribe_to, self.server))
        if upstream != self.upstream:
            for index, name in enumerate(("obs_out", "act_in")):
                old, new = (self.upstream[index] if self.upstream else None), upstream[index]
                if old != new:
                    if old is not None:
                        with contextlib.suppress(zmq.ZMQError):
                            self._sockets[name].disconnect(old)
                    self._sockets[name].connect(new)
            self.upstream = upstream
            with self._lock:
                self._service["upstream_changes"] += 1
        with self._lock:
            self._service["rewritten_hellos"] += 1
        return encode_map({**reply, "publish_to": self.obs_bind, "subscribe_to": self.action_bind})

    def _fault(self, lane: _Lane, out: zmq.Socket, parts: list[bytes]) -> None:
        faults, rng = lane.state
        drop, duplicate, reorder = rng.random(), rng.random(), rng.random()  # always three: fates by index
        kind = bytes(parts[0][:64]).split(b"/", 1)[0].decode("utf-8", "replace")
        with self._lock:
            lane.count(kind, "received")
            if drop < faults.drop:
                lane.count(kind, "dropped")
                return
            lane.count(kind, "forwarded")
            copies = 1
            if duplicate < faults.duplicate:
                lane.count(kind, "duplicated")
                copies = 2
            delay = faults.delay_ms
            if reorder < faults.reorder:
                lane.count(kind, "reordered")
                delay += faults.reorder_ms
        release = time.monotonic() + delay / 1000
        for _ in range(copies):
            heapq.heappush(self._heap, (release, next(self._order), out, lane, kind, parts))
        if delay <= 0:
            self._release(release)

    def _release(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, out, lane, kind, parts = heapq.heappop(self._heap)
            try:
                out.send_multipart(parts, zmq.NOBLOCK)
            except zmq.Again:  # the server's queue is full (it is away or behind): lost here
                with self._lock:
                    lane.count(kind, "overflow")


class ServerProcess:
    """``python -m auras.cli serve --bind SERVICE ARGS...`` as a child process (e.g. ARGS = ``["--policy",
    "tiny-dp"]``), its output appended to ``log_path`` (default: a temporary file). :meth:`kill` is SIGKILL
    (nothing is closed cleanly), :meth:`restart` starts it again on the same ``service``, :meth:`wait_ready`
    waits until it answers ``health``. Context manager: stops the server on exit."""

    def __init__(self, args: Sequence[str] = (), service: str = "tcp://127.0.0.1:5555", *,
                 env: dict[str, str] | None = None, log_path: str | os.PathLike | None = None) -> None:
        self.args, self.service = list(args), service
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("MUJOCO_GL", "egl")
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="auras-serve-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "auras.cli", "serve", "--bind", self.service, *self.args]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ServerProcess:
        """Start the server (it is ready once :meth:`wait_ready` returns); returns self."""
        if self.running:
            raise RuntimeError(f"ServerProcess.start: already running (pid {self.process.pid})")
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def kill(self) -> None:
        """SIGKILL the server and reap it (a crash: sessions, sockets and agents are not closed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> ServerProcess:
        """Kill the server if it runs and start it again on the same service address."""
        self.kill()
        return self.start()

    def wait_ready(self, timeout: float = 60.0, poll_s: float = 0.25) -> float:
        """Ask ``health`` (a fresh REQ socket per try, ``poll_s`` each) until the server answers; returns the
        wall time (``time.time()``) of its first answer: the server is back. TimeoutError after ``timeout``
        s, RuntimeError if the process exits meanwhile (both with the end of its log)."""
        deadline = time.monotonic() + timeout
        ctx = zmq.Context()
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"auras serve exited with {self.process.returncode}:\n{self.log_tail()}")
                sock = ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                try:
                    sock.connect(self.service)
                    sock.send(encode_map({"v": SCHEMA_VERSION, "op": "health"}))
                    if sock.poll(int(poll_s * 1000)):
                        answered = time.time()
                        if decode_map(sock.recv()).get("ok"):
                            return answered
                finally:
                    sock.close(linger=0)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.service}: no health answer within {timeout} s:\n{self.log_tail()}")
        finally:
            ctx.term()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
