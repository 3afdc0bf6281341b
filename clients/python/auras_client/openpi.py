"""The deadline contract for robot scripts written for openpi (numpy and the standard library only; it does
not import openpi_client: any object with openpi's policy interface, ``infer(obs) -> {"actions": ...}``, works).

A robot script written for openpi wraps its ``WebsocketClientPolicy`` in openpi's ``ActionChunkBroker``,
which hands out one row per ``infer`` call and, when the chunk runs out, blocks the control loop on the
server (and raises for good once the server is gone). :class:`DeadlinePolicy` takes the broker's place:

    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from auras_client.openpi import DeadlinePolicy
    from auras_client.runtime import Fallback

    policy = DeadlinePolicy(lambda: WebsocketClientPolicy("SERVER", 8000), control_hz=50, action_dim=7,
                            chunk_horizon=10, deadline_s=0.25,
                            fallback=Fallback("decay", decay_s=0.3, rest=(0.0,) * 7))
    while running:
        robot.apply(policy.infer(observation())["actions"])  # never waits for the server

Each ``infer`` call is one control tick of a :class:`~auras_client.runtime.RobotRuntime`: the chunk a
background request brought in takes over, a new request goes out on one worker thread when the strategy
wants one and none is in flight, and the row to apply now comes back at once, the deadline fallback
included (hold, decay or stop once the robot has run ``deadline_s`` without a fresh row). Given a factory
(a callable returning a new policy), the worker reconnects after the server is lost, with backoff, while
the robot runs its fallback; the first fresh chunk after the server is back ends it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from auras_client.runtime import Fallback, RobotRuntime
from auras_client.staleness import ChunkExecutor, Strategy

__all__ = ["DeadlinePolicy"]

log = logging.getLogger("auras_client.openpi")


def _snapshot(value: Any) -> Any:
    """A copy of an observation's arrays and maps (the robot may reuse its buffers once ``infer`` returns)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, Mapping):
        return {key: _snapshot(item) for key, item in value.items()}
    return value


def _close(policy: Any) -> None:
    """Close a policy that has a ``close`` method (openpi's ``WebsocketClientPolicy`` has none), best effort."""
    close = getattr(policy, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):  # a dead connection may fail to close: it is dropped anyway
            close()


