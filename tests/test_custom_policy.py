"""The worked example of docs/custom-policy.md: a policy from an installed package (examples/custom-policy,
entry point ``example-flow``) runs by name through the config, `auras bench`, `auras tune` and `auras serve`,
on the local and the ray backend, and a policy registered at run time reaches the Ray actors."""

from __future__ import annotations

import importlib
import json
import site
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from auras.agent import AurasAgent
from auras.bridge.server import BridgeServer
from auras.cli import app
from auras.config import load_config
from auras.errors import ConfigError
from auras.policies.build import policy_factory
from auras.registry import POLICIES, register_policy
from auras.types import Observation
from auras_client.client import RobotClient
from tests.ports import free_service_port
from tests.test_bridge import _start, _wait_action
from tests.test_ray_backend import ray_cluster  # noqa: F401  (the shared Ray fixture)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom-policy"
NAME = "example-flow"
FAST = ["--set", "bench.stream_steps=10", "--set", "bench.warmup_steps=2", "--set", "env.horizon=20"]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {point.name: point for point in metadata.entry_points(group="auras.policies")}


@pytest.fixture(scope="session")
def example_policy() -> metadata.EntryPoint:
    """The example package installed in this interpreter's environment (`make setup` installs it;
    otherwise it is installed now), found by its entry point alone."""
    if NAME not in _entry_points():
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(EXAMPLE)],
                             capture_output=True, text=True, timeout=300)
        assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
        site.addsitedir(sysconfig.get_paths()["purelib"])  # run the new .pth file: the editable install's finder
        importlib.invalidate_caches()
        POLICIES.refresh()  # the registry reads entry points once per process: read them again
    point = _entry_points().get(NAME)
    assert point is not None and point.value == "auras_example_policy.policy:build", _entry_points()
    return point


def _observation(step: int, size: int = 84) -> Observation:
    image = np.full((size, size, 3), step % 256, np.uint8)
    return Observation({"front": image}, np.full(4, 0.01 * step, np.float32), "reach the goal", step, time.monotonic())


def module_level_factory(config):
    """A factory registered at run time: the Ray actors import it by module and name."""
    return policy_factory(NAME)(config)


# -- the registry and the config ------------------------------------------------------------------------


def test_the_registry_finds_the_example_by_its_entry_point(example_policy):
    assert NAME in POLICIES.names()
    factory = policy_factory(NAME)  # imported by the registry, on first use
    assert factory.__module__ == "auras_example_policy.policy" and factory.__name__ == "build"


def test_the_config_takes_the_name_and_suggests_it_for_a_typo(example_policy):
    config = load_config(overrides=[f"policy.type={NAME}"])
    assert config.policy.type == NAME
    with pytest.raises(ConfigError, match=r"unknown policy 'example-flw'; did you mean 'example-flow'\?"):
        load_config(overrides=["policy.type=example-flw"])


def test_the_agent_builds_it_from_the_config_and_reset_reseeds_it(example_policy):
    config = load_config(overrides=[f"policy.type={NAME}", "env.image_size=64", "policy.execute_steps=3"])
    with AurasAgent(config) as agent:
        spec = agent.policy_spec
        assert (spec.family, spec.action_shape, spec.perception_stages, spec.generation_iterations) == (
            "denoising", (8, 4), 2, 10)
        assert spec.observation.cameras == {"front": (64, 64)} and spec.execute_steps == 3
        first = agent.step(_observation(0, 64)).values
        agent.reset()
        again = agent.step(_observation(0, 64)).values  # reset() reseeds the initial noise
    assert first.shape == (8, 4) and np.all(np.abs(first) <= 1.0)
    np.testing.assert_array_equal(first, again)


# -- auras bench and auras tune ---------------------------------------------------------------------------


def _bench(tmp_path: Path, *extra: str) -> list[dict]:
    result = CliRunner().invoke(app, [
        "bench", "--env", "mujoco", "--policy", NAME, "--modes", "sequential,auras", "--pp-perception", "2",
        "--pp-generation", "2", "-t", "reach-v3", "-n", "1", *FAST, "--out", str(tmp_path), "--no-progress",
        "--no-plots", *extra,
    ])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "results.json").read_text())["results"]


def _check_rows(rows: list[dict], episodes: int) -> None:
    assert [(r["policy"], r["label"]) for r in rows] == [(NAME, "sequential"), (NAME, "auras 2x2")]
    for row in rows:
        assert row["metrics"]["throughput_hz"] > 0 and row["metrics"]["episodes"] == episodes


@pytest.mark.mujoco
def test_bench_compares_sequential_and_auras_on_a_mujoco_task(example_policy, tmp_path):
    _check_rows(_bench(tmp_path), episodes=1)


