"""auras-client installs alone: a clean virtual environment gets only numpy, pyzmq and msgpack, and the
robot side it provides drives a real `auras serve` (tiny-dp) from there: the plain client, and the
control-loop face running every robot-side staleness strategy, whose rows are replayed here through
auras' own executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from auras.staleness import ChunkExecutor, Strategy
from tests.ports import free_service_port

ROOT = Path(__file__).resolve().parents[1]

ROBOT = textwrap.dedent(
    """
    import importlib.util, sys, time
    import numpy as np
    from auras_client import RobotClient

    heavy = [m for m in ("torch", "ray", "mujoco", "cv2", "auras") if importlib.util.find_spec(m) is not None]
    print("HEAVY", heavy)
    with RobotClient(sys.argv[1], cameras={"front": (84, 84)}, state_dim=4, instruction="push the puck",
                     ttl_s=1.0) as robot:
        print("SERVER", robot.server_info["action_shape"], robot.server_info["staleness_strategy"])
        rng = np.random.default_rng(0)
        deadline = time.monotonic() + 60
        action = None
        while action is None and time.monotonic() < deadline:
            robot.publish({"front": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)}, np.zeros(4, np.float32))
            time.sleep(0.05)
            action = robot.take_action()
        print("ACTION", None if action is None else list(action.chunk.shape))
    """
)


@pytest.mark.timeout(600)
def test_the_client_package_installs_alone_and_drives_a_real_server(tmp_path):
    venv = tmp_path / "robot-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT / "clients" / "python")],
                             capture_output=True, text=True, timeout=500)
    assert install.returncode == 0, install.stdout + install.stderr
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True).stdout.lower()
    names = {line.split("==")[0].split(" @ ")[0].strip() for line in frozen.splitlines() if line.strip()}
    assert names == {"auras-client", "numpy", "pyzmq", "msgpack"}, frozen

    address = f"tcp://127.0.0.1:{free_service_port()}"
    # mode auras with rtc: the server guides denoising where a robot sends a guide; each robot picks its own
    # robot-side strategy (the public context is the server's part)
    server = subprocess.Popen([sys.executable, "-m", "auras.cli", "serve", "--bind", address, "--policy", "tiny-dp",
                               "--mode", "auras", "--set", "staleness.strategy=rtc"],
                              env=dict(os.environ, MUJOCO_GL="egl"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    traces = tmp_path / "traces.json"
    try:
        robot = subprocess.run([str(python), "-c", ROBOT, address], capture_output=True, text=True, timeout=240,
                               cwd=tmp_path)
        loops = subprocess.run([str(python), str(ROOT / "tests" / "client_robot_loop.py"), address, str(traces),
                                *STRATEGIES], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "HEAVY []" in robot.stdout, robot.stdout + robot.stderr
    assert "SERVER [16, 4] public_context+rtc" in robot.stdout and "ACTION [16, 4]" in robot.stdout, (
        robot.stdout + robot.stderr)
    assert loops.returncode == 0, loops.stdout + loops.stderr
    for trace in json.loads(traces.read_text()):
        _replay_through_the_in_process_executor(trace)


STRATEGIES = ("none", "rtc", "roll_forward", "chunk_blend")


def _replay_through_the_in_process_executor(trace: dict) -> None:
    """The client's control loop took over the same actions, sent the same state and guide, and applied
    the same rows as auras' executor does for the same chunks landing at the same control steps. Fails if
    the client places rows from the wrong capture step, loses a strategy's guide or state, takes over a
    stale or repeated action, or runs the strategy differently from the bench and robot-sim."""
    server, strategy = trace["server"], trace["strategy"]
    settings = {k: v for k, v in server["staleness_settings"].items() if k != "execution_horizon" or v}
    executor = ChunkExecutor(Strategy.parse(strategy), server["execute_steps"], tuple(server["action_shape"]),
                             **settings)
    seen = {record["t"]: record for record in trace["seen"]}  # the newest action each step, when it changed
    sends = {record["t"]: record for record in trace["sent"]}
    attempts = set(trace["attempts"])
    captured: dict[int, int] = {}
    current = None
    for t, applied in enumerate(trace["rows"]):
        if t in seen:
            order = tuple(seen[t]["order"])  # (newest input, request)
            if (current is None or order > current) and seen[t]["age_s"] <= 5.0:
                source = captured.get(order[0], captured.get(order[1], t))
                executor.accept_chunk(np.asarray(seen[t]["chunk"], np.float32), source, t)
                current = order
        # the loop tries to send exactly on the camera ticks (every 2nd step) on which the strategy wants a request
        assert (t in attempts) == (t % 2 == 0 and executor.wants_request(t)), (strategy, t)
        if t in sends:
            state, extras = executor.prepare_inputs(t, np.array([t / 100.0, 0.1, -0.2, 0.3], np.float32))
            assert np.allclose(sends[t]["state"], state, atol=1e-6), (strategy, t)
            assert set(sends[t]["extras"]) == set(extras), (strategy, t)
            for name, values in extras.items():
                assert np.allclose(sends[t]["extras"][name], values, atol=1e-6), (strategy, t, name)
            captured[sends[t]["seq"]] = t
        row = executor.row(t)
        assert np.allclose(applied, np.zeros(4) if row is None else row, atol=1e-6), (strategy, t)
    stats = trace["stats"]
    assert stats["actions_applied"] >= 3 and stats["deadline_misses"] == 0, (strategy, stats)
    if strategy == "rtc":
        assert all(record["extras"] for record in trace["sent"])  # every observation carried its guide
