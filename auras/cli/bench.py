"""`auras bench` (and `bench compare`) and `auras tune`: measure policies, compare runs, pick settings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from auras.bench.compare import compare_documents, format_comparison
from auras.bench.report import host_figures, results_table, write_results
from auras.bench.results import load_results, parse_results
from auras.bench.sweep import settings_and_sweep, split_values
from auras.cli.common import ConfigOpt, EnvKind, RayAddressOpt, SetOpt, app, fail
from auras.errors import AurasError

bench_app = typer.Typer(
    help="Benchmark the agent on MuJoCo tasks (run with options), or compare two results files (`compare`).",
    no_args_is_help=False,
)
app.add_typer(bench_app, name="bench")

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
    envs: Annotated[
        int | None,
        typer.Option("--envs", min=1, help="Episodes at once, as sessions of one batched engine (bench.envs)."),
    ] = None,
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
        if policy and len(policy) == 1:  # policy.model settings given with --set are that policy's
            overrides.append(f"policy.type={policy[0]}")
        overrides += list(set_ or [])
        for key, value in (
            ("bench.episodes", episodes),
            ("bench.envs", envs),
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
        path = write_results(document, run.bench.out)  # kept first, whatever the check below says
        results = parse_results(document, f"'{path}'")  # the document the runner made, checked
    except AurasError as exc:
        fail(exc)
    Console(width=max(Console().width, 160)).print(results_table(results))
    for line in host_figures(results):
        typer.echo(line)
    typer.echo(f"wrote {path}")
    if run.bench.plots:
        from auras.bench.plots import write_plots

        for plot in write_plots(results, run.bench.out):
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
        fail(exc)
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
            alphas=[float(a) for a in split_values(alphas)],
            fetch_offsets=[int(f) for f in split_values(fetch_offsets)],
            max_rate_cost=max_rate_cost,
            source=config, overrides=list(set_ or []), log=lambda line: typer.echo(line, err=True),
        )
    except (AurasError, ValueError) as exc:
        fail(exc)
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
