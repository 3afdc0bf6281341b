"""The typed configuration of a policy's model: one pydantic class per policy, registered with it
(``register_policy(name, factory, config=ConfigClass)``), reachable as ``policy.model`` in
:class:`~auras.config.AurasConfig`.

    auras bench --policy tiny-dp --set policy.model.num_inference_steps=10   # validated against TinyDPConfig
    auras config show --policy tiny-dp --set policy.model.num_inference_step=10
    # -> ConfigError: policy.model: unknown key 'num_inference_step' for tiny-dp; did you mean 'num_inference_steps'?

A checkpoint stores every key of its class; ``policy.model`` overrides some of them when the policy is
built. Keys in ``SERVING_KEYS`` change how a trained model runs (denoising steps, execute steps, decoding)
and may be set on any checkpoint; the others change the weights' shapes or meaning and are set when a model
is trained (``auras train --set KEY=V``). ``TRAINING_KEYS`` change only training (augmentation, loss) and
may be set when a run continues from a checkpoint.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from auras.errors import ConfigError

__all__ = ["PolicyModelConfig"]


class PolicyModelConfig(BaseModel):
    """Base of every policy's model configuration: unknown keys are refused; subclasses declare fields
    (with defaults, types and bounds) and validators."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    policy_type: ClassVar[str] = "policy"
    SERVING_KEYS: ClassVar[frozenset[str]] = frozenset()
    TRAINING_KEYS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse(cls, values: Mapping[str, Any], where: str = "policy.model") -> Self:
        """A validated configuration from ``values`` (missing keys take their defaults); ConfigError naming
        each bad key with what was expected and what arrived, and the nearest known key for a misspelt one."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: expected a map of {cls.policy_type} settings, got {type(values).__name__}")
        unknown = sorted(str(k) for k in values if k not in cls.model_fields)
        if unknown:
            raise ConfigError(cls.unknown_keys_message(unknown, where))
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise ConfigError("\n  ".join(_describe(err, where) for err in exc.errors())) from None

    @classmethod
    def unknown_keys_message(cls, unknown: list[str], where: str = "policy.model") -> str:
        known = sorted(cls.model_fields)
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        listed = ", ".join(known) if known else "none: this policy has no model settings"
        return f"{where}: unknown key {', '.join(hints)} for {cls.policy_type}. Known keys: {listed}"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key with its default value (JSON types: what a checkpoint's config.json holds)."""
        return cls().model_dump(mode="json")

    @classmethod
    def check_overrides_of_trained(cls, overrides: Mapping[str, Any], checkpoint: str) -> None:
        """ConfigError unless every key of ``overrides`` may change on a trained checkpoint (serving keys)."""
        fixed = sorted(set(overrides) - cls.SERVING_KEYS - cls.TRAINING_KEYS)
        if fixed:
            raise ConfigError(
                f"policy.model: {', '.join(fixed)} cannot change on the trained checkpoint {checkpoint!r} (they set "
                f"the weights' shapes or meaning); keys a trained {cls.policy_type} accepts: "
                f"{', '.join(sorted(cls.SERVING_KEYS)) or 'none'}. Train a model with them instead: "
                f"auras train --policy {cls.policy_type} --set {fixed[0]}=VALUE"
            )


_EXPECTED = {
    "greater_than_equal": "expected a value >= {ge}", "greater_than": "expected a value > {gt}",
    "less_than_equal": "expected a value <= {le}", "less_than": "expected a value < {lt}",
    "literal_error": "expected {expected}", "too_short": "expected at least {min_length} items",
    "int_parsing": "expected an integer", "int_type": "expected an integer", "int_from_float": "expected an integer",
    "float_parsing": "expected a number", "float_type": "expected a number", "bool_parsing": "expected true or false",
    "bool_type": "expected true or false", "list_type": "expected a list", "string_type": "expected text",
}


def _describe(err: Any, where: str) -> str:
    """One line per refused value: the key, what was expected, what arrived."""
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "value_error":  # the configuration's own rule, worded with its key already
        return f"{where}: {err['msg'].removeprefix('Value error, ')}"
    template = _EXPECTED.get(err["type"])
    expected = template.format(**err.get("ctx", {})) if template else err["msg"]
    return f"{where}.{key}: {expected}, got {err['input']!r:.80}"
