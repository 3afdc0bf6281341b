"""CUDA checks: skipped without CUDA, run by scripts/gpu_check.sh on a GPU machine.

What the CPU suite cannot prove: policies moved to a GPU act as on the CPU, compiled stages (CUDA
graphs with reduce-overhead) act as eager ones, contexts cross between CUDA actors through pinned
host memory intact, concurrent perception and generation on one GPU use their own streams, and on
two GPUs each actor holds its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auras import AurasAgent, load_config
from auras.context.tensors import as_numpy, as_torch
from tests.test_tiny_dp import observation

pytestmark = pytest.mark.gpu


def _run(overrides: list[str], steps: int = 10) -> tuple[np.ndarray, dict, AurasAgent]:
    agent = AurasAgent(load_config(overrides=overrides))
    with agent:
        size = next(iter(agent.spec.cameras.values()))[0]
        values = np.stack([agent.step(observation(i, size)).values for i in range(steps)])
        return values, agent.stats(), agent


def test_pinned_transport_round_trips_every_dtype_on_the_device():
    context = {
        "h": torch.randn(2, 5, device="cuda"),
        "b": torch.randn(2, 3, device="cuda").to(torch.bfloat16),
        "ids": torch.arange(6, device="cuda").reshape(2, 3),
    }
    back = as_torch(as_numpy(context, pinned=True), "cuda", pinned=True)
    torch.cuda.synchronize()
    for name, tensor in context.items():
        assert back[name].device.type == "cuda" and back[name].dtype == tensor.dtype
        assert torch.equal(back[name], tensor), name


@pytest.mark.parametrize("policy", ["tiny-dp", "tiny-vla"])
def test_a_policy_on_the_gpu_acts_as_on_the_cpu(policy):
    base = [f"policy.type={policy}", "pipeline.mode=auras", "pipeline.pp_generation=3"]
    cpu, _, _ = _run(base)
    gpu, stats, _ = _run([*base, "policy.device=cuda"])
    assert stats["workers"][0]["device"] == "cuda"
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)


def test_concurrent_perception_and_generation_on_one_gpu_use_two_streams():
    base = ["policy.type=tiny-dp", "pipeline.mode=auras", "pipeline.pp_perception=2", "pipeline.pp_generation=3",
            "pipeline.fetch_offset=-1"]
    cpu, _, _ = _run(base)
    gpu, _, agent = _run([*base, "policy.device=cuda"])
    streams = agent.executor.graph.streams
    assert streams.enabled and len(set(streams.names().values())) == 2
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_stages_on_the_gpu_act_as_eager_ones(mode):
    base = ["policy.type=tiny-dp", "pipeline.mode=auras", "pipeline.pp_generation=3", "policy.device=cuda"]
    eager, _, _ = _run(base)
    compiled, stats, _ = _run([*base, f"policy.compile={mode}"])
    assert stats["compile_ms"] > 0
    np.testing.assert_allclose(compiled, eager, atol=1e-3)


def test_ray_actors_on_the_gpus_act_as_in_process_and_report_their_devices():
    base = ["policy.type=tiny-dp", "pipeline.mode=auras", "pipeline.pp_generation=3", "policy.device=cuda"]
    local, _, _ = _run(base)
    remote, stats, _ = _run([*base, "pipeline.backend=ray"])
    perception, generation = stats["workers"]
    assert perception["device"] == generation["device"] == "cuda"
    assert stats["context_transport"] == "pinned-host"
    if torch.cuda.device_count() >= 2:  # one GPU each
        assert perception["gpu_ids"] != generation["gpu_ids"]
    else:  # a share of the one GPU each
        assert perception["gpu_ids"] == generation["gpu_ids"]
    np.testing.assert_allclose(remote, local, atol=1e-4)
