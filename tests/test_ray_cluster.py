"""A real two-node Ray cluster on localhost (`ray start --head` + a second `ray start`): the agent joins
it with pipeline.ray_address and pipeline.placement=spread puts perception and generation on
different nodes. Runs the agent in a child process so this module never touches the test session's
own Ray."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

AGENT = textwrap.dedent(
    """
    import json, sys
    import ray
    from auras import AurasAgent, load_config
    from auras.policies.base import Policy
    from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation

    config = load_config(overrides=["pipeline.mode=auras", "pipeline.backend=ray", "pipeline.pp_perception=2",
                                    "pipeline.pp_generation=3", f"pipeline.ray_address={sys.argv[1]}",
                                    "pipeline.placement=spread"])
    with AurasAgent(config, policy=Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12))) as agent:
        actions = [agent.step(fake_observation(i)) for i in range(12)]
        nodes = ray.get([actor.node.remote() for actor in agent._executor.runner.actors])
        print("RESULT", json.dumps({"nodes": nodes, "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
                                    "steps": [a.step_id for a in actions]}))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_perception_and_generation_run_on_different_nodes_of_a_two_node_cluster():
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray_cli, "the ray command comes with ray[default]"
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")

    def ray(*args: str) -> None:
        subprocess.run([ray_cli, *args], env=env, check=True, capture_output=True, text=True, timeout=180)

    try:
        ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false")
        ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1")
        out = subprocess.run([sys.executable, "-c", AGENT, f"127.0.0.1:{port}"], env=env, capture_output=True,
                             text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.split("RESULT", 1)[1])
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert result["cluster_nodes"] == 2
    assert len(set(result["nodes"])) == 2, "perception and generation share a node"
    assert len(result["steps"]) == 12
