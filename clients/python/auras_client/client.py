"""The robot side of the auras bridge: needs only numpy, pyzmq and msgpack (no torch, no ray).

    from auras_client import RobotClient

    with RobotClient("tcp://127.0.0.1:5555", cameras={"front": (84, 84)}, state_dim=4,
                     instruction="push the puck to the green goal", ttl_s=0.25) as robot:
        while running:
            robot.publish({"front": camera.read()}, joint_states())      # any rate; never blocks
            action = robot.take_action()                                  # newest fresh action or None
            if action is not None:
                apply(action.chunk)

or with a callback: ``RobotClient(..., on_action=apply)``. A background thread receives actions
(newest wins), sends a heartbeat, and after a server restart says hello again with exponential
backoff, re-subscribing to the new session's topics; meanwhile ``take_action`` returns None and
``connected`` is False. An action older than ``ttl_s`` (robot clock, from the capture stamp of the
newest observation that influenced it, its context) is never handed out.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from auras_client.control import RobotControl
from auras_client.protocol import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    ProtocolError,
    decode_frame,
    decode_map,
    encode_frame,
    encode_map,
)

__all__ = ["ReceivedAction", "RobotClient", "ServiceError"]


class ServiceError(RuntimeError):
    """The server answered a service request with an error (``code`` from the protocol)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class ReceivedAction:
    """An action from the agent. chunk: (H, A) float32; seq: the observation it answers;
    stamp: that observation's capture stamp (robot clock); header: every timing the server sent."""

    chunk: np.ndarray
    seq: int
    stamp: float
    received: float
    header: dict[str, Any]

    @property
    def context_seq(self) -> int:
        """The newest observation that influenced the action (in a pipeline with a public context,
        newer than ``seq``); ``seq`` when the server did not say."""
        context = self.header.get("context_seq")
        return int(context) if isinstance(context, int) and not isinstance(context, bool) else self.seq

    @property
    def order(self) -> tuple[int, int]:
        """How actions rank by freshness: by their newest input (``context_seq``), then by ``seq``. A
        pipeline filling up emits several actions for one ``seq``, each with a newer context: every
        one of them is fresher than the last."""
        return (self.context_seq, self.seq)

    @property
    def context_stamp(self) -> float:
        """Capture stamp of the newest observation that influenced the action (``context_seq``: in a
        pipeline, fresher than ``seq``); ``stamp`` when the server did not say."""
        stamp = self.header.get("context_stamp")
        return float(stamp) if isinstance(stamp, int | float) and stamp > 0 else self.stamp

    def age(self, now: float | None = None) -> float:
        """Seconds since the newest observation that influenced this action was captured (robot
        clock): a pipelined action whose own request is several camera periods old but whose context
        is fresh is young."""
        return (time.time() if now is None else now) - self.context_stamp


