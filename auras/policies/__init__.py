"""Shipped policies, chosen by ``PolicyConfig.type`` through a small registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auras.errors import ConfigError, unknown_name_message

if TYPE_CHECKING:
    from auras.config import AurasConfig
    from auras.policies.base import Policy

__all__ = ["POLICY_TYPES", "build_policy"]

POLICY_TYPES = ("expert", "tiny-vla", "tiny-dp")


def build_policy(config: AurasConfig) -> Policy:
    """Build the policy ``config.policy.type`` for ``config.env``."""
    kind = config.policy.type
    if kind == "expert":
        from auras.policies.expert import build_expert_policy

        return build_expert_policy(config.env.task, config.env.image_size)
    if kind in ("tiny-vla", "tiny-dp"):
        import torch

        from auras.policies.train import policy_class

        if config.policy.device != "cpu":
            raise ConfigError(
                f"policy.device: got {config.policy.device!r}; the shipped tiny policies run on 'cpu' "
                "(GPU placement arrives with the pipelined backends)"
            )
        torch.set_num_threads(config.policy.torch_threads)
        model = policy_class(kind).from_pretrained(config.policy.checkpoint or kind)
        return model.as_policy(config.policy.execute_steps)
    raise ConfigError(unknown_name_message("policy type", kind, POLICY_TYPES))
