"""How a worker process builds the policy it hosts.

The driver process (the agent) never needs the weights: a :class:`PolicySource` is the small,
picklable recipe that a worker (a Ray actor) turns into its own copy of the policy, on its own
device. From a config it goes through the policy registry (the factory is imported in the worker;
policies registered at run time in the driver are registered again there); a prebuilt Policy object
is shipped as it is (small test policies, policies not in the registry).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from auras.config import AurasConfig
from auras.devices import DeviceProbe, check_device
from auras.policies.base import Policy
from auras.policies.build import (
    build_policy,
    compile_policy,
    register_runtime_entries,
    runtime_entries,
    with_staleness_inputs,
)

__all__ = ["PolicySource"]


@dataclass(frozen=True)
class PolicySource:
    """config: the agent's configuration (policy type, checkpoint, device, dtype, threads, delays).
    policy: a prebuilt policy to host instead of building ``config.policy`` (shipped as is).
    entries: the driver's run-time registrations, repeated in the worker before building.
    probe: what torch sees, for the device check (default: ask torch in the worker; tests inject one)."""

    config: AurasConfig
    policy: Policy | None = None
    entries: dict[str, Any] = field(default_factory=dict)
    probe: DeviceProbe | None = None

    @classmethod
    def of(cls, config: AurasConfig, policy: Policy | None = None, probe: DeviceProbe | None = None) -> PolicySource:
        return cls(config, policy, {} if policy is not None else runtime_entries(), probe)

    @property
    def device(self) -> str:
        return self.config.policy.device

    def build(self, device: str | None = None) -> Policy:
        """The policy, in this process, on ``device`` (default: ``policy.device``) in ``policy.dtype``."""
        settings = self.config.policy
        device = check_device(device or settings.device, self.probe)
        if self.policy is None:
            register_runtime_entries(self.entries)
            config = self.config.model_copy(update={"policy": settings.model_copy(update={"device": device})})
            return build_policy(config, self.probe)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(settings.torch_threads)
        policy = self.policy.to(device, settings.dtype)
        compile_policy(policy, self.config)
        return with_staleness_inputs(policy, self.config)