class RobotClient:
    """A robot's connection to `auras serve` (see module doc). Thread-safe for one publisher thread
    plus any number of readers."""

    def __init__(
        self,
        server: str = "tcp://127.0.0.1:5555",
        *,
        cameras: Mapping[str, tuple[int, int]] = (("front", (84, 84)),),
        state_dim: int = 4,
        instruction: str = "do the task",
        robot: str = "robot",
        extras: tuple[str, ...] = (),
        ttl_s: float = 0.25,
        encoding: str = "raw",
        timeout_s: float = 2.0,
        heartbeat_s: float = 0.5,
        on_action: Callable[[ReceivedAction], None] | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        server_public_key: bytes | None = None,
        client_keys: tuple[bytes, bytes] | None = None,
        connect: bool = True,
        contract: Mapping[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.contract = dict(contract) if contract is not None else None  # rate_hz, staleness_ms, accept_lower_rate
        self.cameras = {k: tuple(v) for k, v in dict(cameras).items()}
        self.state_dim, self.instruction, self.robot, self.extras = state_dim, instruction, robot, tuple(extras)
        self.ttl_s, self.encoding, self.timeout_s, self.heartbeat_s = ttl_s, encoding, timeout_s, heartbeat_s
        self.on_action, self.on_status = on_action, on_status
        self.reachable = True
        self.server_state = "serving"  # the session's state on the server, from heartbeats
        self.hello_timeout_s = 30.0  # hello and reset build or reset an agent on the server: allow longer
        self._curve = (server_public_key, client_keys or zmq.curve_keypair()) if server_public_key else None
        self._ctx = zmq.Context()
        self._req_lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._req: zmq.Socket | None = None
        self._push: zmq.Socket | None = None
        self._sub: zmq.Socket | None = None
        self._endpoints: tuple[str, str] | None = None
        self.session: str | None = None
        self.server_info: dict[str, Any] = {}
        self._latest: ReceivedAction | None = None
        self._taken: tuple[int, int] = (-1, -1)  # order of the last action take_action handed out
        self._expired: tuple[int, int] = (-1, -1)  # order of the last action counted as expired
        self._resubscribe = threading.Event()
        self._next_seq = 0
        self._min_action_seq = 0  # actions answering observations older than the last reset are ignored
        self._episode_actions = 0  # actions of this episode received (see episode_actions)
        self._ids = itertools.count()
        self._hello_lock = threading.Lock()  # one re-hello at a time (see _hello_again)
        self._recent: dict[tuple, None] = {}  # keys of the last messages received (copies are dropped)
        self.counters: collections.Counter = collections.Counter()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if connect:
            try:
                self.connect()
            except BaseException:  # a refused hello must not leave sockets behind (their context would hang
                self.close()  # the interpreter when collected)
                raise

    # -- sockets ------------------------------------------------------------------------------------
    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            server_key, (public, secret) = self._curve
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_key, public, secret
        return sock

    def _new_req(self) -> None:
        if self._req is not None:
            self._req.close(linger=0)
        self._req = self._socket(zmq.REQ)
        self._req.connect(self.server)

    # -- service channel ----------------------------------------------------------------------------
    def request(self, op: str, timeout_s: float | None = None, **fields: Any) -> dict[str, Any]:
        """One service request with a deadline (``timeout_s``, default the client's); raises TimeoutError
        or ServiceError. A timed-out request socket is replaced (REQ cannot be reused after a lost reply).
        Every op but ``hello`` names this client's session unless ``session=None`` is passed (server-wide
        ``stats`` and ``health``)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        message = {"v": SCHEMA_VERSION, "op": op, "id": next(self._ids), **fields}
        if self.session is not None and op != "hello":
            message.setdefault("session", self.session)
        if message.get("session", 0) is None:
            del message["session"]
        with self._req_lock:
            if self._req is None:
                self._new_req()
            self._req.send(encode_map(message))
            if not self._req.poll(int(timeout_s * 1000)):
                self._new_req()
                self.counters["timeouts"] += 1
                raise TimeoutError(f"{op}: no reply from {self.server} within {timeout_s} s")
            reply = decode_map(self._req.recv())
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise ServiceError(str(error.get("code", "unknown")), str(error.get("message", reply)))
        return reply

    def hello(self) -> dict[str, Any]:
        """Open a session (schema negotiation); (re)connects the data sockets to what the server says."""
        reply = self.request(
            "hello", timeout_s=max(self.timeout_s, self.hello_timeout_s), versions=list(SUPPORTED_VERSIONS),
            robot=self.robot, state_dim=self.state_dim, extras=list(self.extras),
            cameras={k: list(v) for k, v in self.cameras.items()}, instruction=self.instruction,
            **({"contract": self.contract} if self.contract is not None else {}),
        )
        with self._state_lock:
            self.session, self.server_info = reply["session"], reply
            endpoints = (self._reachable(reply["publish_to"]), self._reachable(reply["subscribe_to"]))
            if endpoints != self._endpoints:
                with self._push_lock:
                    if self._push is not None:
                        self._push.close(linger=0)
                    self._push = self._socket(zmq.PUSH)
                    self._push.setsockopt(zmq.SNDHWM, 4 * (len(self.cameras) + 2))  # ~4 observations queued
                    self._push.connect(endpoints[0])
                self._endpoints = endpoints
            self._latest, self._episode_actions = None, 0
            self._taken = (-1, -1)
        self._resubscribe.set()
        self.counters["hellos"] += 1
        return reply

    def _hello_again(self, lost: str | None) -> None:
        """Say hello again because session ``lost`` is gone, unless another thread already did: the receiver
        (after a heartbeat answered ``unknown_session``) and ``reset`` may both find out; one new session."""
        with self._hello_lock:
            if self.session is not None and self.session != lost:
                return
            if self.session is not None:
                self.counters["session_lost"] += 1
                self.session = None  # publish() sends nothing until the new session exists
            self.hello()

    def _reachable(self, endpoint: str) -> str:
        """The server's data endpoint as this robot reaches it: tcp ports from the reply, host from the
        address we used (a server bound to 0.0.0.0 or * cannot tell us its own address)."""
        if endpoint.startswith("tcp://") and self.server.startswith("tcp://"):
            host = self.server[len("tcp://") :].rpartition(":")[0]
            return f"tcp://{host}:{endpoint.rpartition(':')[2]}"
        return endpoint

    def reset(self) -> dict[str, Any]:
        """Start a new episode on the server (drops in-flight work); forgets held actions. A server that
        restarted (and so no longer knows the session) gets a hello first."""
        with self._state_lock:
            from_seq = self._next_seq  # the server ignores anything older still in flight
        timeout_s = max(self.timeout_s, self.hello_timeout_s)
        session = self.session
        try:
            reply = self.request("reset", timeout_s=timeout_s, from_seq=from_seq)
        except ServiceError as exc:
            if exc.code != "unknown_session":
                raise
            self._hello_again(session)
            reply = self.request("reset", timeout_s=timeout_s, from_seq=from_seq)
        with self._state_lock:
            self._latest, self._taken = None, (-1, -1)
            self._min_action_seq, self._episode_actions = from_seq, 0
        self.server_state = "serving"  # a reset restarts a failed agent's stream
        return reply

    def control(self, control_hz: float, **options: Any) -> RobotControl:
        """The control-loop face (:class:`~auras_client.control.RobotControl`): call its ``step`` once per
        control tick for the row to apply, the server's staleness strategy and the deadline fallback carried
        out here. ``options``: camera_hz, strategy, deadline_s, fallback, clock."""
        return RobotControl(self, control_hz, **options)

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Change session settings (e.g. instruction=...)."""
        reply = self.request("configure", **fields)
        self.instruction = fields.get("instruction", self.instruction)
        return reply

    def health(self) -> dict[str, Any]:
        return self.request("health")

    def stats(self, *, server: bool = False) -> dict[str, Any]:
        """The counters of the client's robot session; with ``server=True`` the server-wide ones (every
        robot session's, without ids)."""
        return self.request("stats", session=None) if server else self.request("stats")

    # -- connection ---------------------------------------------------------------------------------
    def connect(self) -> RobotClient:
        """Say hello and start the receiver thread. The hello waits up to ``hello_timeout_s`` (30 s): a
        server that starts meanwhile still gets it (ZeroMQ queues it until the connection exists), and
        building the agent may take seconds. Raises TimeoutError or ServiceError."""
        self.hello()
        self._thread = threading.Thread(target=self._run, name="auras-robot-client", daemon=True)
        self._thread.start()
        self.wait_subscribed(self.timeout_s)
        return self

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Ask the server for echo events until one of this client's own arrives (up to ``timeout_s``): from
        then on no action can be missed because the subscription was still travelling (PUB/SUB's slow
        joiner). ``connect`` calls it; False (and ``counters["subscription_unconfirmed"]``) if none came."""
        deadline = time.monotonic() + timeout_s
        asked: set[int] = set()  # only an echo of one of these requests proves this subscription
        while time.monotonic() < deadline:
            request_id = next(self._ids)
            asked.add(request_id)
            with contextlib.suppress(TimeoutError, ServiceError):
                self.request("health", echo=True, id=request_id)
            end = min(deadline, time.monotonic() + 0.1)
            while time.monotonic() < end:
                if any(e.get("event") == "echo" and e.get("id") in asked for e in list(self.events)):
                    return True
                time.sleep(0.005)
        self.counters["subscription_unconfirmed"] += 1
        return False

    @property
    def connected(self) -> bool:
        """A session exists and the last heartbeat was answered."""
        return self.session is not None and self.reachable

    def _run(self) -> None:
        self._sub = self._socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 100)
        poller = zmq.Poller()  # one poller for the thread's life (Socket.poll builds one per call)
        poller.register(self._sub, zmq.POLLIN)
        subscribed: tuple[str, ...] = ()
        next_beat = time.monotonic() + self.heartbeat_s
        backoff = 0.1
        while not self._stop.is_set():
            if self._resubscribe.is_set():
                self._resubscribe.clear()
                subscribed = self._subscribe(subscribed)
            if poller.poll(20):  # the deadline on every receive
                self._receive()
            now = time.monotonic()
            if now < next_beat:
                continue
            try:
                if self.session is None:
                    self._hello_again(None)
                else:
                    beating = self.session
                    try:
                        self._beat(self.request("health"))
                    except ServiceError as exc:
                        if exc.code != "unknown_session":
                            raise
                        self._hello_again(beating)  # the server restarted or expired us: hello again now
                self.reachable, backoff = True, 0.1
                next_beat = now + self.heartbeat_s
                continue
            except ServiceError as exc:
                self.reachable = True
                self.counters[f"heartbeat_error_{exc.code}"] += 1
            except (TimeoutError, zmq.ZMQError):  # server away: keep the session, retry with backoff
                self.reachable = False
                self.counters["reconnect_attempts"] += 1
            next_beat = now + backoff
            backoff = min(2 * backoff, 2.0)
        self._sub.close(linger=0)

    def _beat(self, reply: dict[str, Any]) -> None:
        state = reply.get("session_state", "serving")
        if state != self.server_state:
            self.server_state = state
            if state == "failed":  # the agent failed on the server: the robot must reset (or give up)
                self.counters["agent_failed"] += 1
                event = {"event": "session_state", "state": state}
                self.events.append(event)
                if self.on_status is not None:
                    self.on_status(event)

    def _subscribe(self, old: tuple[str, ...]) -> tuple[str, ...]:
        if self._endpoints is not None and getattr(self, "_sub_endpoint", None) != self._endpoints[1]:
            if getattr(self, "_sub_endpoint", None) is not None:
                self._sub.disconnect(self._sub_endpoint)
            self._sub.connect(self._endpoints[1])
            self._sub_endpoint = self._endpoints[1]
        for topic in old:
            self._sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        topics = (self.server_info["action_topic"], self.server_info["status_topic"])
        for topic in topics:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        return topics

    def _receive(self) -> None:
        for _ in range(64):
            if not self._sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # cheaper than raising zmq.Again
                return
            try:  # POLLIN can still be premature: Again is no error
                parts = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                frame = decode_frame(parts)
            except ProtocolError:
                self.counters["bad_messages"] += 1
                continue
            if self._is_copy(frame):  # the network delivered this message twice: drop the copy
                self.counters["duplicate_actions" if frame.topic.startswith("action/") else "duplicate_events"] += 1
                continue
            if frame.header.get("session") not in (None, self.session) and frame.topic.startswith("action/"):
                continue  # an action of a previous session
            if frame.topic.startswith("action/"):
                self._on_action_frame(frame)
            else:
                event = {k: v for k, v in frame.header.items() if k != "arrays"}
                self.events.append(event)
                if event.get("event") == "error":
                    self.counters[f"server_error_{event.get('code')}"] += 1
                if self.on_status is not None:
                    self.on_status(event)

    def _is_copy(self, frame: Any) -> bool:
        """A message seen before: same topic, seq, stamp, server send time and context (a server that answers
        one observation again, as a filling pipeline does, sends it with another context)."""
        header = frame.header
        key = (frame.topic, header.get("seq"), header.get("stamp"), header.get("sent_monotonic"),
               header.get("context_seq"), header.get("context_stamp"))
        if key in self._recent:
            return True
        self._recent[key] = None
        if len(self._recent) > 512:
            del self._recent[next(iter(self._recent))]
        return False

    def _on_action_frame(self, frame: Any) -> None:
        if len(frame.arrays) != 1 or frame.arrays[0].ndim != 2 or frame.arrays[0].dtype != np.float32:
            self.counters["bad_messages"] += 1
            return
        action = ReceivedAction(np.array(frame.arrays[0]), frame.seq, frame.stamp, time.time(), frame.header)
        self.counters["actions"] += 1
        with self._state_lock:
            if action.seq < self._min_action_seq:
                self.counters["before_reset"] += 1
                return
            self._episode_actions += 1
            if self._latest is not None and action.order <= self._latest.order:
                self.counters["not_newer"] += 1  # a repeat or a reordered action
                return
            self._latest = action
        if self.on_action is not None and action.age() <= self.ttl_s:
            self.on_action(action)

    # -- data ---------------------------------------------------------------------------------------
    def publish(
        self,
        images: Mapping[str, np.ndarray],
        state: np.ndarray,
        *,
        stamp: float | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
    ) -> int | None:
        """Publish one observation (every declared camera + joint state, same seq); returns its seq, or
        None when it was not sent: no session (the server is away; counted ``unsent``) or the send queue
        is full (the server is behind; counted ``dropped_at_client``)."""
        session = self.session
        if session is None:
            self.counters["unsent"] += 1
            return None
        with self._state_lock:
            seq, self._next_seq = self._next_seq, self._next_seq + 1
        stamp = time.time() if stamp is None else stamp
        state = np.asarray(state, dtype=np.float32)
        messages = [encode_frame(f"camera/{name}", [images[name]], seq=seq, stamp=stamp, session=session,
                                 encoding=self.encoding) for name in self.cameras]
        for name, values in (extras or {}).items():
            messages.append(encode_frame(f"extras/{name}", [np.asarray(values, np.float64)], seq=seq, stamp=stamp,
                                         session=session))
        messages.append(encode_frame("joint_states", [state], seq=seq, stamp=stamp, session=session))
        with self._push_lock:
            self._push.getsockopt(zmq.EVENTS)  # let libzmq process pending queue-space updates first
            try:
                for frames in messages:
                    self._push.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:  # the server is behind or away: this observation is dropped here, counted
                self.counters["dropped_at_client"] += 1
                return None
        self.counters["published"] += 1
        return seq

    def latest_action(self, now: float | None = None) -> ReceivedAction | None:
        """The newest action if it is younger than ``ttl_s``, else None (counted as expired)."""
        with self._state_lock:
            action = self._latest
        if action is None:
            return None
        if action.age(now) > self.ttl_s:
            if action.order != self._expired:
                self._expired = action.order
                self.counters["expired"] += 1  # distinct actions that aged out before being used
            return None
        return action

    @property
    def episode_actions(self) -> int:
        """Actions received since the last hello or reset that answer this episode's observations,
        repeats included (one per observation the agent took); counted once :meth:`newest_action`
        reflects them."""
        with self._state_lock:
            return self._episode_actions

    def newest_action(self) -> ReceivedAction | None:
        """The freshest action received since the last hello or reset, whatever its age (for a robot
        loop that judges age itself); :meth:`latest_action` applies ``ttl_s``."""
        with self._state_lock:
            return self._latest

    def take_action(self, now: float | None = None) -> ReceivedAction | None:
        """Like :meth:`latest_action` but each action is handed out once (None when nothing new)."""
        action = self.latest_action(now)
        with self._state_lock:
            if action is None or action.order <= self._taken:
                return None
            self._taken = action.order
        return action

    # -- teardown -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the receiver, say bye (best effort), close the sockets. Idempotent. The receiver stops first:
        a heartbeat sent after the bye would find no session and count a lost one."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.session is not None:
            try:
                self.timeout_s = min(self.timeout_s, 0.5)
                self.request("bye")
            except (TimeoutError, ServiceError, zmq.ZMQError):
                pass
        for sock in (self._req, self._push):
            if sock is not None:
                sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> RobotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
