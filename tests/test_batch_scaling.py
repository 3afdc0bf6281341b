"""scripts/batch_scaling.py: the batched calls it times are real batches of different robots' rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "batch_scaling.py"


def _script():
    spec = importlib.util.spec_from_file_location("batch_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_times_batches_of_distinct_observations_for_a_shipped_policy():
    script = _script()
    rows = script.measure("tiny-dp", [1, 3], repeats=1)
    assert [r["batch"] for r in rows] == [1, 3]
    assert all(r["perceive_ms"] > 0 and r["generate_ms"] > 0 for r in rows)
    from auras.training.train import policy_class

    policy = policy_class("tiny-dp").from_pretrained("tiny-dp").as_policy()
    observations = script._observations(policy, 3, seed=3)
    assert len({o.images["front"].tobytes() for o in observations}) == 3  # three robots, three scenes
    actions = np.asarray(policy.generation.generate(policy.perception.perceive(observations)))
    assert actions.shape[0] == 3
