"""How work is cut into pipeline stages.

``split_evenly(n, stages)``: contiguous ranges of n layers (perception) of near-equal size.

``skewed_steps(total, stages, alpha)``: how many of a request's ``total`` generation iterations
(denoising steps) each of ``stages`` generation stages runs. Stage i (0 = first, oldest context;
stages - 1 = last, freshest context) gets a share proportional to ``exp(i * alpha)``; alpha = 0 is
uniform, alpha > 0 gives later (fresher) stages more steps.

Rounding (documented, deterministic): every stage first gets 1 step (a stage with no work would
break the one-request-per-stage-per-frame invariant); the remaining ``total - stages`` steps are
shared by the same weights with the largest-remainder method (floor each share, then hand the
leftover steps to the largest fractional parts, ties to the later stage). The result sums to
``total`` exactly and is monotone non-decreasing in i for alpha >= 0.
"""

from __future__ import annotations

import itertools
import math

from auras.errors import ConfigError

__all__ = ["skewed_steps", "split_evenly"]


def split_evenly(n: int, stages: int) -> list[range]:
    """``stages`` contiguous ranges covering range(n), sizes differing by at most one (larger first)."""
    if stages < 1 or n < stages:
        raise ConfigError(f"cannot cut {n} layers into {stages} stages: expected 1 <= stages <= {n}")
    base, extra = divmod(n, stages)
    bounds = [0]
    for i in range(stages):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def skewed_steps(total: int, stages: int, alpha: float = 0.0) -> list[int]:
    """Steps per generation stage: shares ∝ exp(i * alpha), each >= 1, summing to ``total``."""
    if stages < 1:
        raise ConfigError(f"pp_generation: expected >= 1, got {stages}")
    if total < stages:
        raise ConfigError(
            f"cannot spread {total} generation iterations over {stages} stages: every stage needs at least one "
            f"(use pp_generation <= {total})"
        )
    if not math.isfinite(alpha):
        raise ConfigError(f"alpha: expected a finite number, got {alpha!r}")
    weights = [math.exp(i * alpha) for i in range(stages)]
    remaining = total - stages
    shares = [remaining * w / sum(weights) for w in weights]
    steps = [1 + math.floor(s) for s in shares]
    leftover = total - sum(steps)
    order = sorted(range(stages), key=lambda i: (shares[i] - math.floor(shares[i]), i), reverse=True)
    for i in order[:leftover]:
        steps[i] += 1
    return steps
