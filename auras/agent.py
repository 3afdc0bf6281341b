"""AurasAgent: the user-facing facade.

    from auras import AurasAgent, load_config
    with AurasAgent(load_config("default")) as agent:
        action = agent.step(observation)   # auras.Observation -> auras.Action

``step`` validates the observation against the policy's spec before anything runs, so bad input is
answered with an InvalidInputError and leaves the agent usable. ``close`` is idempotent.

What ``step(obs)`` means per mode: it admits ``obs`` and returns the newest action available.
sequential: the action computed from ``obs``. decoupled: generation on the newest finished
perception. parallel: the newest action any worker finished. pipeline / auras: one frame runs; its
action comes from a request admitted L - 1 frames ago (``Action.step_id``), conditioned in auras mode
on the freshest context (``Action.context_step_id``). Only the first call after construction or
``reset`` blocks until the pipeline has filled. Every action says where it came from and how stale
its inputs were (``staleness_frames``, ``staleness_ms``), with per-stage timings.

For control loops where the camera and the actuators run at their own rates, ``agent.stream()``
(see auras/stream.py) takes observations from any thread and yields actions in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from auras.clock import SYSTEM_CLOCK, Clock
from auras.config import AurasConfig
from auras.devices import DeviceProbe
from auras.errors import AgentClosedError, ConfigError, InvalidInputError
from auras.pipeline import build_executor
from auras.pipeline.base import Executor
from auras.policies.base import Policy, PolicySpec
from auras.stream import ActionStream
from auras.types import Action, Observation, ObservationSpec

__all__ = ["AurasAgent"]


class AurasAgent:
    """Runs one policy under one execution mode. Use from one thread at a time."""

    def __init__(
        self,
        config: AurasConfig | None = None,
        *,
        policy: Policy | None = None,
        device_probe: DeviceProbe | None = None,
        executor: Executor | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Build the agent of ``config`` (defaults: AurasConfig()).

        The policy is ``config.policy.type`` from the policy registry (auras.registry:
        shipped, registered with ``register_policy``, or from an installed package's entry point),
        built by the workers that host it. ``policy``: run this prebuilt perception/generation pair
        instead (shipped to the workers as is). ``device_probe``: what torch sees, for the device
        checks (default: ask torch where the policy runs; tests inject one to exercise GPU placement
        without CUDA). ``executor``: run this executor (built with :func:`auras.pipeline.build_executor`,
        or one of your own that keeps the :class:`~auras.pipeline.base.Executor` contract) instead of
        building one. ``clock``: the time pacing, streams and the adaptive controller read and wait on
        (default: the system's; :class:`auras.clock.FakeClock` makes timing exact in tests).
        """
        self.config = config if config is not None else AurasConfig()
        if not isinstance(self.config, AurasConfig):
            raise InvalidInputError(
                f"AurasAgent(config): expected an auras.AurasConfig, got {type(config).__name__}; "
                "build one with auras.load_config(...)"
            )
        if policy is not None and not isinstance(policy, Policy):
            raise InvalidInputError(f"AurasAgent(policy=...): expected an auras Policy, got {type(policy).__name__}")
        if executor is not None and (policy is not None or device_probe is not None):
            raise InvalidInputError("AurasAgent: give an executor, or a policy / device_probe to build one, not both")
        if executor is not None and not isinstance(executor, Executor):
            got = type(executor).__name__
            raise InvalidInputError(f"AurasAgent(executor=...): expected an auras Executor, got {got}")
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        if not isinstance(self._clock, Clock):
            raise InvalidInputError(f"AurasAgent(clock=...): expected now() and sleep(), got {clock!r:.60}")
        self._executor = executor if executor is not None else build_executor(self.config, policy, device_probe)
        self._executor.clock = self._clock  # latency, staleness and the controller's frame times
        self._lock = threading.Lock()
        self._closed = False

    @property
    def policy_spec(self) -> PolicySpec:
        """The policy as the runtime knows it (weightless): observation spec, action shape, family,
        execute_steps, stage counts."""
        return self._executor.spec

    @property
    def spec(self) -> ObservationSpec:
        """What each observation must carry."""
        return self._executor.spec.observation

    @property
    def execute_steps(self) -> int:
        """Rows of each action chunk the robot executes before the next observation is used."""
        return self._executor.spec.execute_steps

    @property
    def privileged(self) -> bool:
        """True when the policy reads simulator state a real robot does not have."""
        return self._executor.spec.privileged

    @property
    def hosted_policy(self) -> Policy | None:
        """The policy object when this process hosts it (local backend); None on the ray backend,
        whose actors hold it."""
        return self._executor.hosted_policy

    @property
    def policy(self) -> Policy:
        """The policy object, where this process hosts it (local backend); on the ray backend the
        policy lives in the actors and this raises (use ``policy_spec``)."""
        hosted = self._executor.hosted_policy
        if hosted is None:
            raise ConfigError(
                f"AurasAgent.policy: the {self.config.pipeline.backend} backend hosts the policy in its workers, "
                "not in this process; use agent.policy_spec for what the runtime knows of it"
            )
        return hosted

    def step(self, obs: Observation) -> Action:
        """Admit ``obs`` and return the action to apply now (blocks until it is ready)."""
        if self._closed:
            raise AgentClosedError("AurasAgent.step called after close(); build a new agent")
        if not isinstance(obs, Observation):
            raise InvalidInputError(f"AurasAgent.step: expected an auras.Observation, got {type(obs).__name__}")
        self.spec.check(obs)
        with self._lock:
            return self._executor.step(obs)

    def stream(
        self, on_event: Callable[[dict], None] | None = None, on_action: Callable[[Action], None] | None = None
    ) -> ActionStream:
        """A streaming form of this agent: ``submit`` observations, iterate actions (auras/stream.py).
        ``on_event`` hears of recoveries (a worker replaced) without stopping the stream; ``on_action``,
        if given, receives each action in the stream's thread instead of the iteration."""
        if self._closed:
            raise AgentClosedError("AurasAgent.stream called after close(); build a new agent")
        return ActionStream(self, on_event, on_action)

    def stats(self) -> dict[str, Any]:
        """Where and how the policy runs: ``mode``, ``backend``, ``workers`` (one entry per worker:
        role, pid, device, Ray's ``gpu_ids`` and ``node`` on the ray backend, compiled graphs and
        the time compiling took there), ``context_transport`` (how contexts reach generation:
        ``in-process``, ``host`` or ``pinned-host``, see ``auras.context.tensors.TRANSPORTS``),
        ``compile`` (``policy.compile``) with ``compile_ms`` summed over workers (startup, never
        throughput), ``startup_ms`` (the pipeline's serial startup, when it ran), ``restarts`` and
        ``controller`` (the adaptive controller's depth, measurements and re-plans; None when static)."""
        if self._closed:
            raise AgentClosedError("AurasAgent.stats called after close(); build a new agent")
        with self._lock:
            workers = self._executor.workers()
            transport = self._executor.context_transport
        for worker in workers:
            if worker.get("device") is None:
                worker["device"] = self.config.policy.device
        return {
            "mode": self.config.pipeline.mode,
            "backend": self.config.pipeline.backend,
            "workers": workers,
            "context_transport": transport,
            "compile": self.config.policy.compile,
            "compile_ms": sum(w.get("compile_ms", 0.0) for w in workers),
            "startup_ms": self._executor.startup_ms,
            "restarts": self.restarts,
            "controller": self._executor.controller_stats(),
        }

    @property
    def frame_period_s(self) -> float | None:
        """The adaptive controller's frame period (``pipeline.controller: adaptive``), else None."""
        return self._executor.frame_period_s

    @property
    def restarts(self) -> int:
        """How many times a dead (or hung) worker was replaced (Ray backend, every mode)."""
        return self._executor.restarts

    @property
    def executor(self) -> Executor:
        """The executor that schedules the policy's perception and generation (auras.pipeline)."""
        return self._executor

    @property
    def clock(self) -> Clock:
        """The time this agent reads and waits on (pacing, streams, the controller)."""
        return self._clock

    def reset(self) -> None:
        """Start a new episode: drop in-flight work and per-episode policy state."""
        if self._closed:
            raise AgentClosedError("AurasAgent.reset called after close(); build a new agent")
        with self._lock:
            self._executor.reset()

    def close(self) -> None:
        """Release workers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.close()

    def __enter__(self) -> AurasAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
