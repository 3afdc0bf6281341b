"""One perception model shared by many agents: batching, row hand-back, failure isolation, server wiring."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from auras.agent import AurasAgent
from auras.bridge.batcher import PerceptionBatcher
from auras.config import load_config
from auras.errors import AgentClosedError, ConfigError, InvalidInputError
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakePerception, FakeStagedPerception, fake_observation


class _RecordingPerception(FakePerception):
    """Records every batch size; refuses (InvalidInputError) any batch holding step id 666."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.sizes: list[int] = []

    def perceive(self, observations):
        self.sizes.append(len(observations))
        if any(o.step_id == 666 for o in observations):
            raise InvalidInputError("step 666 is refused")
        return super().perceive(observations)


def _call_at_once(views, step_ids):
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(views))

    def call(i):
        barrier.wait()
        try:
            results[i] = views[i].perceive([fake_observation(step_ids[i])])
        except Exception as exc:  # the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(views))]
    [t.start() for t in threads]
    [t.join(10) for t in threads]
    return results


def test_concurrent_calls_share_one_batch_and_each_view_gets_its_own_rows():
    inner = _RecordingPerception(delay_s=0.01)
    batcher = PerceptionBatcher(inner, wait_ms=2000)
    views = [batcher.view() for _ in range(4)]
    try:
        for view in views:  # every view becomes active
            view.perceive([fake_observation(0)])
        inner.sizes.clear()
        results = _call_at_once(views, [10, 11, 12, 13])
        for i in range(4):
            assert results[i]["step_id"].tolist() == [10 + i]
        assert sum(inner.sizes) == 4 and len(inner.sizes) < 4  # batched, and the 2 s wait was not needed
        assert batcher.stats()["mean_batch"] > 1
    finally:
        batcher.close()


def test_a_lone_robot_never_waits_for_the_batch_deadline():
    batcher = PerceptionBatcher(FakePerception(), wait_ms=60_000)
    view = batcher.view()
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (view.perceive([fake_observation(1)]), done.set()), daemon=True).start()
        assert done.wait(10), "a single active view waited for the 60 s deadline"
    finally:
        batcher.close()


def test_max_batch_caps_a_call():
    inner = _RecordingPerception(delay_s=0.02)
    batcher = PerceptionBatcher(inner, max_batch=2, wait_ms=2000)
    views = [batcher.view() for _ in range(5)]
    try:
        for view in views:
            view.perceive([fake_observation(0)])
        inner.sizes.clear()
        results = _call_at_once(views, [1, 2, 3, 4, 5])
        assert all(results[i]["step_id"].tolist() == [i + 1] for i in range(5))
        assert max(inner.sizes) <= 2
    finally:
        batcher.close()


def test_one_robots_failure_is_never_another_robots_error():
    inner = _RecordingPerception()
    batcher = PerceptionBatcher(inner, wait_ms=2000)
    good, bad = batcher.view(), batcher.view()
    try:
        good.perceive([fake_observation(0)])
        bad.perceive([fake_observation(0)])
        results = _call_at_once([good, bad], [7, 666])
        assert results[0]["step_id"].tolist() == [7]
        assert isinstance(results[1], InvalidInputError)
        good.perceive([fake_observation(8)])  # the batcher keeps serving
    finally:
        batcher.close()


def test_a_closed_view_is_not_waited_for_and_a_closed_batcher_refuses_calls():
    batcher = PerceptionBatcher(FakePerception(), wait_ms=0)
    a, b = batcher.view(), batcher.view()
    a.perceive([fake_observation(0)])
    b.perceive([fake_observation(0)])  # both views active now
    batcher.wait_s = 60.0  # from here a call waits up to a minute for every active view
    b.close()
    done = threading.Event()
    threading.Thread(target=lambda: (a.perceive([fake_observation(1)]), done.set()), daemon=True).start()
    assert done.wait(10), "the batcher waited for a view that had closed"
    batcher.close()
    with pytest.raises(AgentClosedError):
        a.perceive([fake_observation(2)])


