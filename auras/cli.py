"""The `auras` command: config, bench, collect, envs. Every command resolves one AurasConfig."""

from __future__ import annotations

import contextlib
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from auras.bench.compare import compare_documents, format_comparison, load_results
from auras.bench.report import host_figures, results_table, write_results
from auras.config import config_hash, load_config, preset_names
from auras.errors import AurasError, ConfigError, unknown_name_message
from auras.tasks import CORE_TASKS, TASKS

app = typer.Typer(
    help="auras: fast, accurate inference for embodied agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="A preset name (see `auras config list`) or a YAML file.")
]
RayAddressOpt = Annotated[
    str | None, typer.Option("--ray-address", help="Join this Ray cluster (pipeline.ray_address).")
]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override one field: a.b=value (repeatable).")]


SERVE_CLOSE_AFTER_FAILURE_S = 10.0  # how long `auras serve` lets a fatal error's teardown run before it exits


class EnvKind(str, Enum):
    mujoco = "mujoco"


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration (preset or file, then --set overrides) as YAML."""
    import yaml

    try:
        cfg = load_config(config, set_ or [])
    except AurasError as exc:
        _fail(exc)
    typer.echo(f"# config hash: {config_hash(cfg)}")
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())


@config_app.command("list")
def config_list() -> None:
    """List the shipped presets."""
    for name in preset_names():
        typer.echo(name)


@app.command()
def envs() -> None:
    """List the task names (gymnasium ids are auras/<name>)."""
    for name, info in TASKS.items():
        mark = "*" if name in CORE_TASKS else " "
        typer.echo(f"{mark} {name:32s} {info.family:9s} {info.instruction}")
    typer.echo("(* = core task, covered by every report)")


bench_app = typer.Typer(
    help="Benchmark the agent on MuJoCo tasks (run with options), or compare two results files (`compare`).",
    no_args_is_help=False,
)
app.add_typer(bench_app, name="bench")

SWEEP_FLAGS = {  # CLI flag -> config key; a comma-separated value list makes the flag a sweep
    "pp_perception": "pipeline.pp_perception",
    "pp_generation": "pipeline.pp_generation",
    "fetch_offset": "pipeline.fetch_offset",
    "alpha": "pipeline.alpha",
    "scale_perception": "policy.scale_perception",
    "scale_generation": "policy.scale_generation",
}


def _split_values(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ConfigError(f"expected a value or a comma-separated list, got {text!r}")
    return values


def settings_and_sweep(
    flags: dict[str, str | None], delay_ms: list[str], sweep_items: list[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """CLI values -> (overrides, sweep): one value sets a key, several values sweep it."""
    pairs: list[tuple[str, str]] = [(SWEEP_FLAGS[name], text) for name, text in flags.items() if text is not None]
    for item in delay_ms:
        stage, sep, text = item.partition("=")
        if not sep or stage not in ("perception", "generation"):
            raise ConfigError(f"--delay-ms: expected perception=MS[,MS...] or generation=MS[,MS...], got {item!r}")
        pairs.append((f"policy.delay_{stage}_ms", text))
    for item in sweep_items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--sweep: expected KEY=V1,V2,... (e.g. pipeline.pp_generation=2,4,8), got {item!r}")
        pairs.append((key.strip(), text))
    overrides: list[str] = []
    sweep: dict[str, list[str]] = {}
    for key, text in pairs:
        values = _split_values(text)
        if len(values) == 1:
            overrides.append(f"{key}={values[0]}")
        else:
            sweep[key] = values
    return overrides, sweep


def _progress_bar(console, enabled: bool = True):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    env: Annotated[EnvKind, typer.Option("--env", help="Simulator family.")] = EnvKind.mujoco,
    task: Annotated[list[str] | None, typer.Option("--task", "-t", help="Task (repeatable); bench.tasks.")] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", help="Policy (repeatable): any registered name, e.g. tiny-dp, tiny-flow, smolvla, expert."
        ),
    ] = None,
    modes: Annotated[
        str | None, typer.Option("--modes", help="Comma-separated modes, e.g. sequential,auras (bench.modes).")
    ] = None,
    episodes: Annotated[int | None, typer.Option("--episodes", "-n", help="Episodes per cell.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="First evaluation seed.")] = None,
    clock: Annotated[str | None, typer.Option("--clock", help="Time model: frame, virtual or realtime.")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="local or ray (pipeline.backend).")] = None,
    ray_address: RayAddressOpt = None,
    pp_perception: Annotated[str | None, typer.Option(help="Perception stages; a list (1,2) sweeps.")] = None,
    pp_generation: Annotated[str | None, typer.Option(help="Generation stages; a list (2,4,8) sweeps.")] = None,
    fetch_offset: Annotated[str | None, typer.Option(help="0 or -1; 0,-1 sweeps both.")] = None,
    alpha: Annotated[str | None, typer.Option(help="Diffusion step skew; a list sweeps.")] = None,
    delay_ms: Annotated[
        list[str] | None,
        typer.Option("--delay-ms", help="Inject latency per request: perception=MS or generation=MS[,MS...]."),
    ] = None,
    scale_perception: Annotated[
        str | None, typer.Option(help="Perception size factor(s); != 1 uses random weights (throughput only).")
    ] = None,
    scale_generation: Annotated[
        str | None, typer.Option(help="Generation size factor(s), e.g. 1,2,4; != 1 uses random weights.")
    ] = None,
    sweep: Annotated[
        list[str] | None, typer.Option("--sweep", help="Sweep any config key: KEY=V1,V2,... (repeatable; grid).")
    ] = None,
    accuracy: Annotated[bool, typer.Option(help="Run closed-loop episodes (--no-accuracy: throughput only).")] = True,
    served: Annotated[
        bool,
        typer.Option("--served", help="Run the episodes through `auras serve` and the robot client on the realtime "
                     "clock (bench.served; --sweep bench.served=false,true puts both paths side by side)."),
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (bench.out).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots next to results.json.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Benchmark the agent on MuJoCo tasks: throughput, latency, stability and success per policy, task
    and mode, side by side; writes results.json and plots. Comma lists on the stage flags sweep them."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from auras.bench.runner import plan_cells, results_document, run_cells

    console = Console(stderr=True)
    try:
        flags = dict(pp_perception=pp_perception, pp_generation=pp_generation, fetch_offset=fetch_offset,
                     alpha=alpha, scale_perception=scale_perception, scale_generation=scale_generation)
        overrides, sweep_values = settings_and_sweep(flags, list(delay_ms or []), list(sweep or []))
        overrides += list(set_ or [])
        for key, value in (
            ("bench.episodes", episodes),
            ("bench.seed", seed),
            ("bench.clock", clock if clock is not None or not served else "realtime"),
            ("pipeline.backend", backend),
            ("pipeline.ray_address", ray_address),
            ("bench.out", out),
            ("bench.tasks", f"[{','.join(task)}]" if task else None),
            ("bench.policies", f"[{','.join(policy)}]" if policy else None),
            ("bench.modes", f"[{modes}]" if modes else None),
            ("bench.accuracy", None if accuracy else "false"),
            ("bench.served", "true" if served else None),
            ("bench.plots", None if plots else "false"),
        ):
            if value is not None:
                overrides.append(f"{key}={value}")
        run, cells = plan_cells(config or "default", overrides, sweep_values)
        with _progress_bar(console, progress) as bar:
            ids: dict[str, int] = {}

            plain = progress and not console.is_terminal  # a log file or a pipe: a line per episode, as it happens
            started = time.monotonic()

            def report(label: str, done: int, total: int) -> None:
                name = label.rsplit(":", 1)[0]
                if name not in ids:
                    ids[name] = bar.add_task(name, total=total)
                bar.update(ids[name], completed=done, description=label)
                if plain:
                    console.print(f"{time.monotonic() - started:7.1f} s  {label} {done}/{total}", highlight=False)

            document = results_document(run, run_cells(run, cells, report), sweep_values)
    except AurasError as exc:
        _fail(exc)
    Console(width=max(Console().width, 160)).print(results_table(document))
    for line in host_figures(document):
        typer.echo(line)
    path = write_results(document, run.bench.out)
    typer.echo(f"wrote {path}")
    if run.bench.plots:
        from auras.bench.plots import write_plots

        for plot in write_plots(document, run.bench.out):
            typer.echo(f"wrote {plot}")


@bench_app.command("compare")
def bench_compare(
    a: Annotated[Path, typer.Argument(help="results.json of run A (the reference).")],
    b: Annotated[Path, typer.Argument(help="results.json of run B.")],
    all_fields: Annotated[bool, typer.Option("--all", help="Also list fields that did not change.")] = False,
) -> None:
    """Compare two results.json files field by field (B against A)."""
    from rich.console import Console

    try:
        doc_a, doc_b = load_results(a), load_results(b)
    except AurasError as exc:
        _fail(exc)
    diffs = compare_documents(doc_a, doc_b)
    Console(width=max(Console().width, 140)).print(
        format_comparison(diffs, str(a), str(b), only_changed=not all_fields)
    )


@app.command()
def tune(
    policy: Annotated[str, typer.Option("--policy", "-p", help="Any registered policy, e.g. tiny-dp or tiny-vla.")],
    target_hz: Annotated[float, typer.Option("--target-hz", min=0.0, help="Throughput the robot needs.")],
    env: Annotated[EnvKind, typer.Option("--env", help="Simulator family.")] = EnvKind.mujoco,
    task: Annotated[str, typer.Option("--task", "-t", help="Task for the accuracy evaluations.")] = "button-press-v3",
    l_max: Annotated[int, typer.Option("--l-max", min=2, help="Largest pipeline degree pp_p + pp_g.")] = 8,
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Episodes per evaluation.")] = 10,
    max_accuracy: Annotated[
        int, typer.Option("--max-accuracy", min=1, help="Evaluate accuracy on at most this many fast settings.")
    ] = 4,
    alphas: Annotated[str, typer.Option(help="Diffusion step skews to try on the best setting.")] = "0.5,1,2",
    fetch_offsets: Annotated[str, typer.Option(help="fetch_offset values to search: 0, -1 or 0,-1.")] = "0",
    max_rate_cost: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Most of the fastest setting's rate a more accurate one may give up."),
    ] = 1.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for tune.json and the preset.")] = Path(
        "runs/tune"
    ),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Search pipeline settings for a policy (the paper's hierarchical tuner): throughput first over
    (pp_perception, pp_generation), accuracy only where the target rate is met, then alpha; writes the
    chosen settings as a YAML preset for `auras bench -c`."""
    import json

    from rich.console import Console
    from rich.table import Table

    from auras.bench.tune import tune as run_tune
    from auras.bench.tune import write_preset

    try:
        result = run_tune(
            policy, target_hz, task=task, l_max=l_max, episodes=episodes, max_accuracy=max_accuracy,
            alphas=[float(a) for a in _split_values(alphas)],
            fetch_offsets=[int(f) for f in _split_values(fetch_offsets)],
            max_rate_cost=max_rate_cost,
            source=config, overrides=list(set_ or []), log=lambda line: typer.echo(line, err=True),
        )
    except (AurasError, ValueError) as exc:
        _fail(exc)
    table = Table(title=f"auras tune {policy}: Pareto set (throughput vs success) on {task}")
    for col in ("setting", "throughput Hz", "success", "95% CI", "chosen"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for p in result["pareto"]:
        name = "sequential" if p["mode"] == "sequential" else (
            f"auras {p['pp_perception']}x{p['pp_generation']} alpha {p['alpha']:g} offset {p['fetch_offset']}"
        )
        lo, hi = p["success_ci95"]
        table.add_row(name, f"{p['throughput_hz']:.1f}", f"{p['success_rate']:.0%}", f"{lo:.0%}-{hi:.0%}",
                      "*" if p == result["chosen"] else "")
    Console(width=max(Console().width, 110)).print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
    preset = write_preset(result, out / f"tuned-{policy}.yaml")
    if not result["meets_target"]:
        typer.echo(f"warning: no evaluated setting reaches {target_hz} Hz; wrote the best found", err=True)
    typer.echo(f"wrote {out / 'tune.json'} and {preset} (use: auras bench -c {preset})")


SERVE_BIND = "tcp://127.0.0.1:5555"


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
    perception: Annotated[
        str | None,
        typer.Option(
            "--perception",
            help="separate (a perception per robot) or shared (one, batched across robots) (serve.perception).",
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
    """Serve an AurasAgent per robot over the ZeroMQ bridge (protocol: docs/bridge.md) until Ctrl-C. A
    fatal error (e.g. the Ray cluster lost) is logged, sent to the robots as an error event, and exits 1."""
    import logging
    import signal
    import threading

    from auras.bridge.server import BridgeServer, CurveKeys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = list(set_ or [])
    for key, value in (("policy.type", policy), ("pipeline.mode", mode), ("pipeline.backend", backend),
                       ("pipeline.ray_address", ray_address), ("serve.perception", perception),
                       ("serve.max_message_mb", max_message_mb), ("serve.session_timeout_s", session_timeout),
                       ("serve.max_sessions", max_sessions)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if protocol not in ("zmq", "openpi"):
        _fail(ConfigError(f"--protocol: expected zmq or openpi, got {protocol!r}"))
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
        _fail(exc)
    if server.warning:
        typer.echo(f"warning: {server.warning}", err=True)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    sharing = "shared" if server.batcher is not None else "separate"
    typer.echo(f"auras serve: {cfg.policy.type} in {cfg.pipeline.mode} mode, {sharing} perception, "
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
        _fail(exc)
    except OSError as exc:
        _fail(ConfigError(f"--bind {bind}: cannot listen there ({exc})"))
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
) -> None:
    """A simulated robot: runs a MuJoCo task in real time and is driven through `auras serve`."""
    import json

    from auras.bridge.robot_sim import executor_for, run_robot
    from auras.envs import make_env
    from auras_client.client import RobotClient

    try:
        if task not in TASKS:
            raise ConfigError(unknown_name_message("task", task, TASKS))
        keys = _curve_client_keys(server_key, client_key)
        environment = make_env(task)
        client = RobotClient(connect, cameras={"front": (environment.image_size, environment.image_size)},
                             state_dim=4, instruction=environment.instruction, robot=f"robot-sim-{task}"[:64],
                             extras=("privileged_state",) if privileged else (),
                             ttl_s=ttl_ms / 1e3, encoding=encoding, **keys)
    except (AurasError, TimeoutError) as exc:
        _fail(exc)
    reports = []
    with client, environment:
        try:
            executor = executor_for(client, strategy)  # the client said hello when it connected
        except AurasError as exc:
            _fail(exc)
        for i in range(episodes):
            try:
                report = run_robot(client, environment, seed + i, camera_hz, privileged, executor).summary()
            except AurasError as exc:  # the agent failed on the server (its error event is in the message)
                _fail(exc)
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


@app.command()
def collect(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name.")] = "push-v3",
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Episodes to record.")] = 10,
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset directory (created or appended to).")] = Path(
        "data/demos"
    ),
    seed: Annotated[int, typer.Option("--seed", min=0, help="First seed; episode i uses seed + i.")] = 0,
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="Max steps per episode.")] = 200,
    only_success: Annotated[bool, typer.Option(help="Store only successful episodes.")] = False,
) -> None:
    """Record scripted-expert demonstrations into a Zarr dataset (appendable)."""
    from rich.progress import Progress

    from auras.data.collect import collect as run_collect

    try:
        load_config(overrides=[f"env.task={task}", f"env.horizon={horizon}"])  # validates the names
        if seed + episodes > 100_000:
            typer.echo("warning: seeds >= 100000 are the benchmark's held-out seeds", err=True)
        with Progress(transient=True) as bar:
            job = bar.add_task(f"collect {task}", total=episodes)
            summary = run_collect(
                task,
                episodes,
                out,
                seed=seed,
                horizon=horizon,
                only_success=only_success,
                progress=lambda done, total, ok: bar.update(job, completed=done),
            )
    except AurasError as exc:
        _fail(exc)
    typer.echo(
        f"{summary['episodes_stored']}/{summary['episodes_run']} episodes stored in {out} "
        f"(expert success {summary['expert_success']:.0%}); dataset now has {summary['episodes']} episodes, "
        f"{summary['steps']} steps, tasks {summary['tasks']}"
    )


@app.command()
def train(
    policy: Annotated[
        str, typer.Option("--policy", "-p", help="A trainable registered policy: tiny-vla, tiny-dp, tiny-flow.")
    ],
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset directory from `auras collect`.")],
    task: Annotated[list[str] | None, typer.Option("--task", "-t", help="Train on these tasks (default: all).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory.")] = Path("runs/train"),
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 20_000,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per step.")] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (AdamW, cosine decay).")] = 3e-4,
    seed: Annotated[int, typer.Option(help="Seed for weights, batches and augmentation.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    eval_every: Annotated[int, typer.Option(min=1, help="Steps between closed-loop evaluations.")] = 2_000,
    eval_episodes: Annotated[int, typer.Option(min=1, help="Episodes per task per evaluation.")] = 5,
    max_minutes: Annotated[float | None, typer.Option(help="Stop (after a final evaluation) past this.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Model hyperparameter KEY=V (or policy.model.KEY=V), checked against the "
                     "policy's configuration class."),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Continue from this checkpoint (name or directory); --set may then change only "
            "training-only keys (augmentation, loss)."
        ),
    ] = None,
) -> None:
    """Train a policy by behaviour cloning; keeps the best checkpoint by closed-loop success."""
    import yaml
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from auras.training.train import train as run_train

    overrides = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(ValueError(f"--set expects key=value, got {item!r}"))
        overrides[key] = yaml.safe_load(value)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            job = bar.add_task(f"train {policy}", total=steps)

            def report(step: int, total: int, record: dict) -> None:
                text = f"train {policy} loss {record['loss']:.4f}"
                if "eval" in record:
                    bar.console.print(f"step {step}: loss {record['loss']:.4f} eval {record['eval']}")
                bar.update(job, completed=step, description=text)

            summary = run_train(policy, data, out, task, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                threads=threads, eval_every=eval_every, eval_episodes=eval_episodes,
                                max_minutes=max_minutes, overrides=overrides, init=init, progress=report)
    except AurasError as exc:
        _fail(exc)
    typer.echo(f"best mean eval success {summary['best_eval_mean']:.2f}; checkpoints in {out}/best and {out}/last")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
