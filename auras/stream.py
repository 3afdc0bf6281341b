"""The streaming form of the agent, for control loops: submit observations, iterate actions.

    with agent.stream() as stream:
        camera.on_frame(lambda img: stream.submit(to_observation(img)))   # any thread, never blocks
        for action in stream:                                             # the control loop
            robot.apply(action)

A background thread runs the agent's executor: each frame admits the newest submitted observation.
With ``pipeline.frame_period_ms`` set, frames start on that period (auras/pipeline/pacing.py) and each
admits the newest observation at its tick, so actions come out at even intervals.
Observations submitted while the executor is busy wait in a one-slot mailbox; a newer one replaces
an older one that was never admitted, and that older one is counted in ``dropped`` (a camera
faster than the policy loses frames, never the other way round). Every action the executor emits
is delivered in order; ``latest()`` skips to the newest for loops that only want the freshest.

Bad input is rejected in ``submit`` (the caller's thread) with an InvalidInputError and never reaches
the worker; an error inside the executor is re-raised to the consumer on its next ``get``/iteration,
after which the stream is closed. The exception is a worker that died and was replaced
(WorkerRestartedError): the stream counts it in ``restarts`` (each costs the observation in flight),
reports it to ``on_event`` and goes on, refilling the pipeline with the next observation.

With ``on_action`` each action is handed to that callback in the worker thread as soon as it exists
(no hand-off to another thread: what a server that forwards actions wants) instead of being queued;
``get``/iteration then only wait for the end of the stream and raise its error. An exception from
``on_action`` ends the stream like an executor error.

Accounting, exact in every mode and at any moment (:meth:`ActionStream.counts`): each submitted observation
is ``dropped`` (replaced in the mailbox), ``answered`` (the first action carrying its ``step_id``),
``unanswered`` (overtaken by a newer observation's action inside a pipeline, lost with a replaced worker, or
still in the mailbox or the pipeline when the stream closed or failed) or ``in_flight`` (in the mailbox or
the agent now). ``emitted - answered`` are repeats.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from auras.errors import AgentClosedError, InvalidInputError, StepFailedError, WorkerRestartedError, clip
from auras.pipeline.pacing import pacer_for
from auras.types import Action, Observation

if TYPE_CHECKING:
    from auras.agent import AurasAgent

__all__ = ["ActionStream"]


class ActionStream:
    def __init__(
        self,
        agent: AurasAgent,
        on_event: Callable[[dict], None] | None = None,
        on_action: Callable[[Action], None] | None = None,
    ) -> None:
        self._agent = agent
        self._on_event = on_event
        self._on_action = on_action
        self.restarts = 0  # workers replaced after a failure; the stream went on (see WorkerRestartedError)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the worker waits here: an observation, or close
        self._done = threading.Condition(self._lock)  # consumers wait here: an action, an error, the end
        self._pending: Observation | None = None
        self._actions: collections.deque[Action] = collections.deque()
        self._error: BaseException | None = None
        self._closed = False
        self._finished = False  # the worker thread has ended (after close or an error)
        self.submitted = self.admitted = self.dropped = self.emitted = 0
        self.answered = self.unanswered = 0
        self._outstanding: dict[object, None] = {}  # admitted step ids without an action, oldest first
        self.pacer = pacer_for(agent)
        self._thread = threading.Thread(target=self._loop, name="auras-stream", daemon=True)
        self._thread.start()

    # -- producer side ------------------------------------------------------------------------------
    def submit(self, obs: Observation) -> None:
        """Offer ``obs`` as the newest observation (validated here; never blocks on inference)."""
        if not isinstance(obs, Observation):
            raise InvalidInputError(f"ActionStream.submit: expected an auras.Observation, got {type(obs).__name__}")
        self._agent.spec.check(obs)
        with self._lock:
            if self._closed:
                raise AgentClosedError("ActionStream.submit after close(); open a new stream")
            if self._pending is not None:
                self.dropped += 1
            self._pending = obs
            self.submitted += 1
            self._work.notify()  # only the worker: a consumer waiting for actions has nothing to do yet

    # -- worker ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._frames()
        finally:  # consumers learn the stream ended only after its last action was queued
            with self._lock:
                self._finished = True
                self._done.notify_all()

    def _frames(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._closed:
                    self._work.wait()
                if self._closed:
                    return
            self.pacer.wait()  # paced frames: start on the tick, then admit the newest observation
            with self._lock:
                if self._closed:
                    return
                obs, self._pending = self._pending, None
                self.admitted += 1
                self._outstanding[obs.step_id] = None
            try:
                start = self._agent.clock.now()
                action = self._agent.step(obs)
                self.pacer.record(self._agent.clock.now() - start)
                self.pacer.release()  # on_tick: the action goes out at the next tick
            except WorkerRestartedError as exc:  # recovered: this observation is lost, the stream goes on
                with self._lock:
                    self.restarts += 1
                if self._on_event is not None:
                    self._on_event({"event": "worker_restarted", "step_id": obs.step_id, "message": clip(exc)})
                continue
            except BaseException as exc:  # delivered to the consumer, never swallowed
                self._end(exc)
                return
            with self._lock:
                self.emitted += 1
                self._account(action.step_id)
                if self._on_action is None:
                    self._actions.append(action)
                    self._done.notify_all()
            if self._on_action is not None:
                try:
                    self._on_action(action)
                except BaseException as exc:  # like an executor error: delivered to the consumer
                    self._end(exc)
                    return

    def _end(self, exc: BaseException) -> None:
        """The stream ends with ``exc``: nothing still in the agent will be answered."""
        with self._lock:
            self._error = exc
            self._closed = True
            self._give_up_in_flight()

    def _give_up_in_flight(self) -> None:  # with the lock held
        if self._pending is not None:
            self._pending = None
            self.unanswered += 1
        self.unanswered += len(self._outstanding)
        self._outstanding.clear()

    def counts(self) -> dict[str, int]:
        """The accounting in one consistent snapshot: ``submitted = dropped + answered + unanswered +
        in_flight`` at any moment (in_flight: in the mailbox or in the agent's pipeline now)."""
        with self._lock:
            in_flight = len(self._outstanding) + (self._pending is not None)
            return {"submitted": self.submitted, "dropped": self.dropped, "answered": self.answered,
                    "unanswered": self.unanswered, "in_flight": in_flight, "emitted": self.emitted,
                    "restarts": self.restarts}

    def _account(self, step_id: object) -> None:
        """An action for ``step_id``: it is answered (once); older outstanding observations were overtaken."""
        if step_id not in self._outstanding:
            return  # a repeat
        for older in list(self._outstanding):
            del self._outstanding[older]
            if older == step_id:
                self.answered += 1
                return
            self.unanswered += 1

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the stream (an executor error, or one from ``on_action``), else None."""
        with self._lock:
            return self._error

    # -- consumer side --------------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Action:
        """The next action in order; waits up to ``timeout`` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._actions:
                if self._error is not None:
                    raise StepFailedError(f"stream worker failed: {self._error!r}") from self._error
                if self._closed and self._finished:
                    raise AgentClosedError("the stream is closed and every action was delivered")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no action within {timeout} s")
                self._done.wait(left)
            return self._actions.popleft()

    def latest(self, timeout: float | None = None) -> Action:
        """The newest action, skipping (and discarding) any older undelivered ones."""
        action = self.get(timeout)
        with self._lock:
            while self._actions:
                action = self._actions.popleft()
        return action

    def __iter__(self) -> ActionStream:
        return self

    def __next__(self) -> Action:
        try:
            return self.get()
        except AgentClosedError:
            raise StopIteration from None

    def close(self) -> None:
        """Stop the worker after its current frame; undelivered actions stay readable. Idempotent."""
        with self._lock:
            self._closed = True
            self._work.notify_all()
            self._done.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)
        with self._lock:  # what never got its action: in the mailbox, or in the pipeline
            self._give_up_in_flight()

    def __enter__(self) -> ActionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

