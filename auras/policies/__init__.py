"""Policies: perception + generation pairs, found by name in the policy registry (auras.registry)
and built where they run (build.py)."""

from __future__ import annotations

from auras.policies.build import build_policy, policy_factory
from auras.registry import policy_names, register_policy

__all__ = ["build_policy", "policy_factory", "policy_names", "register_policy"]
