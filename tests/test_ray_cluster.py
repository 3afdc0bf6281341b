"""A real two-node Ray cluster on localhost (`ray start --head` + a second `ray start`): the agent joins
it with pipeline.ray_address and pipeline.placement=spread puts perception and generation on
different nodes. Runs the agent in a child process so this module never touches the test session's
own Ray.

The cluster is this test's own: its own temp dir and ports, and at the end only its processes are
stopped (never `ray stop`, which stops every Ray on the machine, other test sessions' included)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
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
        nodes = [w["node"] for w in agent.stats()["workers"]]
        print("RESULT", json.dumps({"nodes": nodes, "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
                                    "steps": [a.step_id for a in actions]}))
    """
)

ENGINES = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    from auras import AurasAgent, load_config
    from auras.errors import WorkerRestartedError
    from auras.pipeline import build_engine, build_executor
    from auras.policies.base import Policy
    from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation

    config = load_config(overrides=["pipeline.mode=auras", "pipeline.backend=ray", "pipeline.pp_perception=2",
                                    "pipeline.pp_generation=3", f"pipeline.ray_address={sys.argv[1]}",
                                    "pipeline.placement=pack"])
    policy = Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12))
    engines = [build_engine(config, policy) for _ in range(2)]
    robots = {f"{e}{i}": AurasAgent(config, executor=build_executor(config, engine=engines[e == "b"]))
              for e in "ab" for i in range(2)}
    outcomes = {name: [] for name in robots}
    killed, stop = threading.Event(), threading.Event()

    def run(name):
        step = 0
        while not stop.is_set():
            try:
                robots[name].step(fake_observation(step))
                outcomes[name].append(("action", step, killed.is_set()))
            except WorkerRestartedError:
                outcomes[name].append(("restarted", step, killed.is_set()))
            step += 1

    threads = [threading.Thread(target=run, args=(name,)) for name in robots]
    for t in threads:
        t.start()
    while min(len(o) for o in outcomes.values()) < 8:
        time.sleep(0.05)
    nodes = [sorted({w["node"] for w in e.workers()}) for e in engines]
    pids = {w["role"]: w["pid"] for w in engines[0].workers()}
    killed.set()
    os.kill(pids["generation"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
            sum(1 for kind, _, after in o if kind == "action" and after) >= 8 for o in outcomes.values()):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(60)
    for agent in robots.values():
        agent.close()
    for e in engines:
        e.close()
    print("RESULT", json.dumps({"nodes": nodes, "outcomes": outcomes}))
    """
)


WORKER_PORTS = 100  # per node: ports for its worker processes (the driver and each actor take one)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (held open together so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]


def _free_range(size: int) -> int:
    """The first of ``size`` consecutive free ports, between Ray's default worker ports (10002-19999: another
    cluster's workers) and the ephemeral range (32768+: outgoing connections)."""

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                return False
            return True

    for _ in range(200):
        base = random.randrange(20_000, 32_700 - size)
        if all(free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} consecutive free ports in 20000-32700")


def _start_node(ray_cli: str, args: list[str], temp_dir: str, name: str, env: dict, nodes: list) -> None:
    """`ray start --block` in a session of its own, added to ``nodes``: the node's processes are its
    descendants (and its reaper stops that process group, not ours, if it dies). Returns once it is up."""
    log = Path(temp_dir, f"{name}.log")
    with log.open("w") as out:
        node = subprocess.Popen([ray_cli, "start", "--block", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    nodes.append(node)
    deadline = time.monotonic() + 180  # bounds a hang only
    while "Ray runtime started" not in log.read_text():
        if node.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"ray start ({name}) did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _processes_of(temp_dir: str) -> list[psutil.Process]:
    """Processes of the cluster using ``temp_dir``: they name it on their command line or inherited
    RAY_TMPDIR=temp_dir (Ray renames workers `ray::...`, and they outlive a killed parent for a while)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(temp_dir in part for part in proc.info["cmdline"] or ()) or (
                proc.environ().get("RAY_TMPDIR") == temp_dir
            ):
                found.append(proc)
    return found


def _stop_nodes(nodes: list[subprocess.Popen], temp_dir: str) -> list[int]:
    """Stop exactly this cluster's processes: each `ray start --block` and all its descendants (workers
    run in process groups of their own, so a process-group kill would miss them), and any other process
    of this cluster. Returns the pids still alive afterwards."""
    procs: set[psutil.Process] = set(_processes_of(temp_dir))
    for node in nodes:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(node.pid)
            procs |= {root, *root.children(recursive=True)}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()  # psutil checks the pid still names the same process
    _, alive = psutil.wait_procs(procs, timeout=30)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=30)
    for node in nodes:
        node.wait(timeout=30)
    return sorted({p.pid for p in {*procs, *_processes_of(temp_dir)} if _running(p)})


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # a zombie is dead, just not reaped
    except psutil.NoSuchProcess:
        return False


def test_perception_and_generation_run_on_different_nodes_of_a_two_node_cluster():
    result = _on_a_two_node_cluster(AGENT, cpus_per_node=1)
    assert result["cluster_nodes"] == 2
    assert len(set(result["nodes"])) == 2, "perception and generation share a node"
    assert len(result["steps"]) == 12


@pytest.mark.slow  # about 90 s: a two-node cluster and two engines of two actors each
def test_an_engine_killed_on_one_node_restarts_only_its_own_robots_each_once():
    """Two frame engines on a two-node cluster (each its own pair of actors, packed on a node of its own),
    two robots (sessions) on each, stepping from threads of their own. SIGKILL the first engine's
    generation actor: each of its two robots gets exactly one WorkerRestartedError and actions after it;
    the other engine's robots never see one; every step of every robot is exactly one action or that
    one restart."""
    result = _on_a_two_node_cluster(ENGINES, cpus_per_node=2)
    a_nodes, b_nodes = result["nodes"]
    assert len(a_nodes) == len(b_nodes) == 1 and a_nodes != b_nodes  # an engine per node
    for name, outcomes in result["outcomes"].items():
        restarts = [o for o in outcomes if o[0] == "restarted"]
        assert len(restarts) == (1 if name.startswith("a") else 0), (name, restarts)
        assert all(after for _, _, after in restarts)  # only after the kill
        assert sum(1 for kind, _, after in outcomes if kind == "action" and after) >= 8  # and it goes on
        assert [step for _, step, _ in outcomes] == list(range(len(outcomes)))  # each step: one outcome


def _on_a_two_node_cluster(script: str, cpus_per_node: int) -> dict:
    """Run ``script`` (its argv[1]: the cluster's address) on a fresh two-node cluster; its RESULT line."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray_cli, "the ray command comes with ray[default]"
    temp_dir = tempfile.mkdtemp(prefix="/tmp/rc")  # short: Ray's socket paths under it must fit in 107 chars
    gcs, client_server, dashboard, dashboard_metrics, autoscaler_metrics, *ports = _free_ports(5 + 2 * 6)
    # A token of its own: with RAY_AUTH_MODE unset, `ray start --head` turns token auth on whenever some earlier
    # ray.init() left ~/.ray/auth_token, and the second `ray start` (auth off) then cannot join. The two metric
    # ports are fixed by default (44227, 44217).
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=temp_dir, RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32), DASHBOARD_METRIC_PORT=str(dashboard_metrics),
               AUTOSCALER_METRIC_PORT=str(autoscaler_metrics))
    workers = _free_range(2 * WORKER_PORTS)

    def node_args(i: int) -> list[str]:  # every port a node opens, so that it cannot meet another cluster's
        node_manager, object_manager, agent_http, agent_grpc, runtime_env, metrics = ports[6 * i : 6 * i + 6]
        first = workers + i * WORKER_PORTS
        return [f"--temp-dir={temp_dir}", f"--num-cpus={cpus_per_node}", f"--node-manager-port={node_manager}",
                f"--object-manager-port={object_manager}", f"--min-worker-port={first}",
                f"--max-worker-port={first + WORKER_PORTS - 1}", f"--dashboard-agent-listen-port={agent_http}",
                f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
                f"--metrics-export-port={metrics}"]

    nodes: list[subprocess.Popen] = []
    try:
        head = ["--head", f"--port={gcs}", f"--ray-client-server-port={client_server}", "--include-dashboard=false",
                f"--dashboard-port={dashboard}"]
        _start_node(ray_cli, [*head, *node_args(0)], temp_dir, "head", env, nodes)
        _start_node(ray_cli, [f"--address=127.0.0.1:{gcs}", *node_args(1)], temp_dir, "worker", env, nodes)
        out = subprocess.run([sys.executable, "-c", script, f"127.0.0.1:{gcs}"], env=env, capture_output=True,
                             text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.split("RESULT", 1)[1])
    finally:
        survivors = _stop_nodes(nodes, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not survivors, f"processes of this test's cluster still running: {survivors}"
    return result
