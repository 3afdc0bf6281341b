"""What `auras serve` serves: the agents its sessions run (separate pipelines, or one perception model
shared across robots) and the health of the Ray cluster they run on. No sockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auras.agent import AurasAgent
from auras.bridge.batcher import PerceptionBatcher
from auras.errors import ConfigError
from auras.pipeline.ray_backend import RayCluster
from auras.policies import build_policy
from auras.policies.base import Policy

__all__ = ["describe_workers", "perception_sharing", "ray_cluster_problem", "session_agents"]


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
    """``(agent_factory, batcher)`` for ``config.serve.perception``. separate: every session builds its
    own policy (batcher None). shared: one perception model, built now, serves every session through a
    :class:`~auras.bridge.batcher.PerceptionBatcher`; each session still gets its own generation and
    pipeline. Measured in docs/reliability.md (shared: 1.1x the frames of separate pipelines for the
    shipped policies with 4 robots on 2 cores, 1.5x with an 8x larger vision encoder)."""

    if config.pipeline.backend == "ray":
        # Ray's own processes (GCS, raylet) die with the thread that started them (PR_SET_PDEATHSIG):
        # start or join Ray here, in the thread that builds the server, never in a session's hello thread.
        RayCluster.from_config(config.pipeline).connect()
    if perception_sharing(config) == "separate":
        return (lambda: AurasAgent(config)), None
    shared = build_policy(config)
    batcher = PerceptionBatcher(shared.perception, max_batch=config.serve.max_batch, wait_ms=config.serve.batch_wait_ms)

    def factory() -> AurasAgent:
        own = build_policy(config)  # its generation only: per-request state must not be shared
        policy = Policy(own.name, batcher.view(), own.generation, own.privileged, own.execute_steps)
        return AurasAgent(config, policy=policy)

    return factory, batcher


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
