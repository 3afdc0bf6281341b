"""Execution modes: executors that schedule perception and generation (see base.py).

Every mode runs on both backends: ``local`` (threads in this process, which hosts the policy) and
``ray`` (actors in a placement group, each building its own copy of the policy from a
:class:`~auras.pipeline.source.PolicySource`; see ray_backend.py). On ``ray``, sequential runs as a
one-frame pipeline (``pp_perception = pp_generation = 1``, which is exactly sequential execution),
so that sequential and auras pay the same transport per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auras.config import AurasConfig
from auras.devices import DeviceProbe, check_device
from auras.errors import ConfigError, unknown_name_message
from auras.pipeline.base import Executor
from auras.pipeline.controller import AdaptiveFrameExecutor, DepthController
from auras.pipeline.decoupled import DecoupledExecutor
from auras.pipeline.frames import FrameExecutor, FrameShape
from auras.pipeline.parallel import ParallelExecutor, RayWorkerPool, ThreadWorkerPool
from auras.pipeline.ray_backend import RayCluster, RayFrameRunner, RayPolicyParts
from auras.pipeline.sequential import SequentialExecutor
from auras.pipeline.source import PolicySource
from auras.policies.build import build_policy, compile_policy, with_staleness_inputs

if TYPE_CHECKING:
    from auras.policies.base import Policy

__all__ = ["MODES", "build_executor"]

MODES = ("sequential", "decoupled", "parallel", "pipeline", "auras")


def build_executor(
    config: AurasConfig, policy: Policy | None = None, device_probe: DeviceProbe | None = None
) -> Executor:
    """The executor of ``config.pipeline.mode`` on ``config.pipeline.backend``.

    ``policy``: a prebuilt policy to run instead of building ``config.policy`` from the registry.
    The local backend hosts the policy in this process; on the ray backend the actors build their
    own copies (from the config through the registry, or this object shipped as is) and this process
    keeps only the weightless :class:`~auras.policies.base.PolicySpec` (``executor.spec``).
    ``device_probe``: what torch sees, for the device checks (default: ask torch where the policy runs).
    The executor reads the system clock until its owner sets ``executor.clock`` (the agent does).
    """
    pipe = config.pipeline
    if pipe.mode not in MODES:
        raise ConfigError(unknown_name_message("pipeline mode", pipe.mode, MODES))
    if pipe.backend == "ray":
        return _ray_executor(config, PolicySource.of(config, policy, device_probe))
    check_device(config.policy.device, device_probe)  # before anything is built: no quiet fallback
    if policy is not None:
        policy.to(config.policy.device, config.policy.dtype)
        compile_policy(policy, config)
        local = with_staleness_inputs(policy, config)
    else:
        local = build_policy(config, device_probe)
    if pipe.mode in ("pipeline", "auras"):
        shape = FrameShape(pipe.pp_perception, pipe.pp_generation, pipe.fetch_offset)

        def frames(shape: FrameShape) -> FrameExecutor:
            return FrameExecutor(local, shape, pipe.mode == "auras", pipe.alpha, pipe.emit, device=config.policy.device)

        if pipe.controller == "adaptive":
            controller = DepthController(
                pipe.target_hz, local.spec.generation_iterations, pipe.pp_generation,
                window=pipe.controller_window, staleness_bound_ms=pipe.staleness_bound_ms,
                margin=pipe.pacing_margin, quantile=pipe.pacing_quantile,
            )
            return AdaptiveFrameExecutor(frames, shape, controller)
        return frames(shape)
    if pipe.mode == "parallel":
        return ParallelExecutor(ThreadWorkerPool(local, pipe.workers))
    if pipe.mode == "sequential":
        return SequentialExecutor(local)
    return DecoupledExecutor(local)


def _ray_executor(config: AurasConfig, source: PolicySource) -> Executor:
    pipe = config.pipeline
    cluster = RayCluster.from_config(pipe)
    if pipe.mode in ("pipeline", "auras", "sequential"):
        if pipe.mode == "sequential":
            shape, public = FrameShape(1, 1, 0), False
        else:
            shape, public = FrameShape(pipe.pp_perception, pipe.pp_generation, pipe.fetch_offset), pipe.mode == "auras"

        def make_runner(shape: FrameShape, public: bool, alpha: float, emit: str) -> RayFrameRunner:
            return RayFrameRunner(source, shape, public, alpha, emit, timeout_s=pipe.worker_timeout_s, cluster=cluster)

        return FrameExecutor(None, shape, public, pipe.alpha, pipe.emit, make_runner)
    if pipe.mode == "parallel":
        return ParallelExecutor(RayWorkerPool(source, pipe.workers, pipe.worker_timeout_s, cluster))
    return DecoupledExecutor(parts=RayPolicyParts(source, pipe.worker_timeout_s, cluster))
