"""Shipped policies, chosen by ``PolicyConfig.type`` through a small registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auras.errors import ConfigError, unknown_name_message

if TYPE_CHECKING:
    from auras.config import AurasConfig
    from auras.policies.base import Policy

__all__ = ["POLICY_TYPES", "build_policy"]

POLICY_TYPES = ("expert",)


def build_policy(config: AurasConfig) -> Policy:
    """Build the policy ``config.policy.type`` for ``config.env``."""
    kind = config.policy.type
    if kind == "expert":
        from auras.policies.expert import build_expert_policy

        return build_expert_policy(config.env.task, config.env.image_size)
    raise ConfigError(unknown_name_message("policy type", kind, POLICY_TYPES))