@pytest.mark.ray
@pytest.mark.mujoco
def test_bench_runs_it_on_the_ray_backend(example_policy, ray_cluster, tmp_path):  # noqa: F811
    _check_rows(_bench(tmp_path, "--backend", "ray", "--no-accuracy"), episodes=0)  # the local bench runs episodes


@pytest.mark.mujoco
def test_tune_searches_its_pipeline_settings_and_writes_a_preset(example_policy, tmp_path):
    result = CliRunner().invoke(app, [
        "tune", "--policy", NAME, "--target-hz", "1", "--l-max", "3", "-n", "1", "-t", "reach-v3", "--alphas", "1",
        "--max-accuracy", "1", *FAST, "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    tuned = json.loads((tmp_path / "tune.json").read_text())
    shapes = {(p["pp_perception"], p["pp_generation"]) for p in tuned["points"] if p["mode"] == "auras"}
    assert shapes == {(1, 1), (1, 2), (2, 1)}  # L_max 3 over 2 perception stages and 10 steps
    preset = load_config(tmp_path / f"tuned-{NAME}.yaml")
    assert preset.policy.type == NAME and preset.pipeline.mode == "auras"


# -- auras serve ------------------------------------------------------------------------------------------


def _robot(address: str) -> RobotClient:
    """A robot whose actions stay valid while the server starts its pipeline (the first action waits for it)."""
    return RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction="reach", ttl_s=60.0)


def _first_chunk(robot: RobotClient) -> np.ndarray:
    seq = robot.publish({"front": np.zeros((84, 84, 3), np.uint8)}, np.zeros(4, np.float32))
    return _wait_action(robot, seq, timeout=60).chunk


def test_serve_command_answers_a_robot_with_action_chunks(example_policy):
    address = f"tcp://127.0.0.1:{free_service_port()}"
    server = _start(["serve", "--bind", address, "--policy", NAME, "--mode", "auras",
                     "--set", "pipeline.pp_perception=2", "--set", "pipeline.pp_generation=2"])
    try:
        with _robot(address) as robot:
            assert _first_chunk(robot).shape == (8, 4)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.ray
def test_a_bridge_server_on_the_ray_backend_serves_its_chunks(example_policy, ray_cluster):  # noqa: F811
    config = load_config(overrides=[f"policy.type={NAME}", "pipeline.backend=ray", "pipeline.mode=auras",
                                    "pipeline.pp_perception=2", "pipeline.pp_generation=2"])
    address = f"tcp://127.0.0.1:{free_service_port()}"
    with BridgeServer(config, address).start(), _robot(address) as robot:
        assert _first_chunk(robot).shape == (8, 4)


@pytest.mark.slow
@pytest.mark.ray
def test_serve_command_on_the_ray_backend_keeps_serving(example_policy):
    address = f"tcp://127.0.0.1:{free_service_port()}"
    server = _start(["serve", "--bind", address, "--policy", NAME, "--backend", "ray", "--mode", "auras"])
    try:
        robot = RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction="reach", ttl_s=60.0,
                            connect=False)
        robot.hello_timeout_s = 120.0  # the first hello starts the session's actors
        with robot.connect():
            assert _first_chunk(robot).shape == (8, 4)
            deadline, seq = time.monotonic() + 75.0, 0  # a robot served for over a minute
            while time.monotonic() < deadline:
                assert server.poll() is None, server.communicate()[0][-2000:]
                seq = robot.publish({"front": np.zeros((84, 84, 3), np.uint8)}, np.zeros(4, np.float32)) or seq
                time.sleep(0.05)
            _wait_action(robot, seq - 20, timeout=10)  # actions still come: from the last second's observations
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=30)


# -- run-time registration --------------------------------------------------------------------------------


@pytest.mark.ray
def test_a_policy_registered_at_run_time_reaches_the_ray_actors(example_policy, ray_cluster):  # noqa: F811
    register_policy("my-fake", module_level_factory)
    try:
        actions = {}
        for backend in ("local", "ray"):
            config = load_config(overrides=["policy.type=my-fake", f"pipeline.backend={backend}",
                                            "pipeline.mode=auras", "pipeline.pp_perception=2",
                                            "pipeline.pp_generation=2"])
            with AurasAgent(config) as agent:
                assert agent.policy_spec.name == "my-fake"
                assert (agent.hosted_policy is None) == (backend == "ray")  # on ray the actors built it
                actions[backend] = [agent.step(_observation(i)).values for i in range(6)]
        for here, there in zip(actions["local"], actions["ray"], strict=True):
            np.testing.assert_allclose(here, there, rtol=1e-5, atol=1e-6)
    finally:
        POLICIES.unregister("my-fake")
