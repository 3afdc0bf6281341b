"""The ray backend with real Ray actors: same actions as local, invariants across processes, clean
shutdown after close() and after a failed construction."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from auras import AurasAgent, load_config
from auras.errors import StepFailedError
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation

pytestmark = pytest.mark.ray

FRAME_MODES = [
    ("sequential", []),
    ("pipeline", ["pipeline.pp_perception=2", "pipeline.pp_generation=3"]),
    ("auras", ["pipeline.pp_perception=2", "pipeline.pp_generation=3"]),
    ("auras", ["pipeline.pp_perception=2", "pipeline.pp_generation=3", "pipeline.fetch_offset=-1"]),
]


@pytest.fixture(scope="module")
def ray_cluster():
    from auras.pipeline.ray_backend import ensure_ray

    ray = ensure_ray()
    yield ray
    ray.shutdown()


def _fake_policy() -> Policy:
    return Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12))


def _run(mode: str, extra: list[str], backend: str, steps: int = 16) -> list:
    config = load_config(overrides=[f"pipeline.mode={mode}", f"pipeline.backend={backend}", *extra])
    with AurasAgent(config, policy=_fake_policy()) as agent:
        return [agent.step(fake_observation(i)) for i in range(steps)]


def _wait_until(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _all_cpus_free(ray) -> bool:
    return ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU", -1)


@pytest.mark.parametrize(("mode", "extra"), FRAME_MODES, ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_frame_modes_give_the_same_actions_across_processes_as_in_process(ray_cluster, mode, extra):
    local, remote = _run(mode, extra, "local"), _run(mode, extra, "ray")
    for a, b in zip(local, remote, strict=True):
        assert (a.step_id, a.context_step_id, a.staleness_frames, a.frame) == (
            b.step_id,
            b.context_step_id,
            b.staleness_frames,
            b.frame,
        )
        np.testing.assert_array_equal(a.values, b.values)
    frames = [b.frame for b in remote]
    assert frames == sorted(frames)


@pytest.mark.parametrize("mode", ["parallel", "decoupled"])
def test_unframed_modes_trace_every_action_to_an_admitted_observation(ray_cluster, mode):
    actions = _run(mode, ["pipeline.workers=2"] if mode == "parallel" else [], "ray")
    for call, action in enumerate(actions):
        newest = action.context_step_id if action.context_step_id is not None else action.step_id
        assert 0 <= newest <= call and action.values[0, 0] == 12 * 1000 + newest
    assert [a.step_id for a in actions][-1] >= 8  # actions keep coming from new observations


@pytest.mark.parametrize(("mode", "extra"), [("auras", ["pipeline.pp_generation=3"]), ("parallel", [])])
def test_close_leaves_no_actor_or_reservation_behind(ray_cluster, mode, extra):
    config = load_config(overrides=[f"pipeline.mode={mode}", "pipeline.backend=ray", *extra])
    agent = AurasAgent(config, policy=_fake_policy())
    agent.step(fake_observation(0))
    executor = agent.executor
    group = executor.group if mode == "auras" else executor.pool.group
    actors = list(group.actors)
    assert actors and not _all_cpus_free(ray_cluster)
    agent.close()
    agent.close()  # idempotent
    assert _wait_until(lambda: _all_cpus_free(ray_cluster))
    from ray.exceptions import RayActorError

    for actor in actors:
        with pytest.raises(RayActorError):
            ray_cluster.get(actor.ready.remote(), timeout=30)


class _UnshippablePerception(FakeStagedPerception):
    """Builds here, fails when a Ray actor unpickles it: a construction that fails inside an actor."""

    def __setstate__(self, state):
        raise RuntimeError("this perception cannot be built in a worker")


def test_failed_construction_raises_the_workers_error_and_leaves_nothing_behind(ray_cluster):
    config = load_config(overrides=["pipeline.mode=auras", "pipeline.backend=ray"])
    policy = Policy("broken", _UnshippablePerception(4), FakeDiffusion(12))
    with pytest.raises(Exception, match="cannot be built in a worker"):
        AurasAgent(config, policy=policy)
    assert _wait_until(lambda: _all_cpus_free(ray_cluster))


class _FailingDiffusionFactory:
    @staticmethod
    def build():
        diffusion = FakeDiffusion(12)
        original = diffusion.denoise

        def denoise(sample, step_index, num_steps, context):
            if float(context["H_o"].max()) == 5:
                raise ValueError("bad observation 5")
            return original(sample, step_index, num_steps, context)

        diffusion.denoise = denoise
        return diffusion


def test_a_failing_frame_is_reported_with_the_workers_error(ray_cluster):
    config = load_config(overrides=["pipeline.mode=auras", "pipeline.backend=ray"])
    policy = Policy("flaky", FakeStagedPerception(4), _FailingDiffusionFactory.build())
    with AurasAgent(config, policy=policy) as agent:
        for i in range(5):
            agent.step(fake_observation(i))
        with pytest.raises(StepFailedError, match="bad observation 5"):
            agent.step(fake_observation(5))


@pytest.mark.parametrize("victim", [0, 1], ids=["perception", "generation"])
def test_a_killed_actor_is_replaced_and_no_action_comes_from_before_the_failure(ray_cluster, victim):
    """SIGKILL one actor's process mid-episode: the next step raises WorkerRestartedError within the
    deadline, both workers are replaced, and every later action comes from observations admitted
    after the failure (nothing from the lost pipeline or public context)."""
    import os
    import signal

    from auras.errors import WorkerRestartedError

    config = load_config(overrides=["pipeline.mode=auras", "pipeline.backend=ray", "pipeline.pp_perception=2",
                                    "pipeline.pp_generation=3", "pipeline.worker_timeout_s=20"])
    with AurasAgent(config, policy=_fake_policy()) as agent:
        for i in range(8):
            agent.step(fake_observation(i))
        group = agent.executor.group
        os.kill(group.pids[victim], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(WorkerRestartedError, match="replaced"):
            agent.step(fake_observation(8))
        assert time.monotonic() - start < 60
        assert agent.restarts == 1 and agent.executor.group is not group
        assert set(agent.executor.group.pids).isdisjoint(group.pids)
        after = [agent.step(fake_observation(i)) for i in range(9, 20)]
    assert all(a.step_id >= 9 and a.context_step_id >= 9 for a in after)
    assert [a.step_id for a in after] == sorted(a.step_id for a in after)


def _kill_then_step_until_restarted(agent, pid: int, first: int, within_s: float = 30.0) -> int:
    """SIGKILL ``pid``; step on (a 50 Hz robot) from observation ``first`` until a step raises
    WorkerRestartedError, which must happen within ``within_s`` (actions whose work finished before
    the failure may still come out first). Returns the next step id."""
    import os
    import signal

    from auras.errors import WorkerRestartedError

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + within_s
    i = first
    while time.monotonic() < deadline:
        try:
            agent.step(fake_observation(i))
        except WorkerRestartedError as exc:
            assert "replaced" in str(exc)
            return i + 1
        i += 1
        time.sleep(0.02)
    raise AssertionError(f"no WorkerRestartedError within {within_s} s of killing pid {pid}")


def _workers(agent):
    """The two actors: decoupled's policy parts' group, or sequential's one-frame pipeline's (replaced on restart)."""
    executor = agent.executor
    return executor.parts.group if hasattr(executor, "parts") else executor.group


@pytest.mark.parametrize("mode", ["sequential", "decoupled"])
@pytest.mark.parametrize("victim", [0, 1], ids=["perception", "generation"])
def test_unframed_modes_replace_a_killed_actor_and_serve_fresh_actions(ray_cluster, mode, victim):
    from tests.fakes import fake_policy

    config = load_config(overrides=[f"pipeline.mode={mode}", "pipeline.backend=ray", "pipeline.worker_timeout_s=20"])
    with AurasAgent(config, policy=fake_policy(generation_s=0.01)) as agent:
        for i in range(5):
            agent.step(fake_observation(i))
        old = list(_workers(agent).pids)
        resumed = _kill_then_step_until_restarted(agent, old[victim], 5)
        assert agent.restarts == 1 and set(_workers(agent).pids).isdisjoint(old)
        after = [agent.step(fake_observation(i)) for i in range(resumed, resumed + 6)]
    # nothing from the lost workers' contexts
    assert all(a.context_step_id >= resumed for a in after), [a.context_step_id for a in after]


def test_parallel_mode_replaces_only_the_killed_worker(ray_cluster):
    from tests.fakes import fake_policy

    config = load_config(overrides=["pipeline.mode=parallel", "pipeline.backend=ray", "pipeline.workers=3",
                                    "pipeline.worker_timeout_s=20"])
    with AurasAgent(config, policy=fake_policy(generation_s=0.05)) as agent:
        for i in range(6):
            agent.step(fake_observation(i))
        pool = agent.executor.pool.group
        actors = list(pool.actors)
        pids = ray_cluster.get([a.ready.remote() for a in actors])
        resumed = _kill_then_step_until_restarted(agent, pids[0], 6)
        assert agent.restarts == 1 and pool.actors[0] is not actors[0] and pool.actors[1:] == actors[1:]
        after = [agent.step(fake_observation(i)) for i in range(resumed, resumed + 9)]
        assert [a.step_id for a in after] == sorted(a.step_id for a in after)
        assert after[-1].step_id >= resumed
        agent.reset()  # every worker answers the reset, the new one included
        assert agent.restarts == 1


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_a_hung_worker_is_replaced_after_the_deadline(ray_cluster, mode):
    from auras.errors import WorkerRestartedError
    from tests.fakes import FakePerception, HangingGeneration

    config = load_config(overrides=[f"pipeline.mode={mode}", "pipeline.backend=ray", "pipeline.workers=2",
                                    "pipeline.worker_timeout_s=2"])
    with AurasAgent(config, policy=Policy("hangs", FakePerception(), HangingGeneration(hang_at=3))) as agent:
        start = time.monotonic()
        with pytest.raises(WorkerRestartedError, match=r"did not answer|deadline"):
            for i in range(3000):  # a 50 Hz robot; the other parallel worker keeps serving meanwhile
                agent.step(fake_observation(i))
                time.sleep(0.02)
        assert time.monotonic() - start < 120 and agent.restarts == 1  # deadline + starting new actors
        assert agent.executor.incidents[0]["step_id"] == 3
        later = [agent.step(fake_observation(i)) for i in range(5000, 5006)]
    assert later[-1].step_id >= 5000


@pytest.mark.parametrize("mode", ["sequential", "decoupled"])
def test_reset_reaches_the_policy_in_every_ray_actor(ray_cluster, mode):
    """tiny-dp reseeds its initial noise on reset: the first action of a new episode on the same
    observation repeats the first action of the last one only if reset reached the generation actor."""
    import numpy as np

    config = load_config(overrides=["policy.type=tiny-dp", f"pipeline.mode={mode}", "pipeline.backend=ray"])
    obs = fake_observation(0, image_size=84)
    with AurasAgent(config) as agent:
        first = agent.step(obs).values
        assert not np.array_equal(agent.step(obs).values, first)  # the noise moved on
        agent.reset()
        again = agent.step(obs).values
    np.testing.assert_array_equal(again, first)


SHIPPED_BY_CONFIG = [  # the two auras cases run by default; the others add a minute on a 2-core machine
    pytest.param("tiny-dp", "sequential", [], marks=pytest.mark.slow),
    pytest.param(
        "tiny-vla", "pipeline", ["pipeline.pp_perception=2", "pipeline.pp_generation=4"], marks=pytest.mark.slow
    ),
    ("tiny-dp", "auras", ["pipeline.pp_perception=2", "pipeline.pp_generation=3"]),
    ("tiny-vla", "auras", ["pipeline.pp_generation=4", "pipeline.fetch_offset=-1"]),
]


@pytest.mark.parametrize(("policy", "mode", "extra"), SHIPPED_BY_CONFIG, ids=lambda v: v if isinstance(v, str) else "")
def test_shipped_policies_built_by_name_in_the_actors_act_as_in_process(ray_cluster, policy, mode, extra):
    """The path `auras bench --backend ray` and `auras serve --backend ray` take: the actors build the
    shipped checkpoint from the config; every frame mode acts exactly as the local backend does."""
    from tests.test_tiny_dp import observation

    actions, stats = {}, {}
    for backend in ("local", "ray"):
        config = load_config(
            overrides=[f"policy.type={policy}", f"pipeline.mode={mode}", f"pipeline.backend={backend}", *extra]
        )
        with AurasAgent(config) as agent:
            size = next(iter(agent.spec.cameras.values()))[0]
            actions[backend] = [agent.step(observation(i, size)) for i in range(8)]
            stats[backend] = agent.stats()
    for a, b in zip(actions["local"], actions["ray"], strict=True):
        assert (a.step_id, a.context_step_id) == (b.step_id, b.context_step_id)
        np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    workers = stats["ray"]["workers"]
    assert [w["role"] for w in workers] == ["perception", "generation"]
    assert {w["niceness"] for w in workers} == {0}  # not Ray's default 15: a busy robot computer would starve them
    assert len({w["pid"] for w in workers} | {os.getpid()}) == 3  # two actor processes, not this one
    assert stats["ray"]["context_transport"] == "host" and stats["local"]["context_transport"] == "in-process"


def test_the_ray_cluster_is_an_object_built_from_the_config():
    from auras.config import load_config
    from auras.errors import ConfigError
    from auras.pipeline.ray_backend import RayCluster

    spread = RayCluster.from_config(load_config(None, ["pipeline.placement=spread",
                                                      "pipeline.ray_address=auto"]).pipeline)
    assert (spread.address, spread.strategy) == ("auto", "STRICT_SPREAD")
    assert RayCluster().strategy == "PACK" and RayCluster().address is None
    with pytest.raises(ConfigError, match=r"pipeline\.placement: expected one of"):
        RayCluster(placement="scatter")


def _replan(backend: str, fetch_offset: int, switches: dict[int, int], steps: int = 50):
    """An adaptive auras pipeline (depth 4) re-planned by hand at the steps of ``switches``; returns its
    actions, the requests all its pipelines admitted and those still in flight."""
    overrides = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.pp_generation=4",
                 "pipeline.target_hz=1", "pipeline.controller_window=1000", f"pipeline.fetch_offset={fetch_offset}",
                 f"pipeline.backend={backend}"]
    with AurasAgent(load_config(overrides=overrides), policy=_fake_policy()) as agent:
        executor = agent.executor
        made = [executor.current]
        make = executor.make_frames
        executor.make_frames = lambda shape: made.append(make(shape)) or made[-1]
        first_workers = agent.stats()["workers"]
        actions = []
        for i in range(steps):
            if i in switches:
                executor.switch(switches[i])
            actions.append(agent.step(fake_observation(i)))
        depth = executor.shape.pp_generation
        inflight = executor.current.inflight + (executor.draining.inflight if executor.draining else 0)
        workers = agent.stats()["workers"]
    return actions, sum(f.admitted for f in made), inflight, depth, workers, first_workers


@pytest.mark.parametrize("fetch_offset", [0, -1])
def test_the_adaptive_pipeline_re_plans_on_ray_without_losing_or_repeating_an_action(ray_cluster, fetch_offset):
    """Re-plans 4 -> 6 -> 2 -> 1 -> 3 on Ray: each a new session of the same actors beside the draining one
    (no new actors: the workers stay those of the first pipeline). Every
    admitted request's action comes out exactly once, in order, and every action equals the local
    backend's value for value. The fake's actions add up the contexts each generation stage read, so a
    draining request that did not get the new pipeline's contexts lent through the actors (it would read
    the last context admitted before the switch) gives different values."""
    switches = {8: 6, 20: 2, 30: 1, 38: 3}
    local, *_ = _replan("local", fetch_offset, switches)
    actions, admitted, inflight, depth, workers, first_workers = _replan("ray", fetch_offset, switches)
    assert depth == 3 and [w["role"] for w in workers] == ["perception", "generation"]
    assert [w["pid"] for w in workers] == [w["pid"] for w in first_workers]  # a re-plan places no actor
    assert all(w["pid"] != os.getpid() for w in workers)  # the workers are actors, not threads
    distinct = list({id(a): a for a in actions}.values())
    steps = [a.step_id for a in distinct if a.step_id > 0]  # the fill admits observation 0 once per frame
    assert steps == sorted(set(steps)), "an action came out twice or out of order"
    assert len(distinct) == admitted - inflight, "an admitted request's action was lost"
    assert all(a.context_step_id >= a.step_id for a in distinct)
    for a, b in zip(local, actions, strict=True):
        assert (a.step_id, a.context_step_id, a.staleness_frames) == (b.step_id, b.context_step_id, b.staleness_frames)
        np.testing.assert_array_equal(a.values, b.values)


def test_an_actor_killed_during_a_re_plan_is_replaced_and_serving_goes_on(ray_cluster):
    """SIGKILL the draining pipeline's generation actor mid re-plan: that step raises WorkerRestartedError,
    the draining pipeline is dropped, the new one starts again on fresh actors, the restart is counted
    once, and later actions come from observations offered after the failure."""
    import signal

    from auras.errors import WorkerRestartedError

    overrides = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.pp_generation=4",
                 "pipeline.target_hz=1", "pipeline.controller_window=1000", "pipeline.backend=ray",
                 "pipeline.worker_timeout_s=20"]
    with AurasAgent(load_config(overrides=overrides), policy=_fake_policy()) as agent:
        executor = agent.executor
        for i in range(8):
            agent.step(fake_observation(i))
        executor.switch(6)
        agent.step(fake_observation(8))
        assert executor.draining is not None
        os.kill(executor.draining.group.pids[1], signal.SIGKILL)
        with pytest.raises(WorkerRestartedError, match="replaced"):
            for i in range(9, 30):
                agent.step(fake_observation(i))
        assert agent.restarts == 1 and executor.draining is None and executor.shape.pp_generation == 6
        after = [agent.step(fake_observation(i)) for i in range(100, 112)]
    assert all(a.step_id >= 100 and a.context_step_id >= 100 for a in after)
    assert [a.step_id for a in after] == sorted(a.step_id for a in after)


KEEP_AN_ERROR_PAST_SHUTDOWN = textwrap.dedent(
    """
    import gc, os, signal
    import ray
    from auras import AurasAgent, load_config
    from auras.errors import WorkerRestartedError
    from auras.policies.base import Policy
    from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation

    config = load_config(overrides=["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.pp_generation=3",
                                    "pipeline.target_hz=1", "pipeline.controller_window=1000", "pipeline.backend=ray",
                                    "pipeline.worker_timeout_s=20"])
    kept = []
    with AurasAgent(config, policy=Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12))) as agent:
        for i in range(6):
            agent.step(fake_observation(i))
        os.kill(agent.executor.engine.group.pids[1], signal.SIGKILL)
        for i in range(6, 40):
            try:
                agent.step(fake_observation(i))
            except WorkerRestartedError as exc:
                kept.append(exc)
                break
    ray.shutdown()
    gc.collect()
    print("KEPT", len(kept))
    """
)


def test_a_restart_error_kept_past_ray_shutdown_does_not_crash_the_process():
    """A frame whose generation actor died after perception's contexts were read (contexts come back to the
    driver): the error's Ray frames held arrays that are views of the channel's shared memory, and freeing
    them after ray.shutdown crashed the process (SIGSEGV). Run in a process of its own, with a Ray of its own."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", KEEP_AN_ERROR_PAST_SHUTDOWN], cwd=root, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0 and "KEPT 1" in done.stdout, (done.returncode, done.stdout[-2000:],
                                                              done.stderr[-3000:])
