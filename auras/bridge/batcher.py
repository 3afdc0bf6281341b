"""One perception model shared by many agents, with their calls batched (`auras serve`, many robots).

    batcher = PerceptionBatcher(policy.perception, wait_ms=2.0)
    view = batcher.view()          # a Perception for one agent; give each robot's agent its own view
    context = view.perceive(obs)   # blocks until the batch that holds these observations has run

Each robot's agent keeps its own pipeline (generation, public context, frames); only the perception
call is shared. A worker thread collects the ``perceive`` calls of all views and runs them as one
batched call on the shared model, then hands each view the rows of the context that belong to it.

When a batch runs: as soon as every *active* view (one that called within ``active_window_s``) has a
call waiting, or ``max_batch`` observations are waiting, or the oldest call has waited ``wait_ms``.
So a lone robot never waits, and robots whose frames line up share one call. Calls are served in
arrival order (fair: no view can starve another). If a batched call fails, each call of the batch is
retried alone, so one robot's failure is never another robot's error.

Views have one stage (``perceive``), so pipelines that share perception use ``pp_perception = 1``.
The batcher lives in one process: it serves the local backend only.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from auras.errors import AgentClosedError
from auras.perception.base import Context, Perception
from auras.types import Observation, ObservationSpec

__all__ = ["PerceptionBatcher", "SharedPerceptionView"]


@dataclass
class _Call:
    view: int
    observations: list[Observation]
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    context: Context | None = None
    error: BaseException | None = None


class PerceptionBatcher:
    """Runs the ``perceive`` calls of many :class:`SharedPerceptionView` s as batched calls of one model."""

    def __init__(
        self, perception: Perception, *, max_batch: int = 16, wait_ms: float = 2.0, active_window_s: float = 0.5
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: expected >= 1, got {max_batch}")
        if wait_ms < 0 or active_window_s <= 0:
            raise ValueError(f"wait_ms >= 0 and active_window_s > 0 expected, got {wait_ms}, {active_window_s}")
        self.perception = perception
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.active_window_s = active_window_s
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._last_call: dict[int, float] = {}
        self._ids = itertools.count()
        self._closed = False
        self.batches = 0
        self.observations = 0
        self.retried_alone = 0
        self._thread = threading.Thread(target=self._run, name="auras-perception-batcher", daemon=True)
        self._thread.start()

    def view(self) -> SharedPerceptionView:
        """A Perception for one agent, backed by this batcher."""
        return SharedPerceptionView(self, next(self._ids))

    stats_key = "shared_perception"  # where a server's stats reply puts :meth:`stats`

    def stats(self) -> dict[str, Any]:
        """Batches run, observations encoded, mean batch size, calls retried alone after a batch failed."""
        return {
            "batches": self.batches, "observations": self.observations, "retried_alone": self.retried_alone,
            "mean_batch": self.observations / self.batches if self.batches else 0.0,
        }

    def perceive(self, view: int, observations: Sequence[Observation]) -> Context:
        """Encode ``observations`` for ``view`` within a shared batch (blocks until done)."""
        call = _Call(view, list(observations))
        with self._cond:
            if self._closed:
                raise AgentClosedError("the shared perception was closed (the server is shutting down)")
            self._pending.append(call)
            self._last_call[view] = call.arrived
            self._cond.notify_all()
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.context is not None
        return call.context

    def forget(self, view: int) -> None:
        """``view`` has closed: stop waiting for its calls."""
        with self._cond:
            self._last_call.pop(view, None)
            self._cond.notify_all()

    def close(self) -> None:
        """Serve what is waiting, then stop the worker. Later calls raise AgentClosedError. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _next_batch(self) -> list[_Call] | None:
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            while not self._closed:
                now = time.monotonic()
                active = {v for v, t in self._last_call.items() if now - t < self.active_window_s}
                waiting = {c.view for c in self._pending}
                deadline = self._pending[0].arrived + self.wait_s
                if sum(len(c.observations) for c in self._pending) >= self.max_batch or active <= waiting:
                    break
                if now >= deadline:
                    break
                self._cond.wait(deadline - now)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0].observations) <= self.max_batch):
                call = self._pending.pop(0)
                batch.append(call)
                size += len(call.observations)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._serve(batch)
            finally:
                for call in batch:
                    call.done.set()

    def _serve(self, batch: list[_Call]) -> None:
        observations = [obs for call in batch for obs in call.observations]
        try:
            context = self.perception.perceive(observations)
        except BaseException as exc:  # handed to the caller(s), never lost
            if len(batch) == 1:
                batch[0].error = exc
                return
            self.retried_alone += len(batch)
            for call in batch:
                try:
                    call.context = self.perception.perceive(call.observations)
                except BaseException as own:
                    call.error = own
            return
        self.batches += 1
        self.observations += len(observations)
        start = 0
        for call in batch:
            stop = start + len(call.observations)
            call.context = {name: value[start:stop] for name, value in context.items()}
            start = stop


class SharedPerceptionView(Perception):
    """One agent's handle on a :class:`PerceptionBatcher` (the same spec and outputs as the shared model)."""

    def __init__(self, batcher: PerceptionBatcher, view_id: int) -> None:
        self._batcher = batcher
        self._id = view_id

    @property
    def spec(self) -> ObservationSpec:
        return self._batcher.perception.spec

    def perceive(self, observations: Sequence[Observation]) -> Context:
        return self._batcher.perceive(self._id, observations)

    def to(self, device: str, dtype: str = "float32") -> None:
        """Nothing to move: the server built the shared perception on its device before any session."""

    def close(self) -> None:
        """This agent is done: the batcher stops waiting for it."""
        self._batcher.forget(self._id)
