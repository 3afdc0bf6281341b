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


def test_the_hosted_policy_is_still_known_after_close():
    """The session host releases what a policy registered (a shared-perception view) after it closed the
    agent, through ``hosted_policy``: closing must not make the executor forget which policy it hosted."""
    from auras.pipeline.decoupled import DecoupledExecutor
    from tests.fakes import fake_policy

    policy = fake_policy()
    executor = DecoupledExecutor(policy)
    executor.close()
    assert executor.hosted_policy is policy


def test_a_restart_that_failed_is_tried_again_on_the_next_step():
    """Generation's worker dies, and the first replacement cannot be started: that step fails, and the next
    step tries the replacement again (it used to report a crashed perception loop for ever)."""
    from auras.errors import WorkerRestartedError
    from auras.pipeline.backend import ThreadBackend
    from auras.pipeline.decoupled import DecoupledExecutor

    class Flaky(ThreadBackend):
        """Its first group's generation worker dies on the 3rd call; its second placement fails."""

        placed = 0

        def place(self, recipes, threads=0):
            Flaky.placed += 1
            if Flaky.placed == 2:
                raise WorkerDiedError("no room for a new worker")
            group = super().place(recipes, threads)
            if Flaky.placed == 1:
                calls, submit = [0], group.submit

                def dying(index, *args):
                    calls[0] += index == 1
                    if index == 1 and calls[0] == 3:
                        raise WorkerDiedError("generation worker died")
                    return submit(index, *args)

                group.submit = dying
            return group

    executor = DecoupledExecutor(Flaky(fake_policy()))
    try:
        executor.step(fake_observation(0))
        executor.step(fake_observation(1))
        with pytest.raises(WorkerDiedError, match="no room"):
            executor.step(fake_observation(2))  # the worker died and its replacement could not start
        with pytest.raises(WorkerRestartedError):
            executor.step(fake_observation(3))  # tried again: replaced this time
        assert executor.step(fake_observation(4)).step_id == 4 and Flaky.placed == 3
    finally:
        executor.close()
