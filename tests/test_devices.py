"""Devices and dtypes are owned by the worker that hosts the policy: applied, never silently swapped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auras import AurasAgent, load_config
from auras.context.tensors import as_numpy, as_torch
from auras.devices import TorchView, check_device
from auras.errors import ConfigError
from tests.fakes import fake_observation


@pytest.fixture(scope="module")
def ray_cluster():
    from auras.pipeline.ray_backend import ensure_ray

    ray = ensure_ray()
    yield ray
    ray.shutdown()


def test_cuda_without_cuda_says_what_was_asked_what_torch_sees_and_what_to_do():
    no_cuda = lambda: TorchView(False, 0, "2.13.0+cpu")  # noqa: E731
    with pytest.raises(ConfigError, match=r"asked for 'cuda', but torch 2\.13\.0\+cpu .* sees no CUDA") as err:
        check_device("cuda", no_cuda)
    assert "policy.device=cpu" in str(err.value)
    two = lambda: TorchView(True, 2, "2.13.0")  # noqa: E731
    assert check_device("cuda:1", two) == "cuda:1"
    with pytest.raises(ConfigError, match=r"asked for 'cuda:2', but torch sees 2 CUDA device\(s\)"):
        check_device("cuda:2", two)
    with pytest.raises(ConfigError, match="expected 'cpu', 'cuda' or 'cuda:N'"):
        check_device("gpu", two)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_an_agent_asking_for_cuda_on_a_cpu_machine_is_refused_before_anything_is_built(monkeypatch):
    built = []
    monkeypatch.setattr("auras.pipeline.build_policy", lambda config: built.append(config))
    with pytest.raises(ConfigError, match="sees no CUDA"):
        AurasAgent(load_config(overrides=["policy.type=tiny-dp", "policy.device=cuda"]))
    assert built == []  # no silent fallback, and no model loaded first


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_contexts_cross_process_boundaries_with_their_dtype_and_values(dtype):
    context = {"X_V": torch.randn(2, 3, 5).to(dtype), "H_o": torch.randn(2, 7).to(dtype), "ids": np.arange(2)}
    shipped = as_numpy(context)
    assert all(isinstance(v, np.ndarray) for v in shipped.arrays.values())  # what Ray channels move
    back = as_torch(shipped)
    for name in ("X_V", "H_o"):
        assert back[name].dtype == dtype and torch.equal(back[name], context[name])
    np.testing.assert_array_equal(back["ids"], context["ids"])


@pytest.mark.parametrize("kind", ["tiny-dp", "tiny-vla"])
@pytest.mark.parametrize("mode", ["sequential", "auras"])
def test_shipped_policies_run_end_to_end_in_bfloat16(kind, mode):
    overrides = [f"policy.type={kind}", "policy.dtype=bfloat16", f"pipeline.mode={mode}"]
    if mode == "auras":
        overrides += ["pipeline.pp_generation=4"]
    with AurasAgent(load_config(overrides=overrides)) as agent:
        model = agent.policy.generation.model
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        actions = [agent.step(fake_observation(i, image_size=84)) for i in range(6)]
    for action in actions:
        assert action.values.dtype == np.float32 and np.isfinite(action.values).all()
        assert action.values.shape == agent.policy_spec.action_shape


def test_bfloat16_actions_stay_close_to_float32_for_tiny_dp():
    """Normalisation bounds stay float32 (FLOAT32_BUFFERS), so bf16 changes the actions only as much
    as the network's own rounding does."""
    values = {}
    for dtype in ("float32", "bfloat16"):
        config = load_config(overrides=["policy.type=tiny-dp", f"policy.dtype={dtype}"])
        with AurasAgent(config) as agent:
            assert agent.policy.generation.model.action_lo.dtype == torch.float32
            values[dtype] = agent.step(fake_observation(0, image_size=84)).values
    assert np.abs(values["bfloat16"] - values["float32"]).max() < 0.5  # same order of action, not garbage


@pytest.mark.ray
def test_bfloat16_contexts_cross_between_ray_actors_intact(ray_cluster):
    overrides = ["policy.type=tiny-dp", "policy.dtype=bfloat16", "pipeline.backend=ray", "pipeline.mode=auras",
                 "pipeline.pp_generation=2"]
    with AurasAgent(load_config(overrides=overrides)) as agent:
        actions = [agent.step(fake_observation(i, image_size=84)) for i in range(4)]
        assert agent.hosted_policy is None  # the driver holds only the spec
        assert agent.policy_spec.family == "denoising" and agent.policy_spec.action_shape == (16, 4)
    assert all(np.isfinite(a.values).all() for a in actions)


@pytest.mark.ray
def test_cuda_on_a_ray_cluster_without_gpus_is_refused_before_any_actor_starts(ray_cluster):
    if ray_cluster.cluster_resources().get("GPU", 0):
        pytest.skip("the test cluster has GPUs")
    config = load_config(overrides=["policy.type=tiny-dp", "policy.device=cuda", "pipeline.backend=ray"])
    with pytest.raises(ConfigError, match="the Ray cluster has no GPU"):  # raised before the placement group
        AurasAgent(config)
