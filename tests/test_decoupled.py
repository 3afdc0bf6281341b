"""`decoupled` mode: perception loops on the newest observation; generation uses its latest result."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from auras import AurasAgent, load_config
from auras.errors import WorkerDiedError
from tests.fakes import fake_observation, fake_policy


def _agent(perception_s: float = 0.0, generation_s: float = 0.0) -> AurasAgent:
    return AurasAgent(
        load_config(overrides=["pipeline.mode=decoupled"]), policy=fake_policy(perception_s, generation_s)
    )


def test_actions_use_the_latest_finished_context_and_trace_to_observations():
    with _agent(perception_s=0.01, generation_s=0.002) as agent:
        actions = [agent.step(fake_observation(i)) for i in range(30)]
    for i, action in enumerate(actions):
        assert action.step_id == i and 0 <= action.context_step_id <= i
        np.testing.assert_allclose(action.values, 0.1 + action.context_step_id / 1000, rtol=1e-6)
    assert actions[0].context_step_id == 0  # the first step waits for a context
    assert any(a.context_step_id < a.step_id for a in actions)  # generation does not wait for perception


def test_perception_keeps_running_on_the_newest_observation():
    with _agent(perception_s=0.002, generation_s=0.02) as agent:
        for i in range(5):
            agent.step(fake_observation(i))
        assert agent.executor.perceptions > 5  # wasted perception work, as in the paper's DEC


def test_close_stops_the_perception_thread():
    before = {t.name for t in threading.enumerate()}
    agent = _agent()
    agent.step(fake_observation(0))
    agent.close()
    agent.close()
    after = {t.name for t in threading.enumerate() if t.is_alive()}
    assert "auras-decoupled-perception" not in after - before


def test_a_failing_perception_is_reported_not_swallowed():
    agent = _agent()

    def broken(observations):
        raise RuntimeError("camera decoder crashed")

    agent.policy.perception.perceive = broken  # type: ignore[method-assign]
    with pytest.raises(WorkerDiedError, match="camera decoder crashed"):
        agent.step(fake_observation(0))
    agent.close()


def test_reset_drops_the_perception_of_the_last_episode():
    """A perception still running on the old episode's last observation must not feed the new
    episode's first action (it used to: the first chunk of every episode acted on the old scene)."""
    with _agent(perception_s=0.05) as agent:
        agent.step(fake_observation(400))
        agent.step(fake_observation(401))  # perception now loops on 401, one pass every 50 ms
        agent.reset()  # lands while a pass over 401 is running
        first = agent.step(fake_observation(0))
        assert first.context_step_id == 0
        np.testing.assert_allclose(first.values, 0.1, rtol=1e-6)
