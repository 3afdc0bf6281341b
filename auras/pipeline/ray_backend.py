"""The ``ray`` backend: perception and generation as Ray actors, placed through a placement group.

Placement: one bundle per actor. ``policy.device`` ``cpu``: one CPU each. ``cuda``: two or more GPUs
in the cluster: one GPU each; one GPU: a share of it each; none: a ConfigError before any actor
starts. Each actor builds its own policy from a :class:`~auras.pipeline.source.PolicySource` on the
device Ray assigned it (``cuda`` inside the actor); ``cuda:N`` is refused here, since Ray, not the
config, picks the GPU. Bundles use the ``PACK`` strategy by default (side by side on one node when it
holds both; Ray may still split them on a cluster), or ``STRICT_SPREAD`` with
``pipeline.placement=spread`` (perception and generation on different nodes).
``pipeline.ray_address`` joins a running cluster (``ray start --head`` ...) instead of starting one.

Frame modes (``sequential``, ``pipeline``, ``auras``) run the frame executor's plans on a
:class:`~auras.pipeline.workers.PerceptionWorker` actor and a
:class:`~auras.pipeline.workers.GenerationWorker` actor joined by a Ray Compiled Graph, compiled once:
a frame is one ``execute`` whose arguments and results travel through shared-memory channels, not
through actor calls and the object store. Contexts leave perception as numpy arrays (zero-copy on
the receiving side), never as pickled tensors. fetch_offset 0: plan -> perception -> generation
(the context goes straight from one actor to the other); fetch_offset -1: both actors get the plan
at once and run concurrently, and the contexts perception finished come back with the frame's
result to ride along with the next plan (generation reads the previous frame anyway).

The generation actor keeps its own public context store (fed by those messages), so generation
reads context locally, with no lock round trip to another process on its hot path.

Ray is started on first use when no cluster is connected (``ray.init`` with the dashboard off); a
connected cluster (``ray.init(address=...)`` by the caller) is used as is. ``close()`` tears down the
graph, kills the actors and removes the placement group; a failed construction does the same
before raising.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from auras.compiled import compile_stats
from auras.context.tensors import NumpyContext, transport_name
from auras.devices import actor_device
from auras.errors import ConfigError, MissingDependencyError, StepFailedError, WorkerDiedError
from auras.pipeline.backend import Backend, WorkerGroup, WorkerRecipe
from auras.pipeline.source import PolicySource
from auras.pipeline.workers import ContextMessage, Emitted, FrameBatch
from auras.policies.base import PolicySpec

__all__ = [
    "LOCAL_CLUSTER",
    "RayBackend",
    "RayCluster",
    "RayFrameGraph",
    "RayGroup",
    "RayPlacement",
    "WorkerActor",
    "actor_workers",
    "ensure_ray",
    "kill_actors",
    "place_actors",
    "release",
    "worker_errors",
]

ACTOR_START_TIMEOUT_S = 120.0
FRAME_TIMEOUT_S = 300.0
_init_lock = threading.Lock()
STRATEGIES = {"pack": "PACK", "spread": "STRICT_SPREAD"}
WORKER_NICENESS = 0
"""Ray starts its workers at niceness 15 by default, so any busy process at the normal 0 starves the actors
(a robot computer is never idle). A local Ray started by auras runs them at 0, like the local backend's
threads; a joined cluster (``pipeline.ray_address``) keeps its own setting."""


@dataclasses.dataclass(frozen=True)
class RayCluster:
    """Where a backend's actors go: ``address`` of a running Ray cluster (``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT``; None starts a local one) and ``placement``: ``pack`` (side by side when one node
    holds both) or ``spread`` (perception and generation on different nodes). Passed to every placement;
    Ray itself connects once per process, so the first :meth:`connect` decides the cluster."""

    address: str | None = None
    placement: str = "pack"

    def __post_init__(self) -> None:
        if self.placement not in STRATEGIES:
            raise ConfigError(f"pipeline.placement: expected one of {sorted(STRATEGIES)}, got {self.placement!r}")

    @classmethod
    def from_config(cls, pipeline: Any) -> RayCluster:
        """The cluster ``config.pipeline`` names (``ray_address``, ``placement``)."""
        return cls(pipeline.ray_address, pipeline.placement)

    @property
    def strategy(self) -> str:
        """The placement-group strategy of ``placement``."""
        return STRATEGIES[self.placement]

    def connect(self) -> Any:
        """Import Ray and connect to this cluster (or start a local one) unless this process is connected
        already; return the ``ray`` module."""
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a core dependency
            raise MissingDependencyError("pipeline.backend='ray' needs Ray: pip install 'ray[default]'") from exc
        with _init_lock:
            if not ray.is_initialized():
                if self.address:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                else:  # the actors are the inference: at the priority of the process that asked for them
                    ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                             configure_logging=False, _system_config={"worker_niceness": WORKER_NICENESS})
        return ray


LOCAL_CLUSTER = RayCluster()


def ensure_ray(cluster: RayCluster = LOCAL_CLUSTER) -> Any:
    """The ``ray`` module, connected (to ``cluster`` unless this process is connected already)."""
    return cluster.connect()


class RayPlacement:
    """A placement group on ``cluster`` with ``count`` bundles for actors on ``device`` (``cpu`` or ``cuda``)."""

    def __init__(self, count: int, device: str = "cpu", cluster: RayCluster = LOCAL_CLUSTER) -> None:
        ray = cluster.connect()
        from ray.util.placement_group import placement_group

        gpus = ray.cluster_resources().get("GPU", 0.0)
        if device == "cpu":
            bundle = {"CPU": 1}
        elif device != "cuda":
            raise ConfigError(
                f"policy.device: got {device!r}; on the ray backend Ray assigns each actor its GPU, so ask for "
                "'cuda' (or 'cpu')"
            )
        elif gpus >= count:
            bundle = {"CPU": 1, "GPU": 1}
        elif gpus > 0:
            bundle = {"CPU": 1, "GPU": min(gpus, 1.0) / count}
        else:
            raise ConfigError(
                f"policy.device: asked for 'cuda', but the Ray cluster has no GPU ({ray.cluster_resources()}); "
                "start Ray on a machine with GPUs (or ray.init(num_gpus=N)), or set policy.device=cpu"
            )
        self.device = device
        self.bundle = bundle
        self.cluster = cluster
        self.strategy = cluster.strategy
        self.group = placement_group([dict(bundle) for _ in range(count)], strategy=self.strategy)
        try:
            ray.get(self.group.ready(), timeout=ACTOR_START_TIMEOUT_S)
        except Exception as exc:
            self.remove()
            raise WorkerDiedError(
                f"ray backend: could not reserve {count} x {bundle} ({self.strategy}) within "
                f"{ACTOR_START_TIMEOUT_S:.0f} s (cluster has {ray.cluster_resources()} on "
                f"{len(ray.nodes())} node(s)): {exc}"
            ) from exc

    def options(self, index: int) -> dict[str, Any]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {
            "num_cpus": self.bundle["CPU"],
            "num_gpus": self.bundle.get("GPU", 0),
            "scheduling_strategy": PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=index),
        }

    def remove(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        if self.group is not None and ray.is_initialized():
            remove_placement_group(self.group)
        self.group = None


def place_actors(
    actor_class: type, args: Sequence[tuple[Any, ...]], device: str = "cpu", max_concurrency: int = 1,
    cluster: RayCluster = LOCAL_CLUSTER,
) -> tuple[RayPlacement, list[Any]]:
    """Start one ``actor_class(*a)`` per entry of ``args`` on ``cluster``, each in its own bundle for
    ``device``; wait until all are built. On failure nothing is left behind and the actor's own error is
    raised."""
    ray = cluster.connect()
    placement = RayPlacement(len(args), device, cluster)
    actors: list[Any] = []
    try:
        for index, a in enumerate(args):
            actors.append(_start_actor(actor_class, placement, index, a, max_concurrency))
        ray.get([actor.ready.remote() for actor in actors], timeout=ACTOR_START_TIMEOUT_S)
    except BaseException as exc:
        release(placement, actors)
        _raise_constructor_error(exc)
    return placement, actors


def replace_actor(
    actor_class: type, placement: RayPlacement, index: int, args: tuple[Any, ...], old: Any, max_concurrency: int = 1
) -> Any:
    """Kill ``old`` (dead or alive) and start a fresh ``actor_class(*args)`` in bundle ``index``."""
    kill_actors([old])
    actor = _start_actor(actor_class, placement, index, args, max_concurrency)
    try:
        placement.cluster.connect().get(actor.ready.remote(), timeout=ACTOR_START_TIMEOUT_S)
    except BaseException as exc:
        kill_actors([actor])
        _raise_constructor_error(exc)
    return actor


def _start_actor(
    actor_class: type, placement: RayPlacement, index: int, args: tuple[Any, ...], concurrency: int = 1
) -> Any:
    remote = placement.cluster.connect().remote(actor_class)
    return remote.options(max_concurrency=concurrency, **placement.options(index)).remote(*args)


def _raise_constructor_error(exc: BaseException) -> NoReturn:
    """Raise the error the actor's constructor raised (Ray wraps it once or twice: a dead actor whose
    cause is the task error whose cause is the original), or ``exc`` itself."""
    cause: BaseException = exc
    while isinstance(getattr(cause, "cause", None), Exception):
        cause = cause.cause  # type: ignore[attr-defined]
    if cause is not exc:
        raise cause from exc
    raise exc


@contextlib.contextmanager
def worker_errors(what: str) -> Iterator[None]:
    """Ray's errors as auras errors: an exception raised in a worker -> StepFailedError naming it
    (the agent stays usable); a dead actor or channel -> WorkerDiedError (build a new agent)."""
    from ray.exceptions import GetTimeoutError, RayActorError, RayChannelError, RayChannelTimeoutError, RayTaskError

    try:
        yield
    except RayTaskError as exc:
        if isinstance(exc.cause, RayActorError):  # an input came from an actor that died
            raise WorkerDiedError(f"{what}: a worker died: {exc.cause!r}") from _detached(exc)
        raise StepFailedError(f"{what} failed in a worker: {exc.cause!r}") from _detached(exc)
    except (RayActorError, RayChannelError) as exc:
        raise WorkerDiedError(f"{what}: a worker died: {exc}") from _detached(exc)
    except (GetTimeoutError, RayChannelTimeoutError, TimeoutError) as exc:  # hung counts as dead
        raise WorkerDiedError(f"{what}: no answer within the worker deadline ({exc})") from _detached(exc)


def _detached(exc: BaseException) -> BaseException:
    """``exc`` (and the exceptions it chains) without tracebacks. Ray's frames hold what a compiled graph
    read before it failed: arrays that are views of a channel's shared memory. An error kept past
    ``ray.shutdown`` (a caught restart, a test's record of it) would free them after that memory is gone,
    and crash the process."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


def actor_workers(actors: Sequence[Any], roles: Sequence[str], timeout_s: float) -> list[dict[str, Any]]:
    """``Executor.workers`` entries of live ``actors`` (``WorkerActor``), one per role."""
    if not actors:
        return []
    import ray

    with worker_errors("ray backend: worker report"):
        reports = ray.get([actor.placement.remote() for actor in actors], timeout=timeout_s)
    return [{"role": role, **report} for role, report in zip(roles, reports, strict=True)]


def release(placement: RayPlacement | None, actors: Sequence[Any]) -> None:
    """Kill ``actors`` and give back their reservation; safe to call twice."""
    kill_actors(actors)
    if placement is not None:
        placement.remove()


def kill_actors(actors: Sequence[Any]) -> None:
    import ray

    if not ray.is_initialized():
        return
    for actor in actors:
        with contextlib.suppress(Exception):  # already gone is fine
            ray.kill(actor, no_restart=True)


class WorkerActor:
    """Hosts one worker in a Ray actor (wrapped with ``ray.remote`` at use): builds the policy from
    ``source`` on the device Ray assigned it, then the worker from ``recipe``."""

    def __init__(self, source: PolicySource, recipe: WorkerRecipe) -> None:
        import ray

        self.gpu_ids = [str(i) for i in ray.get_gpu_ids()]
        self.failure: Exception | None = None
        try:
            self.device = actor_device(source.device, self.gpu_ids)
            self.policy = source.build(self.device)
            self.worker = recipe.build(self.policy, self.device, transport_name(False, source.device))
        except Exception as exc:  # re-raised by ready(): Ray reports a failed constructor as a bare dead actor
            self.failure = exc

    def placement(self) -> dict[str, Any]:
        """Where this actor runs: the GPU ids Ray assigned it, the device its policy is on, its node and
        pid, its compiled stages so far, and what its worker says of itself (``worker``)."""
        import ray

        stats = compile_stats()
        return {"gpu_ids": self.gpu_ids, "device": self.device, "node": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid(), "niceness": os.nice(0), "compile_graphs": stats.graphs,
                "compile_ms": stats.compile_ms, "worker": self.worker.describe()}

    def ready(self) -> int:
        """The actor's pid once its policy is built; raises the construction error otherwise."""
        if self.failure is not None:
            raise self.failure
        return os.getpid()

    def spec(self) -> PolicySpec:
        """The hosted policy's weightless description (for the driver process)."""
        return self.policy.spec

    def reset(self) -> None:
        """A new episode: the worker forgets per-episode state."""
        self.worker.reset()

    def run(self, *args: Any) -> Any:
        return self.worker.run(*args)


class RayBackend(Backend):
    """Workers as Ray actors on ``cluster``, each building its own policy from ``source``; a call not
    answered within ``timeout_s`` counts as a dead worker."""

    name = "ray"

    def __init__(self, source: PolicySource, cluster: RayCluster = LOCAL_CLUSTER,
                 timeout_s: float = FRAME_TIMEOUT_S) -> None:
        self.source, self.cluster, self.timeout_s = source, cluster, timeout_s

    def place(self, recipes: Sequence[WorkerRecipe], threads: int = 0) -> RayGroup:
        return RayGroup(self.source, recipes, self.cluster, self.timeout_s)


class RayGroup(WorkerGroup):
    """One actor per recipe, in one placement group (one bundle each); pending results are ObjectRefs."""

    def __init__(self, source: PolicySource, recipes: Sequence[WorkerRecipe], cluster: RayCluster,
                 timeout_s: float) -> None:
        self.source, self.recipes, self.cluster, self.timeout_s = source, list(recipes), cluster, timeout_s
        self.context_transport = transport_name(False, source.device)
        self.placement, self.actors = place_actors(
            WorkerActor, [(source, r) for r in self.recipes], source.device, cluster=cluster
        )
        self.ray = ray = cluster.connect()  # connected once; the hot path only calls it
        try:
            self.pids = ray.get([actor.ready.remote() for actor in self.actors])
            self.spec: PolicySpec = ray.get(self.actors[0].spec.remote(), timeout=timeout_s)
        except BaseException:
            self.close()
            raise

    def _live(self) -> list[Any]:
        if not self.actors:
            raise WorkerDiedError("ray backend is closed; build a new agent")
        return self.actors

    def submit(self, index: int, *args: Any) -> Any:
        return self._live()[index].run.remote(*args)

    def result(self, pending: Any, timeout_s: float | None = None) -> Any:
        with worker_errors("ray backend: a request"):
            return self.ray.get(pending, timeout=self.timeout_s if timeout_s is None else timeout_s)

    def finished(self, pending: Sequence[Any], timeout_s: float, first: bool = True) -> list[Any]:
        ready, _ = self.ray.wait(
            list(pending), num_returns=1 if first else len(pending), timeout=timeout_s, fetch_local=False
        )
        return ready

    def reset(self, index: int) -> None:
        with worker_errors("ray backend: reset"):
            self.ray.get(self._live()[index].reset.remote(), timeout=self.timeout_s)

    def replace(self, index: int) -> None:
        self.actors[index] = replace_actor(WorkerActor, self.placement, index, (self.source, self.recipes[index]),
                                           self.actors[index])
        self.pids[index] = self.ray.get(self.actors[index].ready.remote(), timeout=self.timeout_s)

    def frame_graph(self, perception: int, generation: int, concurrent: bool,
                    contexts_to_caller: bool = False) -> RayFrameGraph:
        return RayFrameGraph(self, self.actors[perception], self.actors[generation], concurrent, contexts_to_caller)

    def describe(self) -> list[dict[str, Any]]:
        return actor_workers(self.actors, [r.role for r in self.recipes], self.timeout_s)  # closed: none

    def close(self) -> None:
        release(getattr(self, "placement", None), getattr(self, "actors", []))
        self.actors = []


class RayFrameGraph:
    """A perception actor and a generation actor joined by a Ray Compiled Graph, compiled once: a frame
    is one ``execute`` whose arguments and results travel through shared-memory channels (see the module
    docstring). ``contexts_to_caller`` (fetch_offset 0): perception's contexts also come back to the
    driver (one more channel read per frame)."""

    def __init__(self, group: RayGroup, perception: Any, generation: Any, concurrent: bool,
                 contexts_to_caller: bool = False) -> None:
        from ray.dag import InputNode, MultiOutputNode

        self.group, self.timeout_s = group, group.timeout_s
        self.returns_contexts = concurrent or contexts_to_caller
        self._compiled = None
        with InputNode() as plan:
            if concurrent:
                dag = MultiOutputNode([perception.run.bind(plan), generation.run.bind(plan)])
            else:
                contexts = perception.run.bind(plan)
                emitted = generation.run.bind(plan, contexts)
                dag = MultiOutputNode([contexts, emitted]) if contexts_to_caller else emitted
        self._compiled = dag.experimental_compile()
        try:
            # The first execute of a compiled graph sets up its channels (seconds on a busy machine):
            # pay it here, under the start-up deadline, not in the first frame's worker deadline.
            with worker_errors("ray backend: warm-up frame"):
                group.ray.get(self._compiled.execute(FrameBatch()), timeout=ACTOR_START_TIMEOUT_S)
        except BaseException:
            self.close(force=True)
            raise

    def __call__(self, batch: FrameBatch) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """One frame: (perception's finished contexts, or () when they stay with generation; generation's
        emitted actions), each tuple also holding the failures of sessions whose work raised."""
        if self._compiled is None:
            raise WorkerDiedError("ray backend is closed; build a new agent")
        try:
            frames = ", ".join(str(p.frame) for p in batch.plans[:4])
            with worker_errors(f"ray backend: frame {frames}"):
                out = self.group.ray.get(self._compiled.execute(batch), timeout=self.timeout_s)
        except WorkerDiedError:
            self.close(force=True)
            raise
        # Arrays read from a channel are views of its shared buffer, which cannot be written again
        # while they live: copy what this process keeps (a few KB) so the next frame never blocks.
        if self.returns_contexts:
            finished, emitted = out
            return tuple(_own_copy(m) for m in finished), tuple(_own_copy(m) for m in emitted)
        return (), tuple(_own_copy(m) for m in out)

    def close(self, force: bool = False) -> None:
        """Tear down the graph. ``force`` (after a dead or hung worker): kill the actors first, since a
        graceful teardown waits for a hung actor's frame to end."""
        if force:
            self.group.close()
        if self._compiled is not None:
            with contextlib.suppress(Exception):  # actors may already be gone
                self._compiled.teardown(kill_actors=True)
            self._compiled = None


def _own_copy(message: Any) -> Any:
    """A copy of an Emitted / ContextMessage whose arrays no longer point into a channel buffer."""
    if isinstance(message, Emitted):
        return dataclasses.replace(message, values=np.array(message.values))
    if isinstance(message, ContextMessage) and isinstance(message.context, NumpyContext):
        arrays = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in message.context.arrays.items()}
        return dataclasses.replace(message, context=NumpyContext(arrays, message.context.torch_dtypes))
    return message
