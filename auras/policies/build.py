"""Building a registered policy in the process that hosts it.

The registry (:data:`auras.registry.POLICIES`) maps a name to a factory ``(AurasConfig) -> Policy``
or a class with a ``build_policy(config)`` classmethod (every
:class:`~auras.policies.torch_policy.LearnedPolicy`, which ``auras train`` can also train).
:func:`build_policy` is what the worker hosting a policy calls: it builds the policy, sets torch's
thread count, moves it to ``policy.device`` / ``policy.dtype``, compiles its stages
(``policy.compile``, :mod:`auras.compiled`), adds injected delays and lets perception carry what the
staleness strategy sends (:func:`with_staleness_inputs`). On the Ray
backend the actors call it themselves (the factory must be importable there: a module-level object
of an installed or importable package); entries registered at run time in the driver travel with
the actor's build recipe (:func:`runtime_entries`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from auras.devices import DeviceProbe, check_device
from auras.errors import ConfigError
from auras.generation.families import driver_for
from auras.generation.guidance import GuidanceRule
from auras.policies.base import Policy
from auras.policies.delay import with_injected_delay
from auras.policies.guide import with_action_guide
from auras.registry import POLICIES
from auras.staleness import resolve_strategy

if TYPE_CHECKING:
    from auras.config import AurasConfig

__all__ = [
    "PolicyFactory",
    "build_policy",
    "compile_policy",
    "policy_factory",
    "register_runtime_entries",
    "runtime_entries",
    "with_staleness_inputs",
]

PolicyFactory = Callable[["AurasConfig"], Policy]


def policy_factory(name: str) -> PolicyFactory:
    """The factory of ``name`` (ConfigError with the registered names when unknown)."""
    entry = POLICIES.get(name)
    return getattr(entry, "build_policy", entry)


def build_policy(config: AurasConfig, probe: DeviceProbe | None = None) -> Policy:
    """Build ``config.policy.type`` for ``config`` in this process: the factory's policy on
    ``policy.device`` in ``policy.dtype``, with ``policy.torch_threads`` and the injected delays.
    ``probe``: what torch sees (default: ask torch), for the device check."""
    name = config.policy.type
    check_device(config.policy.device, probe)  # before the factory loads anything: no quiet fallback
    policy = policy_factory(name)(config)
    if not isinstance(policy, Policy):
        raise ConfigError(f"policy {name!r}: its factory returned {type(policy).__name__}, expected an auras Policy")
    if "torch" in sys.modules:  # torch policies: one thread count per hosting process
        sys.modules["torch"].set_num_threads(config.policy.torch_threads)
    policy.to(config.policy.device, config.policy.dtype)
    compile_policy(policy, config)
    policy = with_injected_delay(policy, config.policy.delay_perception_ms, config.policy.delay_generation_ms)
    return with_staleness_inputs(policy, config)


def with_staleness_inputs(policy: Policy, config: AurasConfig) -> Policy:
    """``policy`` reading what ``staleness.strategy`` sends with each observation (rtc: the guide)."""
    if resolve_strategy(config.staleness.strategy, config.pipeline.mode).rtc:
        section = config.staleness
        return with_action_guide(policy, GuidanceRule(section.rtc_guidance, section.rtc_max_guidance))
    return policy


def compile_policy(policy: Policy, config: AurasConfig) -> None:
    """Apply ``policy.compile`` to both parts. Perception runs one request per call; generation batches
    as many rows as its family driver says the pipeline ever hands it at once (the in-flight requests in
    generation), so one graph per stage serves every frame."""
    mode = config.policy.compile
    if mode == "off":
        return
    frames = config.pipeline.mode in ("pipeline", "auras")
    pp_generation = config.pipeline.pp_generation if frames else 1
    rows = driver_for(policy.generation).batch_rows(pp_generation, public=config.pipeline.mode == "auras")
    policy.perception.compile(mode, 1)
    policy.generation.compile(mode, rows)


def runtime_entries() -> dict[str, Any]:
    """Policies registered at run time in this process: what a worker process must register too."""
    return POLICIES.registered_at_runtime()


def register_runtime_entries(entries: Mapping[str, Any]) -> None:
    """In a worker process: repeat the driver's run-time registrations (idempotent)."""
    for name, entry in entries.items():
        POLICIES.register(name, entry, replace=True)
