"""Execution modes: executors that schedule perception and generation (see base.py).

Every mode is one executor over the backend seam (backend.py), so it runs on both backends: ``local``
(threads in this process, which hosts the policy) and ``ray`` (actors in a placement group, each
building its own copy of the policy from a :class:`~auras.pipeline.source.PolicySource`; see
ray_backend.py). Sequential runs as a one-frame pipeline (``pp_perception = pp_generation = 1``, which
is exactly sequential execution), so that sequential and auras pay the same transport per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auras.config import AurasConfig
from auras.devices import DeviceProbe, check_device
from auras.errors import ConfigError, unknown_name_message
from auras.pipeline.backend import Backend, ThreadBackend
from auras.pipeline.base import Executor
from auras.pipeline.controller import AdaptiveFrameExecutor, DepthController
from auras.pipeline.decoupled import DecoupledExecutor
from auras.pipeline.engine import FrameEngine
from auras.pipeline.frames import FrameExecutor, FrameShape
from auras.pipeline.parallel import ParallelExecutor
from auras.pipeline.ray_backend import RayBackend, RayCluster
from auras.pipeline.source import PolicySource
from auras.policies.build import build_policy, compile_policy, with_staleness_inputs

if TYPE_CHECKING:
    from auras.policies.base import Policy

__all__ = ["FRAME_MODES", "MODES", "build_backend", "build_engine", "build_executor", "engine_problem"]

MODES = ("sequential", "decoupled", "parallel", "pipeline", "auras")
FRAME_MODES = ("sequential", "pipeline", "auras")  # the modes that run as sessions of a frame engine


def engine_problem(config: AurasConfig) -> str | None:
    """Why sessions of ``config`` cannot share one frame engine, or None when they can."""
    pipe = config.pipeline
    if pipe.mode not in FRAME_MODES:
        return f"pipeline.mode {pipe.mode!r} does not run in frames (the engine serves {', '.join(FRAME_MODES)})"
    return None


def build_engine(
    config: AurasConfig, policy: Policy | None = None, device_probe: DeviceProbe | None = None,
    wait_ms: float | None = None,
) -> FrameEngine:
    """One frame engine for the sessions of ``config`` (see :mod:`auras.pipeline.engine`): its perception
    and generation workers, placed once on ``config.pipeline.backend``, serve every robot attached with
    ``build_executor(config, engine=...)``. ``wait_ms``: how long a frame waits for every session (default
    ``serve.engine_wait_ms``). ConfigError where the mode cannot share one."""
    problem = engine_problem(config)
    if problem is not None:
        raise ConfigError(f"a shared frame engine: {problem}")
    fetch_offset = 0 if config.pipeline.mode == "sequential" else config.pipeline.fetch_offset
    adaptive = config.pipeline.mode != "sequential" and config.pipeline.controller == "adaptive"
    return FrameEngine(build_backend(config, policy, device_probe), fetch_offset, contexts_to_caller=adaptive,
                       wait_ms=config.serve.engine_wait_ms if wait_ms is None else wait_ms)


def build_executor(
    config: AurasConfig, policy: Policy | None = None, device_probe: DeviceProbe | None = None,
    engine: FrameEngine | None = None,
) -> Executor:
    """The executor of ``config.pipeline.mode`` on ``config.pipeline.backend``.

    ``policy``: a prebuilt policy to run instead of building ``config.policy`` from the registry.
    The local backend hosts the policy in this process; on the ray backend the actors build their
    own copies (from the config through the registry, or this object shipped as is) and this process
    keeps only the weightless :class:`~auras.policies.base.PolicySpec` (``executor.spec``).
    ``device_probe``: what torch sees, for the device checks (default: ask torch where the policy runs).
    ``engine``: join this shared frame engine (:func:`build_engine`) as one more session instead of
    placing workers of its own (frame modes with a static shape).
    The executor reads the system clock until its owner sets ``executor.clock`` (the agent does).
    """
    pipe = config.pipeline
    if pipe.mode not in MODES:
        raise ConfigError(unknown_name_message("pipeline mode", pipe.mode, MODES))
    if engine is not None:
        problem = engine_problem(config)
        if problem is not None:
            raise ConfigError(f"build_executor(engine=...): {problem}")
        if pipe.mode == "sequential":
            return FrameExecutor(engine, FrameShape(1, 1, 0), public=False)
        shape = FrameShape(pipe.pp_perception, pipe.pp_generation, pipe.fetch_offset)
        if pipe.controller == "adaptive":
            return adaptive_executor(config, engine, shape)
        return FrameExecutor(engine, shape, pipe.mode == "auras", pipe.alpha, pipe.emit)
    backend = build_backend(config, policy, device_probe)
    if pipe.mode == "parallel":
        return ParallelExecutor(backend, pipe.workers)
    if pipe.mode == "decoupled":
        return DecoupledExecutor(backend)
    if pipe.mode == "sequential":
        return FrameExecutor(backend, FrameShape(1, 1, 0), public=False)
    shape = FrameShape(pipe.pp_perception, pipe.pp_generation, pipe.fetch_offset)
    if pipe.controller != "adaptive":
        return FrameExecutor(backend, shape, pipe.mode == "auras", pipe.alpha, pipe.emit)
    # an engine of its own, whose contexts come back so that a draining pipeline can read them
    own = FrameEngine(backend, shape.fetch_offset, contexts_to_caller=True)
    try:
        return adaptive_executor(config, own, shape, owns_engine=True)
    except BaseException:
        own.close()
        raise


def adaptive_executor(config: AurasConfig, engine: FrameEngine, shape: FrameShape,
                      owns_engine: bool = False) -> AdaptiveFrameExecutor:
    """``pipeline.controller: adaptive``: every depth the controller chooses is a session of ``engine`` (a
    re-plan attaches a new session beside the draining one: no new workers), so an adaptive robot is
    batched with the engine's other robots. ``owns_engine``: close the engine with the executor."""
    pipe = config.pipeline
    if engine.hosted_policy is None and not engine.contexts_to_caller and shape.fetch_offset != -1:
        raise ConfigError("pipeline.controller=adaptive: this engine's workers are actors whose contexts stay with "
                          "them (FrameEngine(..., contexts_to_caller=True) brings them back for a draining session "
                          "to read; build_engine does so for an adaptive config)")

    def frames(shape: FrameShape) -> FrameExecutor:
        return FrameExecutor(engine, shape, pipe.mode == "auras", pipe.alpha, pipe.emit)

    current = frames(shape)
    controller = DepthController(
        pipe.target_hz, current.spec.generation_iterations, pipe.pp_generation,
        window=pipe.controller_window, staleness_bound_ms=pipe.staleness_bound_ms,
        margin=pipe.pacing_margin, quantile=pipe.pacing_quantile,
    )
    return AdaptiveFrameExecutor(frames, shape, controller, first=current, engine=engine if owns_engine else None)


def build_backend(
    config: AurasConfig, policy: Policy | None = None, device_probe: DeviceProbe | None = None
) -> Backend:
    """Where the workers of ``config.pipeline.backend`` run: threads over a policy built (or ``policy``
    prepared) in this process, or Ray actors that each build their own from a PolicySource."""
    pipe = config.pipeline
    if pipe.backend == "ray":
        source = PolicySource.of(config, policy, device_probe)
        return RayBackend(source, RayCluster.from_config(pipe), pipe.worker_timeout_s)
    check_device(config.policy.device, device_probe)  # before anything is built: no quiet fallback
    if policy is not None:
        policy.to(config.policy.device, config.policy.dtype)
        compile_policy(policy, config)
        local = with_staleness_inputs(policy, config)
    else:
        local = build_policy(config, device_probe)
    return ThreadBackend(local, config.policy.device)  # threads cannot be killed: the long default deadline