class DeadlinePolicy:
    """openpi's policy interface with auras' deadline contract, in place of ``ActionChunkBroker``.

    ``policy``: an openpi policy (``infer(obs) -> {"actions": (H, A)}``), or a factory returning one (told
    apart by ``hasattr(policy, "infer")``); with a factory the worker connects in the background and
    reconnects whenever a request fails, waiting ``backoff_s[0]`` doubling to ``backoff_s[1]`` between
    failed attempts; a policy given as such is retried after the same backoff, never replaced.
    ``control_hz``: the rate :meth:`infer` is called at; ``action_dim``: the action's size; ``chunk_horizon``:
    how many rows of each chunk the robot runs (openpi's ``action_horizon``; longer chunks are cut).
    ``deadline_s`` and ``fallback``: the deadline contract (:class:`~auras_client.runtime.Fallback`, with
    the robot's ``rest`` command stated: it runs before the first chunk too);
    ``ttl_s``: a chunk whose observation went out longer ago than this is not taken (default
    ``deadline_s``). ``strategy``: ``"none"`` (a request whenever none is in flight; each chunk runs from
    its first row when it lands) or ``"chunk_blend"`` (a request only once the rows left fall to
    ``queue_threshold`` of a chunk, 0 as ``ActionChunkBroker``; rows time-aligned and blended with
    ``blend_old``). ``reset_message``: sent through ``infer`` on :meth:`reset` (auras' openpi server
    resets its agent on ``{"__ctrl__": "episode_start"}``; openpi's own server knows no such message).
    ``clock``: the robot's monotonic clock (seconds).

    :meth:`infer` is meant for one control thread; the worker hands results over under a lock.
    """

    def __init__(
        self,
        policy: Any,
        control_hz: float,
        *,
        action_dim: int,
        chunk_horizon: int,
        fallback: Fallback,
        deadline_s: float = 0.25,
        ttl_s: float | None = None,
        strategy: str = "none",
        queue_threshold: float = 0.5,
        blend_old: float = 0.3,
        reset_message: Mapping[str, Any] | None = None,
        backoff_s: tuple[float, float] = (0.1, 2.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(control_hz) and control_hz > 0):
            raise ValueError(f"control_hz: expected a rate > 0, got {control_hz}")
        if action_dim < 1 or chunk_horizon < 1:
            raise ValueError(f"action_dim, chunk_horizon: expected >= 1, got {action_dim}, {chunk_horizon}")
        chosen = Strategy.parse(strategy).robot_side
        if chosen.rtc or chosen.roll_forward:
            raise ValueError(f"strategy: expected none or chunk_blend (openpi's protocol carries no rtc guide or "
                             f"rolled state), got {strategy!r}")
        if fallback.rest is None:
            raise ValueError("fallback.rest: a DeadlinePolicy needs the robot's rest command, applied before the "
                             "first chunk and in the fallback (zeros are no motion only under delta control; "
                             "openpi robots often command absolute joint positions)")
        if not 0 < backoff_s[0] <= backoff_s[1]:
            raise ValueError(f"backoff_s: expected (first, longest) seconds with 0 < first <= longest, got {backoff_s}")
        self.action_dim, self.chunk_horizon = int(action_dim), int(chunk_horizon)
        self.clock, self.backoff_s = clock, (float(backoff_s[0]), float(backoff_s[1]))
        self.reset_message = dict(reset_message) if reset_message is not None else None
        executor = ChunkExecutor(chosen, 1, (self.chunk_horizon, self.action_dim), queue_threshold=queue_threshold,
                                 blend_old=blend_old)
        self.runtime = RobotRuntime(executor, 1.0 / control_hz, ttl_s=deadline_s if ttl_s is None else ttl_s,
                                    deadline_s=deadline_s, fallback=fallback, clock=clock)
        self.fallback = self.runtime.fallback
        self._factory: Callable[[], Any] | None = None if hasattr(policy, "infer") else policy
        if self._factory is not None and not callable(self._factory):
            raise TypeError(f"policy: expected an object with infer() or a callable returning one, got {policy!r}")
        self.t = 0  # the next control step
        self._next_id = 0
        self._episode = 0
        # shared with the worker, under self._cv
        self._cv = threading.Condition()
        self._policy: Any = policy if self._factory is None else None
        self._job: tuple[str, Any] | None = None  # ("infer", (id, episode, obs, sent_at)) or ("reset", None)
        self._busy = False  # the worker is running a job (or backing off after a failed one)
        self._result: tuple[int, int, np.ndarray, float, float | None] | None = None
        self._closed = False
        self._counts = {"requests": 0, "responses": 0, "errors": 0, "connect_errors": 0, "reconnects": 0,
                        "bad_replies": 0, "discarded": 0}
        self._last_error: str | None = None
        self._worker = threading.Thread(target=self._run, name="auras-openpi-deadline", daemon=True)
        self._worker.start()

    # -- the robot's side -------------------------------------------------------------------------------
    def infer(self, obs: dict) -> dict:
        """One control tick: ``{"actions": (A,) float32}``, the row to apply now (the rest command before the
        first chunk, the fallback past the deadline). Returns at once: a finished request's chunk is offered
        to the runtime, and ``obs`` (copied) goes out on the worker when the strategy wants an observation,
        the policy is connected and no request is in flight."""
        t = self.t
        with self._cv:
            result, self._result = self._result, None
        if result is not None:
            self._offer(t, result)
        with self._cv:
            idle = self._policy is not None and not self._busy and self._job is None and not self._closed
            if idle and self.runtime.wants_observation(t):
                request_id, self._next_id = self._next_id, self._next_id + 1
                self.runtime.sent(request_id, t)
                self._job = ("infer", (request_id, self._episode, _snapshot(obs), self.clock()))
                self._counts["requests"] += 1
                self._cv.notify_all()
        self.t = t + 1
        return {"actions": self.runtime.row(t).copy()}  # the robot's own: the chunk and rest rows stay intact

    def _offer(self, t: int, result: tuple[int, int, np.ndarray, float, float | None]) -> None:
        request_id, episode, chunk, sent_at, latency_ms = result
        if episode != self._episode:  # it answers an observation of an episode before the last reset
            with self._cv:
                self._counts["discarded"] += 1
            return
        self.runtime.offer(t, chunk, request_id, request_id, self.clock() - sent_at, latency_ms)

    def reset(self) -> None:
        """A new episode: the runtime forgets its chunk and counters, a request in flight is discarded when it
        lands, and the worker calls the inner policy's ``reset()`` (and sends ``reset_message``) once it is
        free, if connected. Never waits for the server."""
        with self._cv:
            self._episode += 1
            self._result = None
            self._job = ("reset", None) if self._policy is not None else None
            self._cv.notify_all()
        self.runtime.reset()
        self.t = 0

    def stats(self) -> dict[str, Any]:
        """The runtime's counters (deadline misses, fallback time, longest gap, ...) and the worker's:
        ``requests`` sent, ``responses``, ``errors`` (failed requests), ``connect_errors`` (failed factory
        calls), ``reconnects``, ``bad_replies`` (no (H, action_dim) ``actions``), ``discarded`` (answers
        from before a reset), ``connected`` and ``last_error``."""
        data = self.runtime.summary()
        with self._cv:
            data.update(self._counts, connected=self._policy is not None, last_error=self._last_error)
        return data

    @property
    def connected(self) -> bool:
        with self._cv:
            return self._policy is not None

    def wait_connected(self, timeout_s: float | None = None) -> bool:
        """Wait until the worker holds a policy (a factory's first connection); False on timeout or close."""
        with self._cv:
            return self._cv.wait_for(lambda: self._policy is not None or self._closed, timeout_s) and not self._closed

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no request or reset is pending or running on the worker (a finished request's chunk is
        then taken by the next :meth:`infer`); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._closed or (not self._busy and self._job is None), timeout_s)

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the worker (waiting up to ``timeout_s`` for a request in flight) and close the inner policy if
        it has ``close()``. Idempotent."""
        with self._cv:
            self._closed = True
            self._job = None
            self._cv.notify_all()
        if self._worker is not threading.current_thread():
            self._worker.join(timeout_s)
        with self._cv:
            policy, self._policy = self._policy, None
        if policy is not None:
            _close(policy)

    def __enter__(self) -> DeadlinePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        delay, first = self.backoff_s[0], True
        while True:
            with self._cv:
                if self._closed:
                    return
                policy = self._policy
            if policy is None:  # a factory's policy, not yet or no longer connected
                try:
                    policy = self._factory()  # type: ignore[misc]
                except Exception as exc:
                    self._note_error("connect_errors", exc)
                    if self._pause(delay):
                        return
                    delay = min(2 * delay, self.backoff_s[1])
                    continue
                with self._cv:
                    if self._closed:
                        _close(policy)
                        return
                    self._policy = policy
                    self._counts["reconnects"] += 0 if first else 1
                    self._cv.notify_all()
                first, delay = False, self.backoff_s[0]
                continue
            with self._cv:
                self._cv.wait_for(lambda: self._closed or self._job is not None)
                if self._closed:
                    return
                (kind, payload), self._job = self._job, None  # type: ignore[misc]
                self._busy = True
            try:
                if kind == "reset":
                    policy.reset()
                    if self.reset_message is not None:
                        policy.infer(dict(self.reset_message))
                else:
                    self._request(policy, *payload)
                delay = self.backoff_s[0]
            except Exception as exc:
                self._note_error("errors", exc)
                if self._factory is not None:  # drop the connection and reconnect (no request is pending)
                    with self._cv:
                        self._policy = None
                        if self._job is not None and self._job[0] == "infer":  # a reset queued meanwhile stays
                            self._job = None
                    _close(policy)
                elif self._pause(delay):  # the same policy, after a pause
                    return
                else:
                    delay = min(2 * delay, self.backoff_s[1])
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _request(self, policy: Any, request_id: int, episode: int, obs: dict, sent_at: float) -> None:
        reply = policy.infer(obs)
        actions = reply.get("actions") if isinstance(reply, Mapping) else None
        chunk = None if actions is None else np.asarray(actions, np.float32)
        if chunk is not None and chunk.ndim == 1:
            chunk = chunk[None]
        if chunk is None or chunk.ndim != 2 or chunk.shape[1] != self.action_dim or not len(chunk):
            shape = None if chunk is None else chunk.shape
            error = f"reply: expected actions of shape (H, {self.action_dim}), got {shape}"
            with self._cv:
                self._counts["bad_replies"] += 1
                self._last_error = error
            log.warning("openpi deadline policy: %s", error)
            return
        timing = reply.get("server_timing")
        latency = timing.get("infer_ms") if isinstance(timing, Mapping) else None
        latency = float(latency) if isinstance(latency, int | float) else None
        with self._cv:
            self._counts["responses"] += 1
            self._result = (request_id, episode, chunk[: self.chunk_horizon], sent_at, latency)

    def _note_error(self, counter: str, exc: BaseException) -> None:
        with self._cv:
            self._counts[counter] += 1
            self._last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.info("openpi deadline policy: %s", self._last_error)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` on the worker; True if closed meanwhile."""
        with self._cv:
            return self._cv.wait_for(lambda: self._closed, seconds)
