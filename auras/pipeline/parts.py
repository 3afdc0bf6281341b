"""A policy's two halves as two workers, called one request at a time (decoupled mode).

:class:`PolicyParts` places a :class:`PerceiveWorker` and a :class:`GenerateWorker` on a backend.
``perceive`` answers with a pending context (the context itself in this process; on Ray an ObjectRef
whose context stays in the object store and goes from the perception actor to the generation actor
without passing through the driver); ``generate`` takes it and returns the actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auras.context.tensors import as_numpy, as_torch
from auras.errors import WorkerDiedError
from auras.pipeline.backend import Backend, WorkerGroup, WorkerRecipe
from auras.policies.base import Policy, PolicySpec
from auras.types import Observation

__all__ = ["GenerateWorker", "PerceiveWorker", "PolicyParts"]


class PerceiveWorker:
    """Runs a policy's whole perception on a batch of observations; contexts that leave the process go as
    host numpy arrays."""

    def __init__(self, policy: Policy, *, device: str = "cpu", transport: str = "in-process") -> None:
        self.perception, self.transport = policy.perception, transport

    def run(self, observations: Sequence[Observation]) -> Any:
        context = self.perception.perceive(observations)
        if self.transport == "in-process":
            return context
        return as_numpy(context, pinned=self.transport == "pinned-host")

    def reset(self) -> None:
        self.perception.reset()

    def describe(self) -> dict[str, Any]:
        return {"worker": "perceive"}

    def close(self) -> None:
        """Nothing to release."""


class GenerateWorker:
    """Runs a policy's whole generation on a context; returns (B, A) or (B, H, A) actions."""

    def __init__(self, policy: Policy, *, device: str = "cpu", transport: str = "in-process") -> None:
        self.generation = policy.generation
        self.device = None if transport == "in-process" or device == "cpu" else device
        self.pinned = transport == "pinned-host"

    def run(self, context: Any) -> Any:
        return self.generation.generate(as_torch(context, self.device, pinned=self.pinned))

    def reset(self) -> None:
        self.generation.reset()

    def describe(self) -> dict[str, Any]:
        return {"worker": "generate"}

    def close(self) -> None:
        """Nothing to release."""


class PolicyParts:
    """Perception and generation of one policy as two workers on ``backend``. A call not answered within
    the backend's deadline counts as a dead worker (WorkerDiedError); ``restart`` replaces both."""

    RECIPES = (WorkerRecipe("perception", PerceiveWorker), WorkerRecipe("generation", GenerateWorker))

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.group: WorkerGroup | None = None
        self._start()

    def _start(self) -> None:
        self.group = self.backend.place(self.RECIPES)
        self.spec: PolicySpec = self.group.spec
        self._hosted = self.group.hosted_policy

    def _live(self) -> WorkerGroup:
        if self.group is None:
            raise WorkerDiedError(f"{self.backend.name} backend is closed; build a new agent")
        return self.group

    @property
    def context_transport(self) -> str:
        return self._live().context_transport

    @property
    def hosted_policy(self) -> Policy | None:
        """The policy when this process hosts it, also after ``close`` (its owner may still release
        what it registered, e.g. a shared-perception view)."""
        return self._hosted

    def workers(self) -> list[dict[str, Any]]:
        return self._live().describe()

    def perceive(self, observations: Sequence[Observation]) -> Any:
        """The pending context of ``observations``, once it is ready."""
        group = self._live()
        pending = group.submit(0, list(observations))
        if not group.finished([pending], group.timeout_s):
            raise WorkerDiedError(f"{self.backend.name} backend: perception did not answer within "
                                  f"{group.timeout_s:.1f} s")
        return pending

    def generate(self, context: Any) -> Any:
        group = self._live()
        return group.result(group.submit(1, context))

    def reset(self) -> None:
        """A new episode reaches both workers' policies."""
        group = self._live()
        for index in range(len(self.RECIPES)):
            group.reset(index)

    def restart(self) -> None:
        """Replace both workers (dead or alive) with fresh ones; raises if none can be started."""
        self.close()
        self._start()

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = None
