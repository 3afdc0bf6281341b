"""Shipped policies, chosen by ``PolicyConfig.type`` through a small registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auras.errors import ConfigError, unknown_name_message

if TYPE_CHECKING:
    from auras.config import AurasConfig
    from auras.policies.base import Policy

__all__ = ["POLICY_TYPES", "PRIVILEGED_TYPES", "build_policy"]

POLICY_TYPES = ("expert", "tiny-vla", "tiny-dp")
PRIVILEGED_TYPES = ("expert",)  # read simulator state a real robot cannot have


def build_policy(config: AurasConfig) -> Policy:
    """Build the policy ``config.policy.type`` for ``config.env``, with the injected delays and size
    factors of ``config.policy`` (a size factor other than 1 gives random weights: throughput only)."""
    from auras.policies.delay import with_injected_delay

    kind = config.policy.type
    if kind == "expert":
        from auras.policies.expert import build_expert_policy

        if (config.policy.scale_perception, config.policy.scale_generation) != (1.0, 1.0):
            raise ConfigError("policy.scale_perception / scale_generation: the scripted expert has no model to scale")
        policy = build_expert_policy(config.env.task, config.env.image_size)
    elif kind in ("tiny-vla", "tiny-dp"):
        import torch

        from auras.policies.train import policy_class

        if config.policy.device != "cpu":
            raise ConfigError(
                f"policy.device: got {config.policy.device!r}; the shipped tiny policies run on 'cpu' "
                "(GPU placement arrives with the pipelined backends)"
            )
        torch.set_num_threads(config.policy.torch_threads)
        model = policy_class(kind).from_pretrained(config.policy.checkpoint or kind)
        model = model.scaled(config.policy.scale_perception, config.policy.scale_generation)
        policy = model.as_policy(config.policy.execute_steps)
    else:
        raise ConfigError(unknown_name_message("policy type", kind, POLICY_TYPES))
    return with_injected_delay(policy, config.policy.delay_perception_ms, config.policy.delay_generation_ms)
