"""Named registries of pluggable components (policies, generation families), extensible by packages.

A :class:`Registry` maps a name to an entry: the object itself, or an import path ``"module:attr"``
that is imported on first use (so registering the shipped torch policies costs nothing until one is
built). Installed packages add entries through a Python entry-point group (``auras.policies``,
``auras.families``) without touching auras:

    # the package's pyproject.toml
    [project.entry-points."auras.policies"]
    my-policy = "my_package.policy:build"

An unknown name is a :class:`~auras.errors.ConfigError` that lists the registered names and
suggests the closest. Entries registered at run time with :meth:`Registry.register` are returned by
:meth:`Registry.registered_at_runtime`, so a backend can repeat them in its worker processes.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from auras.errors import ConfigError, InvalidInputError, unknown_name_message

__all__ = [
    "FAMILIES",
    "POLICIES",
    "POLICY_CONFIGS",
    "Registry",
    "load_object",
    "policy_config_class",
    "policy_names",
    "register_family",
    "register_policy",
]

T = TypeVar("T")


def load_object(path: str) -> Any:
    """``"package.module:attr.sub"`` -> that object; a clear error when it cannot be imported."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInputError(f"import path: expected 'package.module:attribute', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"import path {path!r}: cannot import module {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidInputError(f"import path {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name -> entry. ``kind`` names the entries in messages ('policy'); ``group`` is the entry-point
    group scanned once, on the first lookup that misses the built-in and run-time entries."""

    def __init__(self, kind: str, group: str, check: Callable[[str, Any], None] | None = None) -> None:
        self.kind, self.group = kind, group
        self._check = check
        self._entries: dict[str, T | str] = {}
        self._runtime: dict[str, T | str] = {}
        self._scanned = False
        self._lock = threading.Lock()

    def register(self, name: str, entry: T | str, *, replace: bool = False, builtin: bool = False) -> None:
        """Add ``entry`` (an object or an import path 'module:attr') under ``name``.

        A name already taken is refused unless ``replace``: two packages must not silently fight over it.
        """
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise InvalidInputError(
                f"{self.kind} name: expected non-empty text without surrounding spaces, got {name!r}"
            )
        if isinstance(entry, str):
            if ":" not in entry:
                raise InvalidInputError(
                    f"{self.kind} {name!r}: expected an object or an import path 'module:attr', got {entry!r}"
                )
        elif self._check is not None:
            self._check(name, entry)
        with self._lock:
            if name in self._entries and not replace and self._entries[name] is not entry:
                raise InvalidInputError(
                    f"{self.kind} {name!r} is already registered ({self._describe(self._entries[name])}); "
                    f"pass replace=True to override it"
                )
            self._entries[name] = entry
            if not builtin:
                self._runtime[name] = entry

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests, plugins that unload)."""
        with self._lock:
            self._entries.pop(name, None)
            self._runtime.pop(name, None)

    def get(self, name: str) -> T:
        """The entry of ``name``, imported if it was registered by path."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            self._scan_entry_points()
            with self._lock:
                entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(unknown_name_message(self.kind, name, self.names()))
        if isinstance(entry, str):
            obj = load_object(entry)
            if self._check is not None:
                self._check(name, obj)
            with self._lock:
                if self._entries.get(name) == entry:
                    self._entries[name] = obj
                    if name in self._runtime:
                        self._runtime[name] = entry  # workers import it themselves
            return obj
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def names(self) -> list[str]:
        """Every registered name, entry points included."""
        self._scan_entry_points()
        with self._lock:
            return sorted(self._entries)

    def refresh(self) -> None:
        """Scan the entry-point group again on the next lookup (a package installed after the first scan)."""
        with self._lock:
            self._scanned = False

    def registered_at_runtime(self) -> dict[str, T | str]:
        """Entries added with :meth:`register` in this process (not built in, not from entry points):
        what another process must register again to see the same names."""
        with self._lock:
            return dict(self._runtime)

    def _scan_entry_points(self) -> None:
        if self._scanned:
            return
        found = metadata.entry_points(group=self.group)
        with self._lock:
            for point in found:
                self._entries.setdefault(point.name, point.value)
            self._scanned = True

    @staticmethod
    def _describe(entry: Any) -> str:
        if isinstance(entry, str):
            return entry
        return f"{getattr(entry, '__module__', '?')}:{getattr(entry, '__qualname__', type(entry).__name__)}"


# -- the registries ---------------------------------------------------------------------------------


def _check_policy_entry(name: str, entry: Any) -> None:
    if not callable(getattr(entry, "build_policy", entry)):
        raise ConfigError(
            f"policy {name!r}: expected a factory function (config -> auras Policy) or a class with a "
            f"build_policy(config) classmethod, got {entry!r}"
        )


def _check_family_entry(name: str, entry: Any) -> None:
    if not (isinstance(entry, type) and all(hasattr(entry, m) for m in ("iterations", "check_stages", "run"))):
        raise ConfigError(
            f"generation family {name!r}: expected a FamilyDriver subclass (auras.generation.families), got {entry!r}"
        )


POLICIES: Registry[Any] = Registry("policy", "auras.policies", _check_policy_entry)
"""Policy name -> factory ``(AurasConfig) -> Policy`` (or a class with ``build_policy``); see
auras.policies.build for how a worker builds one."""
POLICIES.register("expert", "auras.policies.expert:build_expert", builtin=True)
POLICY_CONFIGS: Registry[Any] = Registry("policy configuration", "auras.policy_configs", None)
"""Policy name -> its model configuration class (a pydantic model; ``policy.model`` in the config)."""
for _name, _path in (("tiny-vla", "auras.policies.tiny_vla.configuration:TinyVLAConfig"),
                     ("tiny-dp", "auras.policies.tiny_dp.configuration:TinyDPConfig"),
                     ("tiny-flow", "auras.policies.tiny_flow.configuration:TinyFlowConfig"),
                     ("smolvla", "auras.policies.smolvla_config:SmolVLAConfig"),
                     ("pi0", "auras.policies.pi0_config:Pi0Config"), ("pi05", "auras.policies.pi0_config:Pi05Config")):
    POLICY_CONFIGS.register(_name, _path, builtin=True)
POLICIES.register("tiny-vla", "auras.policies.tiny_vla.modeling:TinyVLA", builtin=True)
POLICIES.register("tiny-dp", "auras.policies.tiny_dp.modeling:TinyDP", builtin=True)
POLICIES.register("smolvla", "auras.policies.smolvla:build_smolvla", builtin=True)
POLICIES.register("pi0", "auras.policies.pi0:build_pi0", builtin=True)
POLICIES.register("pi05", "auras.policies.pi0:build_pi05", builtin=True)
POLICIES.register("tiny-flow", "auras.policies.tiny_flow.modeling:TinyFlow", builtin=True)
POLICY_CONFIGS.register("openvla", "auras.policies.openvla_config:OpenVLAConfig", builtin=True)
POLICIES.register("openvla", "auras.policies.openvla:build_openvla", builtin=True)

FAMILIES: Registry[Any] = Registry("generation family", "auras.families", _check_family_entry)
"""Generation family name -> its driver class (auras.generation.families)."""
for _family, _driver in (("oneshot", "OneShotDriver"), ("denoising", "DenoisingDriver"),
                         ("autoregressive", "AutoregressiveDriver")):
    FAMILIES.register(_family, f"auras.generation.families:{_driver}", builtin=True)


def register_policy(name: str, factory: Any, *, config: Any = None, replace: bool = False) -> None:
    """Make ``factory`` (``(AurasConfig) -> Policy``, or the import path 'module:attr' of one) runnable
    as ``policy.type = name`` everywhere: configs, ``auras bench/tune/serve``, both backends, every mode.
    On the Ray backend the actors import it by its module and name, so define it at module level.
    ``config``: the policy's model configuration class (a subclass of
    :class:`auras.policies.configuration.PolicyModelConfig`, or its import path), which validates
    ``policy.model``; the factory reads the validated settings from ``config.policy.model``."""
    POLICIES.register(name, factory, replace=replace)
    if config is not None:
        POLICY_CONFIGS.register(name, config, replace=replace)


def policy_config_class(name: str) -> Any:
    """The model configuration class registered for policy ``name`` (or its factory's ``config_class``),
    None when the policy has no model settings."""
    if name in POLICY_CONFIGS.names():
        return POLICY_CONFIGS.get(name)
    return getattr(POLICIES.get(name), "config_class", None)


def policy_names() -> list[str]:
    """Every registered policy name (shipped, run-time and entry-point ones)."""
    return POLICIES.names()


def register_family(name: str, driver: Any, *, replace: bool = False) -> None:
    """Add a generation family: generations whose ``family`` is ``name`` are driven by ``driver``."""
    FAMILIES.register(name, driver, replace=replace)
