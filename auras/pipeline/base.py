"""Executor contract: how a policy's perception and generation are scheduled (one per mode).

The agent owns exactly one executor and calls it from one thread. ``step`` admits one observation
(already validated against the policy's spec) and returns the action the mode makes available.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from auras.clock import SYSTEM_CLOCK, Clock
from auras.compiled import CompileStats, compile_stats
from auras.errors import WorkerRestartedError
from auras.policies.base import Policy, PolicySpec
from auras.types import Action, Observation

__all__ = ["Executor", "local_worker"]


def local_worker(role: str, since: CompileStats | None = None) -> dict[str, Any]:
    """The :meth:`Executor.workers` entry of a worker in this process; compiled stages counted
    ``since`` a snapshot of :func:`~auras.compiled.compile_stats` (this process's graphs are shared
    by every agent in it)."""
    now, base = compile_stats(), since or CompileStats(0, 0.0)
    return {"role": role, "pid": os.getpid(), "device": None, "compile_graphs": now.graphs - base.graphs,
            "compile_ms": now.compile_ms - base.compile_ms}


class Executor(ABC):
    """``spec`` describes the policy the executor's workers host (the driver holds no weights).

    What the agent asks of every executor: ``step``, ``reset``, ``close``, ``workers()``,
    ``context_transport``, ``hosted_policy``, ``restarts`` and ``incidents`` (worker replacements),
    ``startup_ms`` (the pipeline's serial startup, once it ran; else None), ``frame_period_s`` (the period
    an adaptive controller asks frames to start on; None without one) and ``controller_stats()`` (None
    without a controller)."""

    startup_ms: float | None = None
    clock: Clock = SYSTEM_CLOCK  # what latency and staleness are stamped with (the agent sets its own)

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self.incidents: list[dict[str, Any]] = []  # one per restart: where, why, how long recovery took
        self.built_at = compile_stats()  # this process's compiled stages before this executor's

    def recover(self, cause: BaseException, lost: int, replace: Callable[[], None], **where: Any) -> Exception:
        """Replace dead workers with ``replace()`` (which raises WorkerDiedError itself when no new
        worker can be started), record the incident, and return the WorkerRestartedError to raise:
        observation ``lost`` (its step id) produced no action; the agent stays usable."""
        start = time.perf_counter()
        replace()
        self.incidents.append({**where, "step_id": lost, "cause": str(cause)[:300],
                               "recovery_ms": (time.perf_counter() - start) * 1e3})
        return WorkerRestartedError(
            f"a worker died or missed its deadline ({cause}); it was replaced and serving resumes on the next "
            f"step; observation {lost} produced no action"
        )

    @property
    def restarts(self) -> int:
        """Workers replaced after dying or missing their deadline (one per incident)."""
        return len(self.incidents)

    @property
    def hosted_policy(self) -> Policy | None:
        """The policy object when this process hosts it (local backend), else None (Ray actors do)."""
        return None

    def workers(self) -> list[dict[str, Any]]:
        """Where the policy runs, one entry per worker: ``role``, ``pid``, ``device`` (None: the
        configured one, in this process), and on Ray ``gpu_ids`` and ``node``; compiled stages as
        ``compile_graphs`` / ``compile_ms``. Default: one in-process worker."""
        return [local_worker("perception+generation", self.built_at)]

    @property
    def context_transport(self) -> str:
        """How contexts reach generation (a key of ``auras.context.tensors.TRANSPORTS``)."""
        return "in-process"

    @property
    def frame_period_s(self) -> float | None:
        """The period frames should start on, as an adaptive controller plans it; None without one."""
        return None

    def controller_stats(self) -> dict[str, Any] | None:
        """The adaptive controller's depth, measurements and re-plans; None without one."""
        return None

    @abstractmethod
    def step(self, obs: Observation) -> Action:
        """Admit ``obs`` and return the action for the robot to apply now."""

    @abstractmethod
    def reset(self) -> None:
        """Drop in-flight work and per-episode state of the policy, wherever it runs (new episode)."""

    def close(self) -> None:  # noqa: B027  (optional: executors without workers hold nothing)
        """Release workers; idempotent."""
