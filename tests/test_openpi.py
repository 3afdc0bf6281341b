"""`auras serve --protocol openpi` against a client written from openpi's protocol (openpi-client pins
numpy < 2, so it cannot join this environment): metadata first, msgpack-numpy both ways, actions and
timing in each reply, errors as text then close 1011, GET /healthz, one session per connection."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError

from auras import AurasAgent, load_config
from auras.bridge.openpi import OpenpiServer
from auras.errors import ConfigError
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception
from tests.openpi_client import OpenpiStyleClient, libero_obs


@pytest.fixture
def server():
    def agent() -> AurasAgent:  # a pipelined fake diffusion policy: (2, 4) chunks, 84 px camera
        policy = Policy("fake-dp", FakeStagedPerception(2, image_size=84), FakeDiffusion(6))
        return AurasAgent(load_config(None, ["pipeline.mode=auras", "pipeline.pp_generation=2"]), policy=policy)

    keys = load_config().serve.openpi_keys
    with OpenpiServer(host="127.0.0.1", port=0, agent_factory=agent, keys=keys).start() as srv:
        yield srv


def test_an_openpi_client_gets_metadata_then_actions_with_timing(server):
    client = OpenpiStyleClient(server.address)
    try:
        assert client.metadata["policy"] == "fake-dp" and client.metadata["action_shape"][-1] == 4
        replies = [client.infer(libero_obs(i)) for i in range(4)]
    finally:
        client.close()
    for reply in replies:
        assert reply["actions"].dtype == np.float32 and reply["actions"].shape == (2, 4)
        assert reply["server_timing"]["infer_ms"] > 0
    assert "prev_total_ms" in replies[1]["server_timing"] and "prev_total_ms" not in replies[0]["server_timing"]
    # the fake policy's action carries the step id of the observation it read: the public context is fresh
    assert [r["context_step_id"] for r in replies[1:]] == [1, 2, 3]


def test_bad_input_gets_the_error_as_text_then_a_1011_close_and_the_server_lives_on(server):
    client = OpenpiStyleClient(server.address)
    obs = libero_obs(0)
    del obs["observation/state"]
    with pytest.raises(RuntimeError, match="expected key 'observation/state'"):
        client.infer(obs)
    with pytest.raises(ConnectionClosedError) as closed:
        client.ws.recv()
    assert closed.value.rcvd.code == 1011
    fresh = OpenpiStyleClient(server.address)  # the server keeps serving
    try:
        assert fresh.infer(libero_obs(1))["actions"].shape == (2, 4)
        bad_image = libero_obs(2)
        bad_image["observation/image"] = np.zeros((224, 224, 3), np.float64) + 7.0
        with pytest.raises(RuntimeError, match=r"expected uint8 \(or float in \[0, 1\]\)"):
            fresh.infer(bad_image)
    finally:
        fresh.close()
    assert server.counters["errors"] == 2


def test_healthz_episode_control_and_concurrent_sessions(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
        assert response.status == 200 and response.read() == b"OK\n"
    a, b = OpenpiStyleClient(server.address), OpenpiStyleClient(server.address)
    try:
        assert server.sessions == 2
        for i in range(3):
            a.infer(libero_obs(i))
        first_b = b.infer(libero_obs(10))  # b's own pipeline: its first action answers its first observation
        assert first_b["step_id"] == 0
        assert a.infer({"__ctrl__": "episode_start"})["ok"]
        assert a.infer(libero_obs(20))["step_id"] == 3  # a reset pipeline refills from the next observation
    finally:
        a.close()
        b.close()


def test_openpi_keys_must_name_auras_targets():
    with pytest.raises(ConfigError, match=r"targets must be image\.<camera>, state, instruction or step"):
        load_config(None, ["serve.openpi_keys={'wrist': 'observation/wrist_image'}"])


def test_auras_serve_speaks_openpi_with_a_shipped_policy():
    """The command line: `auras serve --protocol openpi` with tiny-dp; an openpi LIBERO-style observation
    (224 px images, resized to the policy's 84 px) gets tiny-dp's (16, 4) chunk."""
    import os
    import subprocess
    import sys
    import time

    from tests.ports import free_service_port

    port = free_service_port()
    server = subprocess.Popen([sys.executable, "-m", "auras.cli", "serve", "--protocol", "openpi", "--bind",
                               f"ws://127.0.0.1:{port}", "--policy", "tiny-dp"], env=dict(os.environ, MUJOCO_GL="egl"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = OpenpiStyleClient(f"ws://127.0.0.1:{port}")
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        try:
            reply = client.infer(libero_obs(0))
        finally:
            client.close()
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert client.metadata["policy"] == "tiny-dp" and reply["actions"].shape == (16, 4), output
    assert server.returncode in (0, -15), output
