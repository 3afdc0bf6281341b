"""Configuration: defaults, constraints, presets, overrides, and the messages for bad values."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from auras.config import AurasConfig, config_hash, load_config, preset_names
from auras.errors import ConfigError


def _sections() -> list[type[BaseModel]]:
    return [AurasConfig] + [f.annotation for f in AurasConfig.model_fields.values()]  # type: ignore[misc]


def test_defaults_are_valid_and_frozen():
    cfg = AurasConfig()
    assert cfg.env.task == "push-v3"
    with pytest.raises(Exception, match="frozen"):
        cfg.env.horizon = 5  # type: ignore[misc]


@pytest.mark.parametrize("model", _sections(), ids=lambda m: m.__name__)
def test_every_field_has_default_description_and_constraint(model: type[BaseModel]):
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True
    validators = model.__pydantic_decorators__.field_validators.values()
    validated = {name for dec in validators for name in dec.info.fields}
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
        assert not field.is_required(), f"{model.__name__}.{name} has no default"
        annotation = field.annotation
        constrained = (
            bool(field.metadata)  # ge / le / pattern / min_length
            or typing.get_origin(annotation) is typing.Literal
            or annotation is bool
            or (isinstance(annotation, type) and issubclass(annotation, BaseModel))
            or name in validated
        )
        assert constrained, f"{model.__name__}.{name} has no constraint"


def test_presets_load_and_default_preset_equals_defaults():
    assert "default" in preset_names()
    for name in preset_names():
        load_config(name)
    assert load_config("default") == AurasConfig()


def test_overrides_parse_values_and_apply_in_order():
    cfg = load_config("default", ["bench.episodes=3", "env.terminate_on_success=false", "bench.episodes=4"])
    assert cfg.bench.episodes == 4
    assert cfg.env.terminate_on_success is False


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("env:\n  task: reach-v3\nbench:\n  episodes: 2\n")
    cfg = load_config(path, ["bench.episodes=5"])
    assert (cfg.env.task, cfg.bench.episodes) == ("reach-v3", 5)


def test_bad_value_names_field_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["bench.episodes=0"])
    assert "bench.episodes: got 0; Input should be greater than or equal to 1" in str(err.value)


def test_bad_literal_lists_choices():
    with pytest.raises(
        ConfigError,
        match=r"pipeline.mode: got 'warp'; Input should be 'sequential', 'decoupled', 'parallel', 'pipeline' "
        r"or 'auras'",
    ):
        load_config(overrides=["pipeline.mode=warp"])


def test_unknown_task_suggests_closest():
    expected = r"env.task: got 'psuh-v3'; unknown task 'psuh-v3'; did you mean 'push-v3'\?"
    with pytest.raises(ConfigError, match=expected):
        load_config(overrides=["env.task=psuh-v3"])


def test_unknown_field_suggests_closest():
    with pytest.raises(ConfigError, match=r"bench.episodez: unknown field; did you mean 'episodes'\?"):
        load_config(overrides=["bench.episodez=3"])


def test_bad_device_pattern():
    with pytest.raises(ConfigError, match=r"policy.device: got 'gpu'; String should match pattern"):
        load_config(overrides=["policy.device=gpu"])


def test_malformed_override_and_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        load_config(overrides=["bench.episodes"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown config preset 'defualt'; did you mean 'default'"):
        load_config("defualt")


def test_non_mapping_yaml_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at top level, got list"):
        load_config(path)


def test_hash_is_stable_and_sensitive():
    assert config_hash(AurasConfig()) == config_hash(load_config("default"))
    assert config_hash(AurasConfig()) != config_hash(load_config(overrides=["bench.episodes=3"]))
