"""What `auras serve` serves: the agents its sessions run (sessions of one shared frame engine, or an agent
per robot with separate or shared perception) and the health of the Ray cluster they run on. No sockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auras.agent import AurasAgent
from auras.bridge.batcher import PerceptionBatcher
from auras.errors import ConfigError
from auras.pipeline import build_engine, build_executor, engine_problem
from auras.pipeline.ray_backend import RayCluster
from auras.pipeline.router import EngineRouter
from auras.policies import build_policy
from auras.policies.base import Policy

__all__ = [
    "EngineAgents", "describe_workers", "engine_sharing", "perception_sharing", "ray_cluster_problem", "session_agents",
]


def engine_sharing(config: Any) -> str:
    """What ``config.serve.engine`` resolves to: 'shared' (one frame engine serves every robot) or
    'per-robot'. Raises ConfigError for an explicit 'shared' that cannot run."""
    problem = engine_problem(config)
    if config.serve.engine == "shared" and problem is not None:
        raise ConfigError(f"serve.engine=shared: {problem} (or use serve.engine=per-robot)")
    if config.serve.engine == "auto":
        return "per-robot" if problem is not None else "shared"
    return config.serve.engine


def perception_sharing(config: Any) -> str:
    """What ``config.serve.perception`` resolves to: 'separate' or 'shared' (auto: shared when the
    sessions' perception can run as one batched call in this process). Raises ConfigError for an
    explicit 'shared' that cannot run."""
    pipe, wanted = config.pipeline, config.serve.perception
    blockers = []
    if pipe.backend != "local":
        blockers.append(f"needs pipeline.backend=local, got {pipe.backend!r}")
    if pipe.mode in ("pipeline", "auras") and pipe.pp_perception != 1:
        blockers.append(f"needs pipeline.pp_perception=1, got {pipe.pp_perception}")
    if wanted == "shared" and blockers:
        raise ConfigError(f"serve.perception=shared runs perception as one batched call per frame in the server's "
                          f"process: {'; '.join(blockers)} (or use serve.perception=separate)")
    if wanted == "auto":
        return "separate" if blockers else "shared"
    return wanted


def session_agents(config: Any) -> tuple[Callable[[], Any], Any]:
    """``(agent_factory, shared)``: what each session's agent runs on, and the shared part the server closes
    last (None when nothing is shared). ``serve.engine`` shared (the default where it can run): one
    :class:`~auras.pipeline.engine.FrameEngine`, built now (one copy of the model), and every session's
    agent is a session of it; its frames batch every robot's requests (docs/fleet.md). Else an agent per
    robot, by ``config.serve.perception``: separate, every session builds its own policy; shared, one
    perception model serves every session through a :class:`~auras.bridge.batcher.PerceptionBatcher` and
    each session still gets its own generation and pipeline (docs/reliability.md)."""

    if config.pipeline.backend == "ray":
        # Ray's own processes (GCS, raylet) die with the thread that started them (PR_SET_PDEATHSIG):
        # start or join Ray here, in the thread that builds the server, never in a session's hello thread.
        RayCluster.from_config(config.pipeline).connect()
    if engine_sharing(config) == "shared":
        engines = []
        try:
            for _ in range(config.serve.engines):
                engines.append(build_engine(config))
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        shared = engines[0] if len(engines) == 1 else EngineRouter(engines)
        return EngineAgents(config, shared), shared
    if perception_sharing(config) == "separate":
        return (lambda: AurasAgent(config)), None
    shared = build_policy(config)
    batcher = PerceptionBatcher(shared.perception, max_batch=config.serve.max_batch, wait_ms=config.serve.batch_wait_ms)

    def factory() -> AurasAgent:
        own = build_policy(config)  # its generation only: per-request state must not be shared
        policy = Policy(own.name, batcher.view(), own.generation, own.privileged, own.execute_steps)
        return AurasAgent(config, policy=policy)

    return factory, batcher


class EngineAgents:
    """The agent factory of a server whose robots share engines: each agent is a session of ``shared`` (a
    FrameEngine, or an EngineRouter that picks one, sending a returning robot back to its engine).
    ``takes_robot``: the session host passes the robot's name."""

    takes_robot = True

    def __init__(self, config: Any, shared: Any) -> None:
        self.config, self.shared = config, shared

    def __call__(self, robot: str | None = None) -> AurasAgent:
        engine = self.shared.assign(robot) if isinstance(self.shared, EngineRouter) else self.shared
        return AurasAgent(self.config, executor=build_executor(self.config, engine=engine))


def ray_cluster_problem() -> str | None:
    """Why the Ray cluster this process drives can no longer run workers, or None while it can: Ray
    shut down, or this process's own Ray node marked dead (its raylet is gone: killed, out of memory,
    crashed). Blocks while Ray's GCS does not answer; the watchdog's deadline covers that."""
    import ray

    if not ray.is_initialized():
        return "Ray was shut down in the server's process"
    nodes = ray.nodes()
    try:
        node = ray.get_runtime_context().get_node_id()
    except Exception:  # a Ray Client connection (ray://) has no node of its own: any live node will do
        return None if any(info.get("Alive") for info in nodes) else "the Ray cluster has no live node"
    if any(info.get("NodeID") == node and info.get("Alive") for info in nodes):
        return None
    return (f"the server's Ray node {node[:12]} is dead (its raylet was killed, ran out of memory or crashed; "
            "Ray's own log lines above say more): no session can run a worker")


def describe_workers(agent: Any) -> str:
    """Where ``agent``'s workers run, for the log ('perception pid 12 (cpu), generation pid 13 (cpu)');
    '' when the agent cannot say."""
    try:
        workers = agent.stats()["workers"]
        return ", ".join(f"{w['role']} pid {w['pid']} ({w.get('device') or 'cpu'})" for w in workers)
    except Exception:  # an agent without stats, or one whose workers are gone: the log line goes without
        return ""
