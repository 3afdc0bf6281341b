"""The robot sessions of one server, whatever protocol it speaks: admission, building, streams, accounting,
expiry and close (the servers own sockets only).

:class:`SessionHost` admits a session only while fewer than ``max_sessions`` are open or being built (one more
is refused at once, before anything is built), builds one agent at a time (lazy imports inside a build are not
thread-safe), refuses an instruction the policy cannot read before the session exists, expires silent
sessions and closes every session's agent and the shared perception batcher on one path.

A :class:`Session` is one robot: its agent, its counters and, for a streaming protocol (ZeroMQ), the
:class:`~auras.stream.ActionStream` that runs its frames and an observation assembler. Its accounting is exact
at any moment (see :meth:`Session.stats`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from auras.bridge.assembler import parse_part
from auras.bridge.contracts import Contract, Performance, admit
from auras.errors import AurasError, InvalidInputError
from auras.types import Observation
from auras_client.protocol import ProtocolError

__all__ = ["Session", "SessionHost", "stream_counts"]

log = logging.getLogger("auras.bridge")
STREAM_JOIN_S = 30.0  # how long a session's stop waits for its stream's last frame


@dataclass
class Session:
    """One robot's session: its agent, what it declared, its counters and (streaming protocols) its stream.

    ``lock`` serializes reset, close and submits; ``assembly`` guards the observation assembler (the server's
    loop adds parts, a reset restarts it)."""

    id: str
    robot: str
    agent: Any
    instruction: str
    cameras: dict[str, tuple[int, int]] = field(default_factory=dict)
    state_dim: int = 0
    assembler: Any = None
    stream: Any = None
    last_heard: float = field(default_factory=time.monotonic)
    watcher: threading.Thread | None = None  # waits for the stream to end (see open_stream)
    lock: threading.Lock = field(default_factory=threading.Lock)
    assembly: threading.Lock = field(default_factory=threading.Lock)
    counting: threading.Lock = field(default_factory=threading.Lock)  # the counters and the stream, read as one
    state: str = "serving"
    counters: collections.Counter = field(default_factory=collections.Counter)
    performance: Performance = field(default_factory=Performance)  # its contract and what it gets

    def stats(self) -> dict[str, Any]:
        """Counters, exact at any moment. Every seq from the first seen to ``max_seen`` is exactly one of
        submitted, dropped_incomplete, dropped_at_reset (completed while a reset ran), lost (never arrived) or
        pending; every submitted one is exactly one of answered (its first action), superseded (a newer
        observation replaced it before the agent took it), unanswered (overtaken in a pipeline, lost with a
        worker, in flight when a stream stopped or the agent failed) or in_agent (waiting in the stream or in
        the pipeline now): ``submitted = answered + superseded + unanswered + in_agent``."""
        with self.counting:  # never the session's lock: a reset must not block stats
            c = collections.Counter(self.counters)
            if self.stream is not None:
                c.update(stream_counts(self.stream))
        if self.assembler is not None:
            c.update(self.assembler.counters)
            c["pending"] = len(self.assembler.pending)
        c.setdefault("in_agent", 0)
        counters = {k: v for k, v in c.items() if v or k in ("in_agent", "pending")}
        reply: dict[str, Any] = {"session": self.id, "robot": self.robot, "state": self.state, "counters": counters,
                                 "performance": self.performance.stats()}
        if self.assembler is not None:
            reply["max_seen"] = self.assembler.max_seen
        return reply

    # -- observations (streaming protocols) ----------------------------------------------------------
    def ingest(self, frame: Any) -> None:
        """One data message of this session's robot: its part joins the assembly of its sequence number,
        and a complete observation goes to the stream. ProtocolError for what the robot must hear of."""
        part = parse_part(frame, self.cameras, self.state_dim)
        with self.assembly:
            complete = self.assembler.add(frame.seq, frame.stamp, part)
        if complete is not None:
            self._submit(*complete)

    def _submit(self, seq: int, slot: Any) -> None:
        with self.lock:
            if seq < self.assembler.min_seq:  # completed while a reset ran (it holds the lock): not this episode
                self.counters["dropped_at_reset"] += 1
                return
            if self.stream is None:
                self.counters["rejected"] += 1
                raise ProtocolError("agent_error", f"session {self.id} is between episodes (resetting)")
            try:
                obs = Observation(
                    images=slot.images, state=slot.state, instruction=self.instruction, step_id=seq,
                    capture_time=time.monotonic(), extras=slot.extras,
                )
                self.stream.submit(obs)  # the stream counts it submitted
            except InvalidInputError as exc:
                self.counters["rejected"] += 1
                raise ProtocolError("bad_shape", str(exc)) from None
            except AurasError as exc:  # the stream closed after an agent failure
                self.counters["rejected"] += 1
                self.state = "failed"
                raise ProtocolError("agent_error", str(exc)) from None

    # -- the stream (streaming protocols) ------------------------------------------------------------
    def open_stream(self, on_action: Callable[[Any], None], on_event: Callable[[dict[str, Any]], None],
                    on_failure: Callable[[BaseException], None]) -> None:
        """Start the session's stream: its actions go to ``on_action`` from the stream's own thread as they
        come (no hand-off on the hot path), its events (a worker replaced) to ``on_event``; a watcher thread
        waits for the stream's end and calls ``on_failure`` if the agent failed."""
        self.stream = stream = self.agent.stream(on_event=on_event, on_action=on_action)
        self.watcher = threading.Thread(target=self._watch, args=(stream, on_failure), name=f"auras-session-{self.id}",
                                        daemon=True)
        self.watcher.start()

    def _watch(self, stream: Any, on_failure: Callable[[BaseException], None]) -> None:
        try:
            for _ in stream:  # actions went out through on_action: nothing is queued here
                pass
        except Exception as exc:
            self.state = "failed"
            self.counters["agent_failures"] += 1
            on_failure(exc)

    def stop_stream(self) -> None:
        """Close the stream after its current frame and fold its counts into the session's."""
        stream = self.stream
        if stream is not None:
            stream.close()
        if self.watcher is not None:
            self.watcher.join(timeout=STREAM_JOIN_S)
        self.watcher = None
        if stream is not None:
            with self.counting:  # in one step, so stats never count the stream twice or not at all
                self.counters.update({k: v for k, v in stream_counts(stream).items() if v and k != "in_agent"})
                self.stream = None


