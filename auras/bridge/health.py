"""The health watchdog of a server whose sessions run on something that can be lost (the Ray cluster).

A thread runs ``check()`` every ``period_s``: a string is a problem, an exception one failed check. The
server's loop calls :meth:`HealthWatchdog.raise_if_lost` once a second; it raises WorkerDiedError when a
problem was found or when no check has succeeded for ``deadline_s`` (the checks fail or hang: Ray's GCS is
gone). Ray itself ends a driver that cannot reach its GCS after 60 s without telling the robots, so the
deadline is shorter: the server must stop first, and say why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from auras.errors import WorkerDiedError

__all__ = ["HealthWatchdog"]


class HealthWatchdog:
    def __init__(self, check: Callable[[], str | None], period_s: float = 2.0, deadline_s: float = 20.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.check, self.period_s, self.deadline_s, self.clock = check, period_s, deadline_s, clock
        self.ok_at = clock()
        self.problem: str | None = None
        self.error: str | None = None  # the last failed check, while no check succeeds
        self._stop = threading.Event()

    def start(self) -> HealthWatchdog:
        self.ok_at = self.clock()
        threading.Thread(target=self._run, name="auras-bridge-health", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if self.probe():
                return

    def probe(self) -> bool:
        """One check; True once a problem is found (the watchdog then stops checking)."""
        try:
            problem = self.check()
        except Exception as exc:  # one failed check is not yet a lost cluster (see raise_if_lost)
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        if problem is not None:
            self.problem = problem
            return True
        self.ok_at, self.error = self.clock(), None
        return False

    def raise_if_lost(self) -> None:
        """WorkerDiedError with the cause once a problem was found or the checks stayed silent too long."""
        problem = self.problem
        silent = self.clock() - self.ok_at
        if problem is None and silent > self.deadline_s:
            last = self.error or "no answer"
            problem = f"the Ray cluster did not answer health checks for {silent:.0f} s ({last}): its GCS is gone"
        if problem is not None:
            raise WorkerDiedError(problem)
