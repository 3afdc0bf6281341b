"""GPU placement on the Ray backend, proven on a CPU machine with Ray's logical GPUs
(``ray.init(num_gpus=2)``) and an injected device probe that says CUDA is there: each actor is
assigned a GPU of its own and asks for it. Without the probe, the same placement is a clear error
(torch sees no CUDA), raised from the actor and surfaced by the agent. Runs in a child process with a
cluster of its own, so the test session's Ray (no GPUs) is not touched."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

SCRIPT = textwrap.dedent(
    """
    import json
    import time
    import ray
    from auras import AurasAgent, load_config
    from auras.devices import TorchView
    from auras.errors import ConfigError
    from auras.registry import register_policy
    from tests.fakes import movable_fake_policy

    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    register_policy("fake-movable", movable_fake_policy)  # the config path: actors build it by name
    cuda = lambda: TorchView(True, 1, "probe")
    out = {}
    for mode in ("auras", "sequential", "decoupled"):
        config = load_config(overrides=[f"pipeline.mode={mode}", "pipeline.backend=ray", "policy.device=cuda",
                                        "policy.type=fake-movable", "pipeline.pp_generation=3"])
        with AurasAgent(config, device_probe=cuda) as agent:
            out[mode] = agent.stats()["workers"]  # each actor's own report of where it runs
            out[mode + " stats"] = agent.stats()
    try:
        AurasAgent(load_config(overrides=["pipeline.mode=auras", "pipeline.backend=ray", "policy.device=cuda",
                                          "policy.type=fake-movable"]))
    except ConfigError as exc:
        out["error"] = str(exc)
    deadline = time.monotonic() + 60  # removing a placement group frees its resources asynchronously
    while ray.available_resources().get("GPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    out["gpus_free"] = ray.available_resources().get("GPU", 0)
    print("RESULT", json.dumps(out))
    """
)


def test_each_actor_gets_its_own_logical_gpu_and_no_cuda_is_a_clear_error():
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    for mode in ("auras", "sequential", "decoupled"):
        perception, generation = result[mode]
        assert perception["device"] == generation["device"] == "cuda"
        assert len(perception["gpu_ids"]) == len(generation["gpu_ids"]) == 1
        assert perception["gpu_ids"] != generation["gpu_ids"], f"{mode}: both actors on GPU {perception['gpu_ids']}"
        stats = result[mode + " stats"]  # what the agent reports is where the actors are
        assert [(w["role"], w["gpu_ids"], w["device"]) for w in stats["workers"]] == [
            ("perception", perception["gpu_ids"], "cuda"),
            ("generation", generation["gpu_ids"], "cuda"),
        ]
        assert stats["context_transport"] == "pinned-host"  # CUDA actors: through pinned host memory
    assert "sees no CUDA" in result["error"] and "policy.device=cpu" in result["error"]
    assert result["gpus_free"] == 2  # the failed agent gave its reservation back
