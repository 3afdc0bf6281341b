"""Execution modes: executors that schedule perception and generation (see base.py).

Every mode runs on both backends: ``local`` (threads in this process) and ``ray`` (actors in a
placement group, see ray_backend.py). On ``ray``, sequential runs as a one-frame pipeline
(``pp_perception = pp_generation = 1``, which is exactly sequential execution) when the policy is
pipelinable, so that sequential and auras pay the same transport per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auras.errors import ConfigError, unknown_name_message

if TYPE_CHECKING:
    from auras.config import AurasConfig
    from auras.pipeline.base import Executor
    from auras.policies.base import Policy

__all__ = ["MODES", "build_executor"]

MODES = ("sequential", "decoupled", "parallel", "pipeline", "auras")


def build_executor(config: AurasConfig, policy: Policy, source: Any = None) -> Executor:
    """The executor of ``config.pipeline.mode`` on ``config.pipeline.backend``.

    ``source`` is what Ray actors build their own copy of the policy from: the config (default; each
    actor loads the checkpoint on its device) or a Policy object, shipped to the actors as is.
    """
    pipe = config.pipeline
    if pipe.mode not in MODES:
        raise ConfigError(unknown_name_message("pipeline mode", pipe.mode, MODES))
    from auras.pipeline.workers import is_iterative

    ray = pipe.backend == "ray"
    if ray:
        from auras.pipeline.ray_backend import use_cluster

        use_cluster(pipe.ray_address, pipe.placement)
    source = source if source is not None else config
    threads = config.policy.torch_threads
    if pipe.mode in ("pipeline", "auras") or (ray and pipe.mode == "sequential" and is_iterative(policy)):
        from auras.pipeline.frames import FrameExecutor, FrameShape

        if pipe.mode == "sequential":
            shape, public = FrameShape(1, 1, 0), False
        else:
            shape, public = FrameShape(pipe.pp_perception, pipe.pp_generation, pipe.fetch_offset), pipe.mode == "auras"
        make_runner = None
        if ray:
            from auras.pipeline.ray_backend import RayFrameRunner

            def make_runner(policy: Policy, *settings: Any) -> RayFrameRunner:
                return RayFrameRunner(source, *settings, threads=threads, timeout_s=pipe.worker_timeout_s)

        return FrameExecutor(policy, shape, public, pipe.alpha, pipe.emit, make_runner)
    if pipe.mode == "parallel":
        from auras.pipeline.parallel import ParallelExecutor, RayWorkerPool, ThreadWorkerPool

        pool = (RayWorkerPool(source, pipe.workers, threads, pipe.worker_timeout_s) if ray
                else ThreadWorkerPool(policy, pipe.workers))  # fmt: skip
        return ParallelExecutor(policy, pool)
    parts = None
    if ray:
        from auras.pipeline.ray_backend import RayPolicyParts

        parts = RayPolicyParts(source, threads, pipe.worker_timeout_s)
    if pipe.mode == "sequential":
        from auras.pipeline.sequential import SequentialExecutor

        return SequentialExecutor(policy, parts)
    from auras.pipeline.decoupled import DecoupledExecutor

    return DecoupledExecutor(policy, parts)
