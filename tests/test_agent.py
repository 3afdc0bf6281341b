"""AurasAgent: the sequential loop, timings, tracing, bad input, lifecycle."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from auras import AurasAgent, load_config
from auras.errors import AgentClosedError, InvalidInputError
from auras.policies.base import Policy
from tests.fakes import fake_observation, fake_policy


def test_sequential_step_traces_action_to_observation_and_reports_timings():
    with AurasAgent(policy=fake_policy(perception_s=0.002, generation_s=0.004)) as agent:
        for step_id in range(5):
            obs = fake_observation(step_id)
            action = agent.step(obs)
            assert action.step_id == step_id and action.capture_time == obs.capture_time
            np.testing.assert_allclose(action.values, 0.1 + step_id / 1000, rtol=1e-6)
            stages = action.timings.stages_ms
            assert set(stages) == {"perception", "generation"}
            assert stages["perception"] >= 2.0 and stages["generation"] >= 4.0
            assert action.timings.latency_ms >= stages["perception"] + stages["generation"] - 1e-6


def test_bad_input_is_rejected_and_agent_stays_usable():
    with AurasAgent(policy=fake_policy()) as agent:
        with pytest.raises(InvalidInputError, match=r"expected an auras\.Observation, got dict"):
            agent.step({"image": np.zeros((8, 8, 3))})  # type: ignore[arg-type]
        wrong_size = fake_observation(0, image_size=16)
        with pytest.raises(InvalidInputError, match=r"expected shape \(8, 8, 3\), got \(16, 16, 3\)"):
            agent.step(wrong_size)
        assert agent.policy.perception.calls == 0  # rejected before anything ran
        assert agent.step(fake_observation(1)).step_id == 1


def test_reset_reaches_the_policy_and_close_is_idempotent():
    agent = AurasAgent(policy=fake_policy())
    agent.reset()
    assert agent.policy.generation.resets == 1
    agent.close()
    agent.close()
    with pytest.raises(AgentClosedError, match="after close"):
        agent.step(fake_observation(0))
    with pytest.raises(AgentClosedError):
        agent.reset()


def test_constructor_rejects_wrong_types():
    with pytest.raises(InvalidInputError, match=r"expected an auras\.AurasConfig, got dict"):
        AurasAgent({"env": {}})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="expected an auras Policy, got str"):
        AurasAgent(policy="expert")  # type: ignore[arg-type]


@pytest.mark.mujoco
def test_expert_agent_drives_real_env_to_success():
    """The privileged expert, through perception/generation and the sequential executor, solves reach."""
    from auras.envs import make_env
    from auras.envs.base import to_observation

    config = load_config(overrides=["env.task=reach-v3"])
    with AurasAgent(config) as agent, make_env("reach-v3") as env:
        assert agent.privileged
        env_obs, info = env.reset(seed=100_000)
        for t in range(env.horizon):
            action = agent.step(to_observation(env_obs, info, t, 0.0, privileged=True))
            env_obs, _, terminated, _, info = env.step(action.values)
            if terminated:
                break
        assert info["success"]


@pytest.mark.mujoco
def test_expert_agent_without_privileged_state_says_what_is_missing():
    from auras.envs import make_env
    from auras.envs.base import to_observation

    with AurasAgent() as agent, make_env("push-v3") as env:
        env_obs, info = env.reset(seed=0)
        with pytest.raises(InvalidInputError, match="expected key 'privileged_state'"):
            agent.step(to_observation(env_obs, info, 0, 0.0, privileged=False))


def test_stats_say_where_the_policy_runs_and_how_contexts_travel_in_process():
    from auras import AurasAgent, load_config

    with AurasAgent(load_config(overrides=["pipeline.mode=auras", "policy.type=tiny-dp"])) as agent:
        stats = agent.stats()
    assert stats["mode"] == "auras" and stats["backend"] == "local"
    assert stats["context_transport"] == "in-process"
    assert [(w["role"], w["device"], w["pid"]) for w in stats["workers"]] == [
        ("perception+generation", "cpu", os.getpid())
    ]
    assert stats["compile"] == "off" and stats["compile_ms"] == 0


@pytest.mark.parametrize("mode", ["sequential", "auras"])
def test_latency_and_staleness_are_stamped_on_the_agents_clock(mode):
    """On a fake clock a request whose generation costs exactly 40 ms (perception 10 ms) is answered 50 ms
    after its capture, whatever the machine did meanwhile."""
    from auras.clock import FakeClock
    from auras.policies.delay import with_injected_delay
    from tests.fakes import FakeDiffusion, FakeStagedPerception

    clock = FakeClock()
    policy = with_injected_delay(Policy("fake-dp", FakeStagedPerception(2), FakeDiffusion(12)), 10.0, 40.0,
                                 sleep=clock.sleep)
    config = load_config(None, [f"pipeline.mode={mode}", "pipeline.pp_generation=1"])
    with AurasAgent(config, policy=policy, clock=clock) as agent:
        obs = fake_observation(0)
        action = agent.step(dataclasses.replace(obs, capture_time=clock.now()))
    assert action.timings.latency_ms == pytest.approx(50.0, abs=1e-6)
    assert action.staleness_ms == pytest.approx(50.0, abs=1e-6)
