"""auras-client installs alone: a clean virtual environment gets only numpy, pyzmq and msgpack, and the
robot side it provides drives a real `auras serve` (tiny-dp) from there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    server = subprocess.Popen([sys.executable, "-m", "auras.cli", "serve", "--bind", address, "--policy", "tiny-dp"],
                              env=dict(os.environ, MUJOCO_GL="egl"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        robot = subprocess.run([str(python), "-c", ROBOT, address], capture_output=True, text=True, timeout=240,
                               cwd=tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "HEAVY []" in robot.stdout, robot.stdout + robot.stderr
    assert "SERVER [16, 4] none" in robot.stdout and "ACTION [16, 4]" in robot.stdout, robot.stdout + robot.stderr
