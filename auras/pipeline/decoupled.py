"""`decoupled` mode (the paper's DEC baseline): perception loops, generation fetches its latest result.

A perception thread runs continuously on the newest observation offered (re-perceiving it when no
newer one has arrived, which is the wasted work that makes DEC slower than sequential in the
paper). ``step(obs)`` offers ``obs`` to that loop and runs generation on the newest finished
context, whichever observation it came from; only the very first step waits for a context, with a
deadline. ``Action.context_step_id`` names the observation the context came from.

On the Ray backend a dead or hung actor is replaced: the perception loop is restarted on new actors,
the old context is dropped (it came from the lost workers), the step raises WorkerRestartedError and
the next step waits for a fresh context. ``reset()`` (a new episode) drops the context and any
perception still running on the last episode's observation, so the new episode's first step waits
for a context of its own observation.

Under the ``frame`` time model (the env waits for each action) generation therefore always runs on
the previous step's context: step(obs_k) offers obs_k and generates at once, and perception of obs_k
cannot have finished. With chunked policies that is one whole chunk (``execute_steps`` env steps)
of extra staleness: the delay-k column of the README's delay table with k = ``execute_steps``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from auras.errors import StepFailedError, WorkerDiedError
from auras.pipeline.backend import Backend, as_backend
from auras.pipeline.base import Executor
from auras.pipeline.parts import PolicyParts
from auras.policies.base import Policy
from auras.types import Action, Observation, StepTimings

__all__ = ["DecoupledExecutor", "PerceptionCrashedError"]


class PerceptionCrashedError(WorkerDiedError):
    """The policy's perception raised in the perception loop: the loop is over and no restart helps."""


class DecoupledExecutor(Executor):
    def __init__(self, backend: Backend | Policy, first_context_timeout_s: float = 30.0) -> None:
        """Run the policy's halves as two workers on ``backend`` (a Policy: in this process, on the CPU)."""
        self.parts = PolicyParts(as_backend(backend))
        super().__init__(self.parts.spec)
        self._timeout = first_context_timeout_s
        self._cond = threading.Condition()
        self._offered: Observation | None = None
        self._latest: tuple[object, Observation, float] | None = None  # (context, its observation, ms)
        self._error: BaseException | None = None
        self._stop = False
        self._epoch = 0  # bumped when workers are replaced: a loop of an older epoch writes nothing
        self._episode = 0  # bumped by reset(): a context of an observation offered before it is dropped
        self.perceptions = 0
        self._start_loop()

    def _start_loop(self) -> None:
        with self._cond:
            self._epoch += 1
            self._stop, self._error, self._latest = False, None, None
        self._thread = threading.Thread(
            target=self._perception_loop, args=(self._epoch,), name="auras-decoupled-perception", daemon=True
        )
        self._thread.start()

    def _perception_loop(self, epoch: int) -> None:
        while True:
            with self._cond:
                while self._offered is None and not self._stop:
                    self._cond.wait()
                if self._stop or epoch != self._epoch:
                    return
                obs, episode = self._offered, self._episode
            try:
                start = time.perf_counter()
                context = self.parts.perceive([obs])
                spent = (time.perf_counter() - start) * 1e3
            except BaseException as exc:  # surfaced to the caller of step(), never swallowed
                with self._cond:
                    if epoch == self._epoch:
                        self._error = exc
                        self._cond.notify_all()
                return
            with self._cond:
                if epoch != self._epoch:
                    return
                if episode != self._episode:  # reset() came while it ran: that scene is gone
                    continue
                self._latest = (context, obs, spent)
                self.perceptions += 1
                self._cond.notify_all()

    def _replace_workers(self) -> None:
        """Stop the perception loop, replace the actors, start a new loop with no context."""
        with self._cond:
            self._stop = True
            self._epoch += 1  # whatever the old loop still finishes is dropped
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self.parts.restart()
        with self._cond:
            self._offered = None  # the new workers start from observations offered after the failure
        self._start_loop()

    def _loop_failure(self) -> WorkerDiedError:
        """The perception loop's end as an error: a dead or hung worker (replaced by ``step``), or the
        policy's own exception (raised again on every step: a new worker would fail the same way)."""
        message = f"decoupled perception worker died: {self._error!r}"
        crashed = self._error is not None and not isinstance(self._error, WorkerDiedError)
        return PerceptionCrashedError(message) if crashed else WorkerDiedError(message)

    def step(self, obs: Observation) -> Action:
        try:
            return self._step(obs)
        except PerceptionCrashedError:
            raise
        except WorkerDiedError as exc:
            raise self.recover(exc, obs.step_id, self._replace_workers) from exc

    def _step(self, obs: Observation) -> Action:
        start = self.clock.now()
        deadline = time.monotonic() + self._timeout
        with self._cond:
            if self._error is not None or not self._thread.is_alive():
                raise self._loop_failure()
            self._offered = obs
            self._cond.notify_all()
            while self._latest is None and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StepFailedError(f"no perception result within {self._timeout:.1f} s of the first step")
                self._cond.wait(left)
            if self._error is not None:
                raise self._loop_failure()
            context, source, perception_ms = self._latest
        generated = self.clock.now()
        actions = self.parts.generate(context)
        done = self.clock.now()
        return Action(
            actions[0],
            obs.step_id,
            obs.capture_time,
            StepTimings(
                stages_ms={"perception": perception_ms, "generation": (done - generated) * 1e3},
                latency_ms=(done - start) * 1e3,
            ),
            context_step_id=source.step_id,
            staleness_ms=(done - source.capture_time) * 1e3,
        )

    def workers(self) -> list[dict[str, Any]]:
        return self.parts.workers()

    @property
    def context_transport(self) -> str:
        return self.parts.context_transport

    def reset(self) -> None:
        self.parts.reset()
        with self._cond:
            self._episode += 1
            self._offered = None
            self._latest = None

    @property
    def hosted_policy(self) -> Policy | None:
        return self.parts.hosted_policy

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self.parts.close()
