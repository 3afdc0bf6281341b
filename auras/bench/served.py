"""Benchmark episodes on the path a robot uses (``bench.served``): the cell's configuration served by
`auras serve` in its own process, the robot in this one, the same robot loop as the in-process
realtime clock (:mod:`auras.robot_loop`) through the robot client. The server is started per cell on
a free loopback port and stopped after the cell's episodes; its log is kept in the run directory
and quoted in any error.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from auras.bench.episodes import EpisodeRecord, episode_record
from auras.bridge.robot_sim import executor_for, run_robot
from auras.bridge.transport import free_service_port
from auras.config import AurasConfig
from auras.envs import make_env
from auras.errors import AurasError
from auras.robot_loop import RealTime
from auras_client.client import RobotClient

__all__ = ["measure_accuracy_served", "serve_process"]

log = logging.getLogger("auras.bench")
SERVER_START_S = 120.0  # a loaded CI machine may take long to import torch and bind
SERVER_STOP_S = 30.0


@contextlib.contextmanager
def serve_process(config: AurasConfig, log_path: Path | None = None) -> Iterator[str]:
    """`auras serve` of ``config`` in a child process on a free loopback port; yields its service
    endpoint once it accepts connections and stops the server on exit. An error inside, or a server
    that exits early, raises with the end of the server's log (``log_path``, else a temporary file)."""
    port = free_service_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="auras-served-")))
        config_file = folder / "config.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        log_file = log_path or folder / "serve.log"
        with open(log_file, "w") as out:
            command = [sys.executable, "-c", "from auras.cli import app; app()", "serve", "-c", str(config_file),
                       "--bind", endpoint]
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_listening(server, port)
            yield endpoint
        except Exception as exc:
            if server.poll() is not None or isinstance(exc, TimeoutError):
                raise AurasError(f"{exc}; the server's log ends:\n{_tail(log_file)}") from exc
            raise
        finally:
            _stop(server)


def _wait_listening(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if server.poll() is not None:
            raise AurasError(f"auras serve exited with status {server.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"auras serve did not listen on port {port} within {SERVER_START_S:.0f} s")
        time.sleep(0.2)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=SERVER_STOP_S)
    except subprocess.TimeoutExpired:  # the episodes are measured; a slow teardown does not void them
        log.warning("auras serve did not stop within %.0f s of SIGTERM; killed", SERVER_STOP_S)
        server.kill()
        server.wait()


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"(unreadable: {exc})"


def measure_accuracy_served(
    config: AurasConfig,
    privileged: bool,
    progress: Callable[[int], None] | None = None,
    log_path: Path | None = None,
) -> list[EpisodeRecord]:
    """``config.bench.episodes`` realtime episodes on seeds ``bench.seed + i``, each through `auras serve`
    and the robot client (the client resets the session per episode); ``privileged``: the policy
    needs the simulator state."""
    bench = config.bench
    env = make_env(config.env.task, horizon=config.env.horizon, image_size=config.env.image_size,
                   terminate_on_success=config.env.terminate_on_success)
    episodes: list[EpisodeRecord] = []
    with env, serve_process(config, log_path) as endpoint:
        client = RobotClient(endpoint, cameras={"front": (env.image_size, env.image_size)}, state_dim=4,
                             instruction=env.instruction, robot=f"bench-{config.env.task}"[:64],
                             extras=("privileged_state",) if privileged else (), ttl_s=bench.action_ttl_ms / 1e3,
                             timeout_s=30.0, connect=False)
        client.hello_timeout_s = SERVER_START_S  # the hello builds the agent
        try:
            client.connect()
            executor = executor_for(client)
            for i in range(bench.episodes):
                robot = run_robot(client, env, bench.seed + i, bench.camera_hz, privileged, executor,
                                  RealTime(client.ttl_s))
                episodes.append(episode_record(robot))
                if progress:
                    progress(i + 1)
        finally:
            client.close()
    return episodes
