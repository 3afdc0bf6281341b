"""`auras train`: a short run end to end, and continuing a run from its checkpoint (--init)."""

from __future__ import annotations

import json

import pytest

from auras.data.collect import collect
from auras.errors import ConfigError
from auras.training.train import train
from tests.test_tiny_vla import SMALL


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    collect("reach-v3", episodes=1, out=out, seed=0, horizon=30)
    return out


def _run(demos, out, **kwargs):
    args = {"steps": 2, "batch_size": 4, "eval_every": 100, "eval_episodes": 1, "seed": 0}
    return train("tiny-vla", demos, out, **{**args, **kwargs})


@pytest.mark.mujoco
def test_a_run_continues_from_its_checkpoint_with_new_training_only_settings(demos, tmp_path):
    first = _run(demos, tmp_path / "first", overrides=SMALL)
    assert first["steps_done"] == 2 and (tmp_path / "first" / "last" / "model.safetensors").exists()
    second = _run(demos, tmp_path / "second", init=tmp_path / "first" / "last",
                  overrides={"token_corruption": 0.2, "label_sigma": 1.0})
    assert second["init"] == str(tmp_path / "first" / "last")
    config = json.loads((tmp_path / "second" / "last" / "config.json").read_text())
    assert config["token_corruption"] == 0.2 and config["label_sigma"] == 1.0
    assert config["lm_layers"] == SMALL["lm_layers"]  # the architecture came from the checkpoint


@pytest.mark.mujoco
def test_continuing_a_run_refuses_settings_that_change_the_model(demos, tmp_path):
    _run(demos, tmp_path / "first", overrides=SMALL)
    with pytest.raises(ConfigError, match=r"\['lm_layers'\] cannot change a model loaded from --init.*label_sigma"):
        _run(demos, tmp_path / "second", init=tmp_path / "first" / "last", overrides={"lm_layers": 3})
