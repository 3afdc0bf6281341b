"""`auras serve`: an AurasAgent per robot session behind the ZeroMQ bridge (docs/bridge.md).

Each session has its own pipeline; by default (``serve.perception=auto``) the sessions share one
perception model whose calls are batched across robots (:func:`session_agents`).

Three sockets, all bound by the server (loopback unless told otherwise):

- service ROUTER at the bind address: ``hello``, ``reset``, ``configure``, ``health``, ``stats``, ``bye``;
- observation PULL (service port + 1): robots push ``camera/<name>``, ``joint_states`` and
  ``extras/<name>`` frames tagged with their session (PUSH, not PUB: nothing is lost while a robot's
  connection comes up, robots are served fairly, and a robot sees its own overload as a failed send);
- action PUB (service port + 2): ``action/<session>`` per action, ``status/<session>`` and ``status``
  once a second.

One thread owns the service and observation sockets and assembles observations: a sequence number is
complete once every declared camera and the joint state have arrived; it is submitted to the
session's :class:`~auras.stream.ActionStream` (drop-oldest), and older incomplete ones are counted as
dropped. One thread per session publishes that session's actions. Every bad message is answered (a
service error reply, or an ``error`` event on the session's status topic) and counted; nothing a
client sends can stop the server.

Sessions (admission, building, streams, accounting, expiry) live in :mod:`auras.bridge.sessions`, the
limits every protocol enforces in :mod:`auras.bridge.limits`; this module keeps the sockets, the loop,
the dispatch of operations and the publishing.

What can stop it is fatal: an exception escaping the loop, or (sessions on the Ray backend) the Ray
cluster lost, which a watchdog thread checks every few seconds (:mod:`auras.bridge.health`). The
server then logs the cause, publishes an ``error`` event (code ``internal``) to every session and
raises it from :meth:`BridgeServer.serve_forever` (``auras serve`` exits with status 1).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from auras.bridge.assembler import ObservationAssembler
from auras.bridge.contracts import Performance, hold_contract
from auras.bridge.health import HealthWatchdog
from auras.bridge.limits import ServeLimits, exposure_warning, policy_limits
from auras.bridge.service import (
    SLOW_OPS,
    check_layout,
    check_op,
    parse_configure,
    parse_hello,
    parse_reset,
    parse_session_id,
)
from auras.bridge.sessions import Session, SessionHost, check_instruction
from auras.bridge.transport import CurveKeys, SocketFactory, data_endpoints
from auras.bridge.wiring import describe_workers, ray_cluster_problem, session_agents
from auras.errors import AurasError, InvalidInputError, clip
from auras.staleness import EXECUTOR_SETTINGS, resolve_strategy
from auras_client.protocol import (
    SCHEMA_VERSION,
    ProtocolError,
    decode_frame,
    decode_map,
    encode_frame,
    encode_map,
    error_reply,
)

__all__ = ["BridgeServer", "CurveKeys", "Session"]

log = logging.getLogger("auras.bridge")
PENDING_SEQS = 8  # incomplete sequence numbers kept per session before the oldest is dropped
STATUS_PERIOD_S = 1.0
CLOSE_LINGER_MS = 500  # how long close() lets queued events (a fatal error) reach the robots


class BridgeServer:
    """Serves ``agent_factory()`` agents (one per robot session) over ZeroMQ.

    ``agent_factory`` builds a fresh :class:`~auras.agent.AurasAgent` (default: from ``config``);
    ``limits`` (default: ``config.serve``'s) caps sessions, silence and message sizes; ``health_check``
    (a callable returning a problem or None, or a :class:`~auras.bridge.health.HealthWatchdog`; default on
    the Ray backend: the cluster's health) is watched while serving. Start with :meth:`start` (background
    thread) or :meth:`serve_forever`; stop with :meth:`close`.
    """

    def __init__(
        self,
        config: Any = None,
        bind: str = "tcp://127.0.0.1:5555",
        *,
        agent_factory: Callable[[], Any] | None = None,
        curve: CurveKeys | None = None,
        limits: ServeLimits | None = None,
        health_check: Callable[[], str | None] | HealthWatchdog | None = None,
    ) -> None:
        batcher = None
        if agent_factory is None:
            agent_factory, batcher = session_agents(config)
        if limits is None:
            limits = ServeLimits.from_config(config.serve) if config is not None else ServeLimits()
        self.limits = limits
        self.host = SessionHost(agent_factory, batcher, limits)
        if health_check is None and config is not None and config.pipeline.backend == "ray":
            health_check = ray_cluster_problem
        if health_check is not None and not isinstance(health_check, HealthWatchdog):
            health_check = HealthWatchdog(health_check)
        self._health = health_check
        self.failure: BaseException | None = None  # the fatal error that stopped serve_forever
        self.bind = bind
        self.obs_endpoint, self.action_endpoint = data_endpoints(bind)
        self._sockets = SocketFactory(limits.max_message_bytes, curve)
        self._pub_lock = threading.Lock()  # the PUB socket (used by session threads)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._replies: queue.Queue[list[bytes]] = queue.Queue()
        self._status_seq = itertools.count()
        self.counters: Counter = self.host.counters
        self.started = time.monotonic()
        host = bind.split("://", 1)[-1].rsplit(":", 1)[0]
        self.warning = exposure_warning(bind, host, curve is not None, "use --curve-secret (see `auras keys`)")
        if self.warning:
            log.warning("bridge: %s", self.warning)
        try:
            self._router = self._sockets.bind(zmq.ROUTER, bind)
            self._pull = self._sockets.bind(zmq.PULL, self.obs_endpoint)
            self._pub = self._sockets.bind(zmq.PUB, self.action_endpoint)
        except InvalidInputError:
            self.close()
            raise

    @property
    def batcher(self) -> Any:
        """The perception shared by the sessions (``serve.perception``), or None."""
        return self.host.batcher

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> BridgeServer:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="auras-bridge", daemon=True)
        self._thread.start()
        return self

    @property
    def serving(self) -> bool:
        """True while the background serving thread (:meth:`start`) runs."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """The server's counters, every session's (without ids) and the shared perception's, as the
        ``stats`` operation answers without a session."""
        return self._stats({})

    def request_stop(self) -> None:
        """Ask the serving loop to end (safe from a signal handler); :meth:`close` then releases everything."""
        self._stop.set()

    def serve_forever(self) -> None:
        """The server loop: services, observations, status and session expiry, until :meth:`close`.
        A fatal error (see the module doc) is logged, announced to every session and raised."""
        try:
            self._serve_loop()
        except Exception as exc:
            if self._stop.is_set() and isinstance(exc, zmq.ZMQError):
                return  # close() from another thread closed the sockets under the loop
            self._fail(exc)
            raise
        finally:
            if self._health is not None:
                self._health.stop()

    def _serve_loop(self) -> None:
        if self._health is not None:
            self._health.start()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        next_status = time.monotonic()
        self._loop_thread = threading.current_thread()
        while not self._stop.is_set():
            self._send_replies()
            ready = dict(poller.poll(timeout=5 if self._replies.empty() else 0))  # a deadline on every receive
            if self._router in ready:
                self._drain(self._router, self._on_request)
            if self._pull in ready:
                self._drain(self._pull, self._on_data)
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_PERIOD_S
                if self._health is not None:
                    self._health.raise_if_lost()
                self._expire(now)
                self._publish_status()

    def _fail(self, exc: BaseException) -> None:
        """A fatal error: log it with its cause and tell every session's robot, before the loop ends."""
        self.failure = exc
        self.counters["fatal_errors"] += 1
        if isinstance(exc, AurasError):
            log.critical("bridge: fatal: %s; the server stops", exc)
        else:
            log.critical("bridge: fatal: unexpected %r; the server stops", exc, exc_info=exc)
        message = clip(f"the server stops: {type(exc).__name__}: {exc}")
        for session in [*self.host.sessions(), None]:  # None: the global status topic
            with contextlib.suppress(Exception):
                self._publish_event(session, {"event": "error", "code": "internal", "message": message})

    def _drain(self, sock: zmq.Socket, handle: Callable[[list[Any]], None], limit: int = 256) -> None:
        for _ in range(limit):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # cheaper than a zmq.Again per drain
                return
            try:  # POLLIN can still be premature (a CURVE handshake in progress): Again is no error
                parts = sock.recv_multipart(zmq.NOBLOCK)  # copies: for messages this size faster than Frames
            except zmq.Again:
                return
            try:
                handle(parts)
            except Exception as exc:  # a bug must not stop the server: count it, log it, go on
                self.counters["internal_errors"] += 1
                log.exception("bridge: unexpected error handling a message: %s", clip(repr(exc)))

    def close(self) -> None:
        """Stop serving, close every session's agent and the sockets. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.host.close()
        for name in ("_router", "_pull", "_pub"):
            sock = getattr(self, name, None)
            if sock is not None:  # the PUB socket gets a moment to deliver the last events (a fatal error)
                sock.close(linger=CLOSE_LINGER_MS if name == "_pub" else 0)
        self._sockets.close()

    def __enter__(self) -> BridgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- service channel ----------------------------------------------------------------------------
    def _on_request(self, parts: list[Any]) -> None:
        envelope, body = [bytes(p) for p in parts[:-1]], bytes(parts[-1])  # identity (+ empty delimiter)
        try:
            request = decode_map(body)
        except ProtocolError as exc:
            self.counters[f"error_{exc.code}"] += 1
            self._router.send_multipart([*envelope, encode_map(error_reply(exc.code, exc.message))])
            return
        if request.get("op") in SLOW_OPS:  # building or resetting an agent: never stall other robots
            threading.Thread(target=self._answer, args=(envelope, request), daemon=True).start()
        else:
            self._answer(envelope, request)

    def _answer(self, envelope: list[bytes], request: dict[str, Any]) -> None:
        try:
            reply = self._serve(request)
        except ProtocolError as exc:
            self.counters[f"error_{exc.code}"] += 1
            reply = error_reply(exc.code, clip(exc.message))
        except AurasError as exc:
            self.counters["error_agent_error"] += 1
            reply = error_reply("agent_error", clip(exc))
        except Exception as exc:
            self.counters["internal_errors"] += 1
            log.exception("bridge: service request failed")
            reply = error_reply("internal", clip(f"{type(exc).__name__}: {exc}"))
        if "id" in request:
            reply["id"] = request["id"]
        message = [*envelope, encode_map(reply)]
        if threading.current_thread() is self._loop_thread:
            self._router.send_multipart(message)
        else:
            self._replies.put(message)  # the loop thread owns the ROUTER socket

    def _send_replies(self) -> None:
        while True:
            try:
                message = self._replies.get_nowait()
            except queue.Empty:
                return
            self._router.send_multipart(message)

    def _serve(self, request: dict[str, Any]) -> dict[str, Any]:
        op = check_op(request)
        handler = {
            "hello": self._hello, "reset": self._reset, "configure": self._configure,
            "health": self._health_op, "stats": self._stats, "bye": self._bye,
        }[op]
        self.counters[f"op_{op}"] += 1
        return {"v": SCHEMA_VERSION, "ok": True, **handler(request)}

    def _session(self, request: dict[str, Any]) -> Session:
        sid = parse_session_id(request)
        session = self.host.get(sid)
        if session is None:
            raise ProtocolError("unknown_session", f"no session {sid!r:.40}: say hello again")
        session.last_heard = time.monotonic()
        return session

    def _hello(self, request: dict[str, Any]) -> dict[str, Any]:
        hello = parse_hello(request)
        with self.host.admission() as place:
            with self.host.admitting():  # the capacity check and joining the engine, one hello at a time
                granted = self.host.check_contract(hello.contract, hello.robot)
                agent = self.host.build_agent(hello.instruction, hello.robot)
                hold_contract(agent, hello.contract, granted)
            try:
                check_layout(agent.spec, hello)
            except ProtocolError:
                self.host.close_agent(agent)
                raise
            spec = agent.spec
            session = self.host.add(
                place, hello.robot, agent, hello.instruction, cameras=hello.cameras, state_dim=hello.state_dim,
                assembler=ObservationAssembler(tuple(spec.cameras), tuple(spec.extras), PENDING_SEQS),
                performance=Performance(hello.contract, granted, chunk_rows=agent.policy_spec.chunk_horizon),
            )
            self._open_stream(session)
        workers = describe_workers(agent)
        log.info("bridge: session %s for robot %r%s", session.id, clip(hello.robot, 64),
                 f" on workers: {workers}" if workers else "")
        return {
            "session": session.id, "schema": hello.schema, "publish_to": self.obs_endpoint,
            "subscribe_to": self.action_endpoint, "action_topic": f"action/{session.id}",
            "status_topic": f"status/{session.id}", "needs_extras": list(spec.extras),
            "max_message_bytes": self.limits.max_message_bytes, "session_timeout_s": self.limits.session_timeout_s,
            "action_shape": list(agent.policy_spec.action_shape), "execute_steps": agent.policy_spec.execute_steps,
            "staleness_strategy": resolve_strategy(agent.config.staleness.strategy, agent.config.pipeline.mode).name,
            "staleness_settings": {key: getattr(agent.config.staleness, key) for key in EXECUTOR_SETTINGS},
            "limits": policy_limits(agent.policy_spec),
            "granted_rate_hz": granted,
        }

    def _reset(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self._session(request)
        from_seq = parse_reset(request)
        with session.lock:
            session.stop_stream()
            session.agent.reset()
            with session.assembly:
                session.assembler.restart(from_seq)
            session.performance.episode_start()  # the robot rests until its first action: no gap to count
            session.state = "serving"
            self._open_stream(session)
        return {"session": session.id, "from_seq": from_seq}

    def _configure(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self._session(request)
        instruction = parse_configure(request, session.instruction)
        check_instruction(session.agent, instruction)
        session.instruction = instruction
        return {"session": session.id, "instruction": session.instruction}

    def _health_op(self, request: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {"status": "serving", "uptime_s": time.monotonic() - self.started}
        if "session" in request:
            session = self._session(request)  # also the heartbeat
            reply["session_state"] = session.state
            if request.get("echo"):  # lets a client check that its action subscription is live
                self._publish_event(session, {"event": "echo", "id": request.get("id")})
        reply["sessions"] = len(self.host)
        return reply

    def _stats(self, request: dict[str, Any]) -> dict[str, Any]:
        if "session" in request:
            return self._session(request).stats()
        sessions = [{k: v for k, v in s.stats().items() if k != "session"} for s in self.host.sessions()]
        reply = {"server": dict(self.counters), "sessions": sessions}  # ids are capabilities: never listed
        if self.batcher is not None:
            reply[self.batcher.stats_key] = self.batcher.stats()
        return reply

    def _bye(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self._session(request)
        if self.host.remove(session):
            self.host.close_session(session)
        return {"session": session.id}

    # -- observations -------------------------------------------------------------------------------
    def _on_data(self, parts: list[Any]) -> None:
        self.counters["messages"] += 1
        session = None
        try:
            frame = decode_frame(parts, self.limits.max_message_bytes)
            sid = frame.header.get("session")
            if not isinstance(sid, str):
                raise ProtocolError("bad_message", f"data header needs 'session' (the id from hello), got {sid!r:.40}")
            session = self.host.get(sid)
            if session is None:
                raise ProtocolError("unknown_session", f"no session {sid!r:.40}: say hello again")
            session.last_heard = time.monotonic()
            session.counters["messages"] += 1
            session.ingest(frame)
        except ProtocolError as exc:
            self.counters[f"error_{exc.code}"] += 1
            session = session or self._session_named_in(parts)
            if session is not None:
                session.counters[f"error_{exc.code}"] += 1
            self._publish_error(session, exc.code, exc.message, parts)

    def _session_named_in(self, parts: list[Any]) -> Session | None:
        """Best effort: the session a malformed message's header names, so its robot hears of the error."""
        try:
            sid = decode_map(bytes(parts[1])).get("session") if len(parts) > 1 else None
        except ProtocolError:
            return None
        return self.host.get(sid)

    # -- publishing ---------------------------------------------------------------------------------
    def _open_stream(self, session: Session) -> None:
        session.open_stream(
            on_action=lambda action: self._publish_action(session, action),
            on_event=lambda event: self._on_stream_event(session, event),
            on_failure=lambda exc: self._on_agent_failure(session, exc),
        )

    def _on_stream_event(self, session: Session, event: dict[str, Any]) -> None:
        """A stream's event (a worker replaced) to the robot and the log. Runs in the stream's thread,
        which an exception would end: none leaves here."""
        try:
            if event.get("event") == "worker_restarted":
                log.warning("bridge: session %s: workers replaced; now on workers: %s; cause: %s", session.id,
                            describe_workers(session.agent), clip(event.get("message")))
            self._publish_event(session, event)
        except Exception as exc:
            self.counters["internal_errors"] += 1
            log.exception("bridge: session %s: publishing %s failed: %r", session.id, event.get("event"), exc)

    def _on_agent_failure(self, session: Session, exc: BaseException) -> None:
        """The robot hears of its agent's failure as an ``agent_error`` event; the server keeps serving."""
        if self._stop.is_set():
            return
        log.warning("bridge: session %s agent failed: %s", session.id, clip(repr(exc)))
        self._publish_event(session, {"event": "error", "code": "agent_error", "message": clip(exc)})

    def _publish_action(self, session: Session, action: Any) -> None:
        """One action to ``action/<session>``, with the robot stamps of its request and its context."""
        stamps = session.assembler.stamps
        stamp = stamps.get(action.step_id, 0.0)
        context = action.context_step_id
        frames = encode_frame(
            f"action/{session.id}", [action.chunk], seq=action.step_id, stamp=stamp, session=session.id,
            context_seq=context, context_stamp=stamps.get(context, 0.0) if context is not None else stamp,
            staleness_ms=action.staleness_ms, staleness_frames=action.staleness_frames,
            latency_ms=action.timings.latency_ms, stages_ms=dict(action.timings.stages_ms),
            sent_monotonic=time.monotonic(),
        )
        with self._pub_lock:
            self._pub.send_multipart(frames)
        session.counters["actions"] += 1
        session.performance.record(action.timings.latency_ms, action.staleness_ms)

    def _publish_event(self, session: Session | None, event: dict[str, Any]) -> None:
        topic = f"status/{session.id}" if session is not None else "status"
        frames = encode_frame(topic, seq=next(self._status_seq), stamp=time.monotonic(), **event)
        with self._pub_lock:
            if not self._stop.is_set():
                self._pub.send_multipart(frames)

    def _publish_error(self, session: Session | None, code: str, message: str, parts: list[Any]) -> None:
        topic = bytes(parts[0])[:64].decode("utf-8", "replace") if parts else ""
        self._publish_event(session, {"event": "error", "code": code, "message": clip(message),
                                      "source_topic": topic})

    def _publish_status(self) -> None:
        sessions = self.host.sessions()
        self._publish_event(None, {"event": "status", "uptime_s": time.monotonic() - self.started,
                                   "sessions": len(sessions), "counters": dict(self.counters)})
        for session in sessions:
            self._publish_event(session, {"event": "status", **session.stats()})

    def _expire(self, now: float) -> None:
        timeout = self.limits.session_timeout_s
        for session in self.host.expired(now, timeout):
            log.info("bridge: session %s expired (silent for %.1f s)", session.id, timeout)
            self._publish_event(session, {"event": "expired", "message": f"silent for {timeout} s"})
            try:
                self.host.close_session(session)
            except Exception as exc:  # its agent's teardown failed: the session is gone all the same
                self.counters["internal_errors"] += 1
                log.exception("bridge: closing expired session %s failed: %r", session.id, exc)
