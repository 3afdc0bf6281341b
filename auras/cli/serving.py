"""`auras serve`, `auras robot-sim` and `auras keys`: the robot bridge (ZeroMQ or openpi), a simulated
robot and CurveZMQ keys."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from auras.cli.common import ConfigOpt, EnvKind, RayAddressOpt, SetOpt, app, fail
from auras.config import load_config
from auras.errors import AurasError, ConfigError, unknown_name_message
from auras.tasks import TASKS

SERVE_BIND = "tcp://127.0.0.1:5555"
SERVE_CLOSE_AFTER_FAILURE_S = 10.0  # how long `auras serve` lets a fatal error's teardown run before it exits


@app.command()
def serve(
    bind: Annotated[
        str,
        typer.Option(help="zmq: the service endpoint, data on PORT+1 (observations) and PORT+2 (actions); openpi: "
                     "ws://HOST:PORT (default ws://127.0.0.1:8000)."),
    ] = SERVE_BIND,
    policy: Annotated[str | None, typer.Option("--policy", help="Policy type (policy.type).")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="Execution mode (pipeline.mode).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="local or ray (pipeline.backend).")] = None,
    ray_address: RayAddressOpt = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="shared (one model serves every robot, their frames batched; the default where the mode allows) "
            "or per-robot (an agent and a model per robot) (serve.engine).",
        ),
    ] = None,
    perception: Annotated[
        str | None,
        typer.Option(
            "--perception",
            help="per-robot agents: separate (a perception per robot) or shared (one, batched across robots) "
            "(serve.perception).",
        ),
    ] = None,
    curve_secret: Annotated[
        Path | None, typer.Option(help="Server secret key file (from `auras keys`): CurveZMQ encryption.")
    ] = None,
    authorized_clients: Annotated[
        Path | None, typer.Option(help="Directory of client public keys allowed to connect (with --curve-secret).")
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(help="zmq (the auras bridge, docs/bridge.md) or openpi (openpi's websocket policy server; "
                     "--bind ws://HOST:PORT, default ws://127.0.0.1:8000)."),
    ] = "zmq",
    max_message_mb: Annotated[
        float | None, typer.Option(min=0.01, help="Largest accepted message, MiB (serve.max_message_mb; default 16).")
    ] = None,
    session_timeout: Annotated[
        float | None, typer.Option(min=0.5, help="zmq: close a session silent this long, s (serve.session_timeout_s).")
    ] = None,
    max_sessions: Annotated[int | None, typer.Option(min=1, help="Most robots at once (serve.max_sessions).")] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="openpi: a file holding the key robots must send (openpi's api_key, an "
                     "'Authorization: Api-Key KEY' header)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve robots over the ZeroMQ bridge (protocol: docs/bridge.md) until Ctrl-C: each robot's session is
    an AurasAgent, by default a session of one shared frame engine (one model, every robot's frames batched;
    docs/fleet.md). A fatal error (e.g. the Ray cluster lost) is logged, sent to the robots as an error event,
    and exits 1."""
    import logging
    import signal
    import threading

    from auras.bridge.server import BridgeServer, CurveKeys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = list(set_ or [])
    for key, value in (("policy.type", policy), ("pipeline.mode", mode), ("pipeline.backend", backend),
                       ("pipeline.ray_address", ray_address), ("serve.engine", engine),
                       ("serve.perception", perception),
                       ("serve.max_message_mb", max_message_mb), ("serve.session_timeout_s", session_timeout),
                       ("serve.max_sessions", max_sessions)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if protocol not in ("zmq", "openpi"):
        fail(ConfigError(f"--protocol: expected zmq or openpi, got {protocol!r}"))
    if protocol == "openpi":
        _serve_openpi(config, overrides, bind, api_key_file)
        return
    try:
        cfg = load_config(config, overrides)
        if authorized_clients is not None and curve_secret is None:
            raise ConfigError("--authorized-clients needs --curve-secret")
        if api_key_file is not None:
            raise ConfigError("--api-key-file is for --protocol openpi; the zmq bridge uses --curve-secret")
        curve = CurveKeys.load(curve_secret, authorized_clients) if curve_secret else None
        server = BridgeServer(cfg, bind, curve=curve)
    except AurasError as exc:
        fail(exc)
    if server.warning:
        typer.echo(f"warning: {server.warning}", err=True)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    sharing = {"engine": "one shared engine", "shared_perception": "an agent per robot, shared perception"}.get(
        getattr(server.batcher, "stats_key", None), "an agent per robot")
    typer.echo(f"auras serve: {cfg.policy.type} in {cfg.pipeline.mode} mode, {sharing}, "
               f"on {bind} "
               f"(observations {server.obs_endpoint}, actions {server.action_endpoint})", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # fatal: the server logged it and told the robots; exit with the cause
        typer.echo(f"error: auras serve stopped: {type(exc).__name__}: {exc}", err=True)
        # Release what can be released in a few seconds; sessions whose workers were on a lost Ray
        # cluster would hold the exit for minutes (their frames wait out the worker deadlines).
        closing = threading.Thread(target=server.close, name="auras-serve-close", daemon=True)
        closing.start()
        closing.join(timeout=SERVE_CLOSE_AFTER_FAILURE_S)
        raise typer.Exit(1) from None
    server.close()


def _serve_openpi(config: str | None, overrides: list[str], bind: str, api_key_file: Path | None) -> None:
    """`auras serve --protocol openpi` until Ctrl-C or SIGTERM."""
    import logging
    import signal

    from auras.bridge.openpi import OpenpiServer, parse_ws_address

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        host, port = parse_ws_address("ws://127.0.0.1:8000" if bind == SERVE_BIND else bind)
        api_key = _read_api_key(api_key_file) if api_key_file is not None else None
        cfg = load_config(config, overrides)
        server = OpenpiServer(cfg, host, port, api_key=api_key)
    except AurasError as exc:
        fail(exc)
    except OSError as exc:
        fail(ConfigError(f"--bind {bind}: cannot listen there ({exc})"))
    if server.warning:
        typer.echo(f"warning: {server.warning}", err=True)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    typer.echo(f"auras serve: {cfg.policy.type} in {cfg.pipeline.mode} mode, openpi protocol on {server.address} "
               f"(keys {cfg.serve.openpi_keys})", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.close()


def _read_api_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {path}: cannot read it ({exc})") from None
    if not key or len(key) < 16 or any(c.isspace() for c in key):
        raise ConfigError(f"--api-key-file {path}: expected one key of at least 16 characters without spaces, got "
                          f"{len(key)} characters")
    return key


@app.command("robot-sim")
def robot_sim(
    connect: Annotated[str, typer.Option("--connect", help="The server's service endpoint.")] = "tcp://127.0.0.1:5555",
    env: Annotated[EnvKind, typer.Option("--env", help="Simulator family.")] = EnvKind.mujoco,
    task: Annotated[str, typer.Option("--task", "-t", help="Task name.")] = "push-v3",
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Episodes to run.")] = 3,
    seed: Annotated[int, typer.Option(min=0, help="First episode seed.")] = 100_000,
    camera_hz: Annotated[float, typer.Option(min=1.0, max=1000.0, help="Camera frame rate.")] = 30.0,
    ttl_ms: Annotated[float, typer.Option(min=1.0, help="Never apply an action older than this.")] = 250.0,
    encoding: Annotated[str, typer.Option(help="Image encoding on the wire: raw, jpeg or png.")] = "raw",
    privileged: Annotated[bool, typer.Option(help="Also send the simulator state (for the expert policy).")] = False,
    server_key: Annotated[Path | None, typer.Option(help="Server public key file: use CurveZMQ.")] = None,
    client_key: Annotated[Path | None, typer.Option(help="This robot's secret key file (with --server-key).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the episode reports here.")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(help="Robot-side staleness strategy (none, rtc, roll_forward, chunk_blend; '+' joins); "
                     "default: the server's staleness.strategy."),
    ] = None,
    deadline_ms: Annotated[
        float | None,
        typer.Option(min=1.0, help="The longest the robot runs without a fresh row before its fallback "
                     "(declared to the server in the hello's contract); default: the TTL rule (the fallback "
                     "starts once the current action is older than --ttl-ms plus its chunk's duration)."),
    ] = None,
    fallback: Annotated[
        str, typer.Option(help="What runs once the deadline passed: hold (the last row), decay (to rest over "
                          "--decay-ms) or stop (rest at once).")
    ] = "decay",
    decay_ms: Annotated[float, typer.Option(min=0.0, help="decay: time from the last row to rest.")] = 0.0,
) -> None:
    """A simulated robot: runs a MuJoCo task in real time and is driven through `auras serve`."""
    import json

    from auras.bridge.robot_sim import executor_for, run_robot
    from auras.envs import make_env
    from auras.robot_loop import RealTime
    from auras_client.client import RobotClient
    from auras_client.runtime import Fallback

    try:
        if task not in TASKS:
            raise ConfigError(unknown_name_message("task", task, TASKS))
        try:
            plan_b = Fallback(fallback, decay_s=decay_ms / 1e3)
        except ValueError as exc:
            raise ConfigError(f"--fallback / --decay-ms: {str(exc).removeprefix('fallback: ')}") from None
        keys = _curve_client_keys(server_key, client_key)
        environment = make_env(task)
        contract = {"deadline_ms": deadline_ms, "control_hz": 1.0 / environment.control_dt} if deadline_ms else None
        client = RobotClient(connect, cameras={"front": (environment.image_size, environment.image_size)},
                             state_dim=4, instruction=environment.instruction, robot=f"robot-sim-{task}"[:64],
                             extras=("privileged_state",) if privileged else (),
                             ttl_s=ttl_ms / 1e3, encoding=encoding, contract=contract, **keys)
    except (AurasError, TimeoutError) as exc:
        fail(exc)
    clock = RealTime(ttl_ms / 1e3, deadline_ms / 1e3 if deadline_ms else None, plan_b)
    reports = []
    with client, environment:
        try:
            executor = executor_for(client, strategy)  # the client said hello when it connected
        except AurasError as exc:
            fail(exc)
        for i in range(episodes):
            try:
                report = run_robot(client, environment, seed + i, camera_hz, privileged, executor, clock).summary()
            except AurasError as exc:  # the agent failed on the server (its error event is in the message)
                fail(exc)
            reports.append(report)
            typer.echo(json.dumps(report))
    wins = sum(r["success"] for r in reports)
    typer.echo(f"robot-sim {task}: {wins}/{len(reports)} successful; client counters {dict(client.counters)}")
    if json_out is not None:
        json_out.write_text(json.dumps({"task": task, "episodes": reports, "client": dict(client.counters)}, indent=2))


def _curve_client_keys(server_key: Path | None, client_key: Path | None) -> dict:
    if server_key is None:
        if client_key is not None:
            raise ConfigError("--client-key needs --server-key")
        return {}
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(str(server_key))
    if client_key is None:
        return {"server_public_key": server_public}
    public, secret = zmq.auth.load_certificate(str(client_key))
    if secret is None:
        raise ConfigError(f"--client-key {client_key}: expected a secret key file, got a public one")
    return {"server_public_key": server_public, "client_keys": (public, secret)}


@app.command()
def keys(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the key files.")] = Path("keys"),
) -> None:
    """Generate CurveZMQ key pairs for `auras serve --curve-secret` and robots (server + one client)."""
    import zmq.auth

    out.mkdir(parents=True, exist_ok=True)
    clients = out / "authorized_clients"
    clients.mkdir(exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(str(out), "server")
    client_public, client_secret = zmq.auth.create_certificates(str(out), "client")
    Path(client_public).replace(clients / Path(client_public).name)
    for secret in (server_secret, client_secret):
        Path(secret).chmod(0o600)
    typer.echo(f"server: {server_secret} (keep secret), {server_public} (give to robots)")
    typer.echo(f"client: {client_secret} (on the robot), {clients / Path(client_public).name} (authorized)")
    typer.echo(f"serve:  auras serve --policy tiny-dp --bind tcp://0.0.0.0:5555 --curve-secret {server_secret} "
               f"--authorized-clients {clients}")
    typer.echo(f"robot:  auras robot-sim --connect tcp://HOST:5555 --server-key {server_public} "
               f"--client-key {client_secret}")