def stream_counts(stream: Any) -> dict[str, int]:
    """A stream's share of its session's counters, read in one consistent snapshot."""
    counts = stream.counts()
    return {"submitted": counts["submitted"], "superseded": counts["dropped"], "answered": counts["answered"],
            "unanswered": counts["unanswered"], "in_agent": counts["in_flight"],
            "worker_restarts": counts["restarts"]}


@dataclass
class _Place:
    filled: bool = False


class SessionHost:
    """The sessions of one server: ``agent_factory()`` builds each session's agent; ``batcher`` (or None) is
    the perception they share, closed with the host; ``limits``: a :class:`~auras.bridge.limits.ServeLimits`."""

    def __init__(self, agent_factory: Callable[[], Any], batcher: Any, limits: Any) -> None:
        self.factory, self.batcher, self.limits = agent_factory, batcher, limits
        self.counters: collections.Counter = collections.Counter()
        self._sessions: dict[str, Session] = {}
        self._admitted = 0  # open sessions plus admissions still building their agent
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._admitting = threading.Lock()

    # -- admission and building -------------------------------------------------------------------
    @property
    def full(self) -> bool:
        """No place is free (open sessions and admissions still building fill ``max_sessions``)."""
        with self._lock:
            return self._admitted >= self.limits.max_sessions

    @contextlib.contextmanager
    def admission(self) -> Iterator[_Place]:
        """Hold one of ``max_sessions`` places while a session is built; ProtocolError ``bad_request``
        (server full) at once when none is free. The place stays taken once :meth:`add` fills it."""
        with self._lock:
            if self._admitted >= self.limits.max_sessions:
                self.counters["refused_full"] += 1
                raise ProtocolError("bad_request", f"server full: {self.limits.max_sessions} sessions already "
                                    "(serve.max_sessions); try again when a robot leaves")
            self._admitted += 1
        place = _Place()
        try:
            yield place
        finally:
            if not place.filled:
                with self._lock:
                    self._admitted -= 1

    @contextlib.contextmanager
    def admitting(self) -> Iterator[None]:
        """Held from a hello's capacity check until its agent has joined the engine, so that two hellos at
        once are judged one after the other (the second counts the first)."""
        with self._admitting:
            yield

    def check_contract(self, contract: Contract | None, robot: str | None = None) -> float | None:
        """Admission by capacity where the sessions share a frame engine (see :mod:`auras.bridge.contracts`):
        the rate granted to a robot admitted below its ask, else None; ProtocolError ``over_capacity`` when
        its contract, or one already served, could not be met with it. With several engines the robot
        (named ``robot``) is judged by the engine it would join, against that engine's robots only, and
        then joins that engine (the router keeps the choice for the :meth:`build_agent` that follows)."""
        shared = self.batcher
        if not hasattr(shared, "admission_rate_hz"):
            return None
        engine = shared.engine_for(robot) if hasattr(shared, "engine_for") else shared
        sessions = [s for s in self.sessions() if getattr(getattr(s.agent, "executor", None), "engine", None) is engine]
        contracts = [s.performance.promised() for s in sessions if s.performance.contract is not None]
        try:
            return admit(engine.admission_rate_hz(), contracts, contract, len(sessions))
        except ProtocolError:
            self.counters["refused_over_capacity"] += 1
            if hasattr(shared, "forget_judgement"):
                shared.forget_judgement(robot)
            raise

    def build_agent(self, instruction: str | None = None, robot: str | None = None) -> Any:
        """A new agent (one build at a time); ``robot``: the robot's name, for a factory that places robots
        (``takes_robot``: a returning robot goes back to its engine). An ``instruction`` the policy cannot
        read is refused here, before the session exists, with ProtocolError ``bad_request``."""
        with self._build_lock:  # lazy imports (diffusers) are not thread-safe
            agent = self.factory(robot) if getattr(self.factory, "takes_robot", False) else self.factory()
        if instruction is not None:
            try:
                check_instruction(agent, instruction)
            except ProtocolError:
                self.close_agent(agent)
                raise
        return agent

    def add(self, place: _Place, robot: str, agent: Any, instruction: str, **declared: Any) -> Session:
        """Register a built agent as a new session with a fresh id, in the ``place`` :meth:`admission` gave."""
        session = Session(id=secrets.token_hex(8), robot=robot, agent=agent, instruction=instruction, **declared)
        with self._lock:
            self._sessions[session.id] = session
            place.filled = True
        self.counters["sessions_opened"] += 1
        return session

    # -- lookup ----------------------------------------------------------------------------------
    def get(self, sid: Any) -> Session | None:
        with self._lock:
            return self._sessions.get(sid) if isinstance(sid, str) else None

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    # -- ending ----------------------------------------------------------------------------------
    def remove(self, session: Session) -> bool:
        """Take ``session`` out of the host (its place frees); False if it was already gone."""
        with self._lock:
            gone = self._sessions.pop(session.id, None) is not None
            if gone:
                self._admitted -= 1
        return gone

    def expired(self, now: float, timeout_s: float) -> list[Session]:
        """Remove and return the sessions silent for longer than ``timeout_s``."""
        with self._lock:
            gone = [s for s in self._sessions.values() if now - s.last_heard > timeout_s]
            for session in gone:
                del self._sessions[session.id]
                self._admitted -= 1
        self.counters["sessions_expired"] += len(gone)
        return gone

    def close_session(self, session: Session) -> None:
        """Stop the session's stream and close its agent (call after :meth:`remove`)."""
        with session.lock:
            session.stop_stream()
            self.close_agent(session.agent)
            session.state = "closed"

    def close_agent(self, agent: Any) -> None:
        agent.close()
        perception = getattr(agent.hosted_policy, "perception", None)
        close_view = getattr(perception, "close", None)  # a shared perception's view
        if callable(close_view):
            close_view()

    def close(self) -> None:
        """Close every session's agent, then the shared perception. Idempotent."""
        with self._lock:
            sessions, self._sessions, self._admitted = list(self._sessions.values()), {}, 0
        for session in sessions:
            try:
                self.close_session(session)
            except Exception:  # one agent's failed teardown must not keep the others open
                log.exception("bridge: closing session %s failed", session.id)
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None


def check_instruction(agent: Any, instruction: str) -> None:
    """ProtocolError ``bad_request`` if ``agent``'s policy cannot read ``instruction``."""
    try:
        agent.spec.check_instruction(instruction)
    except InvalidInputError as exc:
        raise ProtocolError("bad_request", str(exc)) from None
