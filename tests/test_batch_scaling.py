"""scripts/batch_scaling.py: the batched calls it times are real batches of different robots' rows."""

from __future__ import annotations

import numpy as np

from tests.scripts import load_script


def _script():
    return load_script("batch_scaling")


def test_it_times_batches_of_distinct_observations_for_a_shipped_policy():
    script = _script()
    rows = script.measure("tiny-dp", [1, 3], repeats=1)
    assert [r["batch"] for r in rows] == [1, 3]
    assert all(r["perceive_ms"] > 0 and r["generate_ms"] > 0 for r in rows)
    from auras.training.train import policy_class

    policy = policy_class("tiny-dp").from_pretrained("tiny-dp").as_policy()
    observations = script.robot_observations(policy, 3, seed=3)
    assert len({o.images["front"].tobytes() for o in observations}) == 3  # three robots, three scenes
    actions = np.asarray(policy.generation.generate(policy.perception.perceive(observations)))
    assert actions.shape[0] == 3
