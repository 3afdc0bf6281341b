"""parallel mode (local threads): N independent workers, bursts, drops and staleness are counted."""

from __future__ import annotations

import pytest

from auras import AurasAgent, load_config
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation


def _agent(workers: int, delay_s: float = 0.0, backend: str = "local") -> AurasAgent:
    config = load_config(
        overrides=["pipeline.mode=parallel", f"pipeline.workers={workers}", f"pipeline.backend={backend}"]
    )
    return AurasAgent(config, policy=Policy("fake-dp", FakeStagedPerception(4, delay_s), FakeDiffusion(12, delay_s)))


@pytest.mark.parametrize("workers", [1, 3])
def test_every_action_is_new_traces_to_an_observation_and_step_ids_increase(workers):
    with _agent(workers, delay_s=0.002) as agent:
        actions = [agent.step(fake_observation(i)) for i in range(30)]
        executor = agent.executor
    step_ids = [a.step_id for a in actions]
    assert step_ids == sorted(step_ids)  # never backwards
    new = [a for i, a in enumerate(actions) if i == 0 or a.step_id != actions[i - 1].step_id]
    assert len(actions) - len(new) == executor.repeats  # a call returns a new action or repeats the last
    for action in new:
        assert action.context_step_id == action.step_id  # each worker uses its own observation only
        assert action.staleness_frames == action.frame - action.step_id >= 0
        assert action.values[0, 0] == 12 * 1000 + action.step_id  # computed from that observation
    assert executor.dropped == 0  # a worker is always free after the call that waited for it
    if workers == 1:
        assert step_ids == list(range(30))  # one worker: exactly sequential


def test_workers_overlap_without_coordination():
    """Three workers fill up; nothing spaces them out, so (depending on timing) results arrive in
    bursts and are superseded, or calls find nothing new and repeat: either way work is wasted."""
    with _agent(3, delay_s=0.01) as agent:
        for i in range(20):
            agent.step(fake_observation(i))
        executor = agent.executor
        assert executor.max_inflight == 3
        assert executor.superseded + executor.repeats > 0


def test_bad_worker_count_is_rejected():
    from auras.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pipeline\.workers: got 0"):
        load_config(overrides=["pipeline.mode=parallel", "pipeline.workers=0"])
