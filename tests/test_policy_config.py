"""``policy.model``: each policy's typed configuration, one schema for presets, --set, `auras config show`,
`auras train --set` and a registered custom policy; errors name the key, what was expected and what arrived."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import Field
from typer.testing import CliRunner

from auras import AurasAgent, load_config
from auras.cli import app
from auras.errors import ConfigError
from auras.policies.base import Policy
from auras.policies.configuration import PolicyModelConfig
from auras.registry import POLICIES, POLICY_CONFIGS, register_policy
from tests.fakes import FakeGeneration, FakePerception

MISSPELT = {  # policy -> (a misspelt key, the key it should suggest)
    "tiny-dp": ("num_inference_step", "num_inference_steps"),
    "tiny-vla": ("decode_sigm", "decode_sigma"),
    "tiny-flow": ("num_step", "num_steps"),
    "smolvla": ("numsteps", "num_steps"),
}


@pytest.mark.parametrize("policy", sorted(MISSPELT))
def test_a_misspelt_model_setting_is_refused_with_the_key_it_meant(policy):
    wrong, meant = MISSPELT[policy]
    with pytest.raises(ConfigError, match=rf"policy\.model: unknown key '{wrong}' \(did you mean '{meant}'\?\)"):
        load_config(None, [f"policy.type={policy}", f"policy.model.{wrong}=3"])


@pytest.mark.parametrize("policy", sorted(MISSPELT))
def test_a_model_setting_of_the_wrong_type_names_the_key_what_was_expected_and_what_arrived(policy):
    key = MISSPELT[policy][1]
    kind = "a number" if key == "decode_sigma" else "an integer"
    with pytest.raises(ConfigError, match=rf"policy\.model\.{key}: expected {kind}, got 'ten'"):
        load_config(None, [f"policy.type={policy}", f"policy.model.{key}=ten"])


def test_a_policy_without_model_settings_says_so():
    with pytest.raises(ConfigError, match="policy 'expert' has no model settings"):
        load_config(None, ["policy.type=expert", "policy.model.gain=2"])


def test_model_settings_are_validated_values_and_shown_by_config_show():
    config = load_config(None, ["policy.type=tiny-dp", "policy.model.num_inference_steps='10'"])
    assert config.policy.model == {"num_inference_steps": 10}  # coerced by the schema
    shown = CliRunner().invoke(app, ["config", "show", "--set", "policy.type=tiny-dp", "--set",
                                     "policy.model.num_inference_steps=10"])
    assert shown.exit_code == 0, shown.output
    assert "num_inference_steps: 10" in shown.output
    refused = CliRunner().invoke(app, ["config", "show", "--set", "policy.type=tiny-dp", "--set",
                                       "policy.model.num_inference_step=10"])
    assert refused.exit_code != 0 and "did you mean 'num_inference_steps'" in refused.output


@pytest.mark.parametrize(("policy", "key", "value"),
                         [("tiny-dp", "num_inference_steps", 5), ("tiny-flow", "num_steps", 4)])
def test_a_serving_setting_changes_the_policy_a_checkpoint_builds(policy, key, value):
    with AurasAgent(load_config(None, [f"policy.type={policy}", f"policy.model.{key}={value}"])) as agent:
        assert agent.policy_spec.generation_iterations == value
    with AurasAgent(load_config(None, [f"policy.type={policy}"])) as agent:
        assert agent.policy_spec.generation_iterations != value  # the checkpoint's own


def test_a_setting_that_changes_the_weights_is_refused_on_a_trained_checkpoint():
    config = load_config(None, ["policy.type=tiny-dp", "policy.model.obs_dim=64"])  # valid for a new model
    with pytest.raises(ConfigError, match=r"obs_dim cannot change on the trained checkpoint 'tiny-dp'.*auras train"):
        AurasAgent(config)


def test_train_checks_its_settings_against_the_schema_before_reading_any_data(tmp_path):
    from auras.training.train import train

    with pytest.raises(ConfigError, match=r"--set: unknown key 'obs_dimm' \(did you mean 'obs_dim'\?\)"):
        train("tiny-dp", tmp_path / "no-such-dataset", tmp_path / "out", overrides={"policy.model.obs_dimm": 64})
    with pytest.raises(ConfigError, match=r"--set\.num_inference_steps: expected a value >= 1, got 0"):
        train("tiny-dp", tmp_path / "no-such-dataset", tmp_path / "out", overrides={"num_inference_steps": 0})


class GainConfig(PolicyModelConfig):
    policy_type = "gain-policy"
    SERVING_KEYS = frozenset({"gain"})

    gain: float = Field(1.0, gt=0.0, description="Scales every action.")


class _GainGeneration(FakeGeneration):
    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def generate(self, context):
        return super().generate(context) * self.gain


def build_gain_policy(config) -> Policy:
    gain = GainConfig.parse(config.policy.model).gain
    return Policy("gain-policy", FakePerception(image_size=84), _GainGeneration(gain))


def test_a_custom_policy_registers_its_own_configuration():
    register_policy("gain-policy", build_gain_policy, config=GainConfig)
    try:
        with pytest.raises(ConfigError, match=r"unknown key 'gian' \(did you mean 'gain'\?\)"):
            load_config(None, ["policy.type=gain-policy", "policy.model.gian=2"])
        with pytest.raises(ConfigError, match=r"policy\.model\.gain: expected a value > 0\.0, got -1"):
            load_config(None, ["policy.type=gain-policy", "policy.model.gain=-1"])
        from tests.fakes import fake_observation

        actions = []
        for gain in (1, 3):
            with AurasAgent(load_config(None, ["policy.type=gain-policy", f"policy.model.gain={gain}"])) as agent:
                actions.append(agent.step(fake_observation(7, image_size=84)).chunk)
        np.testing.assert_allclose(actions[1], 3 * actions[0])
    finally:
        POLICIES.unregister("gain-policy")
        POLICY_CONFIGS.unregister("gain-policy")