@pytest.mark.parametrize("mode", ["sequential", "auras"])
def test_agents_on_shared_perception_act_as_agents_with_their_own(mode):
    overrides = [f"pipeline.mode={mode}", "pipeline.pp_generation=3"]
    batcher = PerceptionBatcher(FakeStagedPerception(1, 0.001))
    shared = [AurasAgent(load_config(None, overrides), policy=Policy("f", batcher.view(), FakeDiffusion(12, 0.001)))
              for _ in range(3)]
    alone = [AurasAgent(load_config(None, overrides), policy=Policy("f", FakeStagedPerception(1), FakeDiffusion(12)))
             for _ in range(3)]
    got: dict[int, list] = {}

    def run(i):
        got[i] = [(a.step_id, a.values.tolist()) for a in (shared[i].step(fake_observation(100 * i + t))
                                                            for t in range(20))]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    try:
        for i in range(3):
            want = [(a.step_id, a.values.tolist()) for a in (alone[i].step(fake_observation(100 * i + t))
                                                              for t in range(20))]
            assert got[i] == want
    finally:
        for agent in shared + alone:
            agent.close()
        batcher.close()


@pytest.mark.parametrize("policy", ["tiny-dp", "tiny-vla"])
def test_shipped_perception_batched_across_robots_equals_one_robot_at_a_time(policy):
    import torch

    from auras.policies import build_policy

    perception = build_policy(load_config(None, [f"policy.type={policy}"])).perception
    rng = np.random.default_rng(0)
    observations = [fake_observation(i, image_size=84) for i in range(3)]
    for obs in observations:
        obs.images["front"][:] = rng.integers(0, 255, (84, 84, 3), dtype=np.uint8)
    batcher = PerceptionBatcher(perception, wait_ms=2000)
    views = [batcher.view() for _ in observations]
    try:
        for view in views:
            view.perceive([observations[0]])
        threads, got = [], {}
        for i, view in enumerate(views):
            threads.append(threading.Thread(target=lambda i=i, v=view: got.update({i: v.perceive([observations[i]])})))
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        for i, obs in enumerate(observations):
            want = perception.perceive([obs])
            assert set(got[i]) == set(want)
            for name in want:
                torch.testing.assert_close(torch.as_tensor(got[i][name]), torch.as_tensor(want[name]),
                                           rtol=1e-4, atol=1e-5)
    finally:
        batcher.close()


def test_the_server_shares_perception_where_it_can_and_refuses_an_explicit_share_it_cannot_run():
    from auras.bridge.wiring import perception_sharing, session_agents

    assert perception_sharing(load_config("pipeline-tiny-dp")) == "shared"  # auto, the default
    assert perception_sharing(load_config(None, ["pipeline.backend=ray"])) == "separate"
    assert perception_sharing(load_config(None, ["pipeline.mode=auras", "pipeline.pp_perception=2"])) == "separate"
    assert perception_sharing(load_config("pipeline-tiny-dp", ["serve.perception=separate"])) == "separate"
    with pytest.raises(ConfigError, match="backend=local"):
        session_agents(load_config(None, ["serve.engine=per-robot", "serve.perception=shared", "pipeline.backend=ray",
                                          "policy.type=tiny-dp"]))
    with pytest.raises(ConfigError, match="pp_perception=1"):
        session_agents(load_config(None, ["serve.engine=per-robot", "serve.perception=shared", "pipeline.mode=auras",
                                          "pipeline.pp_perception=2", "policy.type=tiny-dp"]))


def test_two_robots_are_served_through_one_shared_tiny_dp_perception():
    from auras.bridge.server import BridgeServer
    from auras_client.client import RobotClient
    from tests.ports import free_service_port

    config = load_config("pipeline-tiny-dp", ["serve.engine=per-robot", "serve.perception=shared"])
    with BridgeServer(config, f"tcp://127.0.0.1:{free_service_port()}").start() as server:
        robots = [RobotClient(server.bind, instruction="press the button", robot=f"r{i}", ttl_s=30.0)
                  for i in range(2)]
        try:
            image = np.zeros((84, 84, 3), np.uint8)
            for _ in range(40):
                for robot in robots:
                    robot.publish({"front": image}, np.array([0.0, 0.6, 0.2, 1.0], np.float32))
                time.sleep(0.01)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(r.latest_action() is not None for r in robots):
                time.sleep(0.05)
            assert all(r.latest_action() is not None for r in robots)
            assert server.batcher.stats()["observations"] > 0
            assert server.stats()["shared_perception"]["batches"] > 0
        finally:
            for robot in robots:
                robot.close()
