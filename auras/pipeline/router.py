"""Several frame engines behind one server: each new robot goes to the engine with the most room.

    router = EngineRouter([build_engine(config) for _ in range(2)])   # e.g. one engine per GPU
    executor = build_executor(config, engine=router.assign())         # the least loaded engine

Every engine holds its own copy of the model on its own device(s) (on Ray: its own actors, placed by
Ray wherever the cluster has room), so engines fail alone: when an engine's worker dies, the engine
replaces its workers and only its own robots see a restart (each exactly one); the robots of the
other engines see nothing. A robot stays on the engine it was assigned for its session's life, and a
robot that comes back (a new session under the same name) returns to its engine unless that engine
now serves more than one robot more than the least loaded one (session affinity, within balance).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from auras.pipeline.engine import FrameEngine

__all__ = ["EngineRouter"]


class EngineRouter:
    """Assigns sessions to the least loaded of ``engines`` (fewest sessions attached; the first on a tie),
    or a returning robot to its engine (see the module docstring)."""

    stats_key = "engines"  # where a server's stats reply puts :meth:`stats`

    def __init__(self, engines: Sequence[FrameEngine]) -> None:
        if not engines:
            raise ValueError("EngineRouter: expected at least one engine")
        self.engines = list(engines)
        self._lock = threading.Lock()
        self._homes: dict[str, FrameEngine] = {}  # robot name -> the engine it was last assigned
        self._judged: dict[str | None, FrameEngine] = {}  # robot -> the engine admission judged it by

    def assign(self, robot: str | None = None) -> FrameEngine:
        """The engine the next robot (named ``robot``, if known) joins: the one :meth:`engine_for` last gave
        it (admission judged the robot by that engine, even if a robot left since), else the one with most room."""
        with self._lock:
            engine = self._judged.pop(robot, None) or self._choose(robot)
            if robot is not None:
                self._homes[robot] = engine
            return engine

    def _choose(self, robot: str | None) -> FrameEngine:
        least = min(self.engines, key=lambda e: e.sessions)
        home = self._homes.get(robot) if robot is not None else None
        return home if home is not None and home.sessions <= least.sessions + 1 else least

    def engine_for(self, robot: str | None = None) -> FrameEngine:
        """The engine the robot is judged by at admission; its :meth:`assign` that follows gives it this one."""
        with self._lock:
            engine = self._judged[robot] = self._choose(robot)
            return engine

    def forget_judgement(self, robot: str | None = None) -> None:
        """The robot was refused: its :meth:`engine_for` no longer binds its next :meth:`assign`."""
        with self._lock:
            self._judged.pop(robot, None)

    def admission_rate_hz(self, robot: str | None = None) -> float | None:
        """The per-robot rate the engine a new robot would join predicts with it (None: nothing measured)."""
        with self._lock:
            engine = self._choose(robot)
        return engine.admission_rate_hz()

    def stats(self) -> list[dict[str, Any]]:
        return [engine.stats() for engine in self.engines]

    def close(self) -> None:
        for engine in self.engines:
            engine.close()
