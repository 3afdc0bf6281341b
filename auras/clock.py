"""The time auras reads: one seam (``now``, ``sleep``) that the agent hands to everything that measures or
waits (frame pacing, the action stream, the adaptive controller, the bench's virtual clock).

    agent = AurasAgent(config)                        # SystemClock: time.monotonic and time.sleep
    agent = AurasAgent(config, clock=FakeClock())     # time moves only when something sleeps or advances it

:class:`FakeClock` makes timing exact and repeatable: a paced frame waits exactly its period, a policy that
"computes" for 40 ms (``clock.sleep(0.04)``) takes exactly 40 ms, whatever the machine does meanwhile.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic timeline (only differences mean anything)."""

    def sleep(self, seconds: float) -> None:
        """Return ``seconds`` later on this clock's timeline."""


class SystemClock:
    """The machine's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told: ``sleep(s)`` and ``advance(s)`` move it ``s`` seconds forward at
    once (thread-safe). ``sleeps`` records every sleep, for tests that check what was waited."""

    def __init__(self, start: float = 1000.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"FakeClock.sleep: expected seconds >= 0, got {seconds}")
        with self._lock:
            self._t += seconds
            self.sleeps.append(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward without counting it as a sleep."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: expected seconds >= 0, got {seconds}")
        with self._lock:
            self._t += seconds
