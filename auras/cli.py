"""The `auras` command: config, bench, collect, envs. Every command resolves one AurasConfig."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from auras.errors import AurasError

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
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override one field: a.b=value (repeatable).")]


class EnvKind(str, Enum):
    mujoco = "mujoco"


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration (preset or file, then --set overrides) as YAML."""
    import yaml

    from auras.config import config_hash, load_config

    try:
        cfg = load_config(config, set_ or [])
    except AurasError as exc:
        _fail(exc)
    typer.echo(f"# config hash: {config_hash(cfg)}")
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())


@config_app.command("list")
def config_list() -> None:
    """List the shipped presets."""
    from auras.config import preset_names

    for name in preset_names():
        typer.echo(name)


@app.command()
def envs() -> None:
    """List the task names (gymnasium ids are auras/<name>)."""
    from auras.envs.tasks import CORE_TASKS, TASKS

    for name, info in TASKS.items():
        mark = "*" if name in CORE_TASKS else " "
        typer.echo(f"{mark} {name:32s} {info.family:9s} {info.instruction}")
    typer.echo("(* = core task, covered by every report)")


@app.command()
def bench(
    env: Annotated[EnvKind, typer.Option("--env", help="Simulator family.")] = EnvKind.mujoco,
    task: Annotated[list[str] | None, typer.Option("--task", "-t", help="Task (repeatable); default env.task.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Policy type (policy.type).")] = None,
    modes: Annotated[
        str | None, typer.Option("--modes", help="Comma-separated modes to compare, e.g. sequential,auras.")
    ] = None,
    episodes: Annotated[int | None, typer.Option("--episodes", "-n", help="Episodes per task.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="First evaluation seed.")] = None,
    clock: Annotated[str | None, typer.Option("--clock", help="Time model: frame or virtual (bench.clock).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="local or ray (pipeline.backend).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (bench.out).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Benchmark the agent on MuJoCo tasks: success rate, throughput, latency; writes results.json."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from auras.bench.report import results_table, write_results
    from auras.bench.runner import run_bench
    from auras.config import load_config

    overrides = list(set_ or [])
    for key, value in (
        ("policy.type", policy),
        ("bench.episodes", episodes),
        ("bench.seed", seed),
        ("bench.clock", clock),
        ("pipeline.backend", backend),
        ("bench.out", out),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    console = Console(stderr=True)
    try:
        cfg = load_config(config or "default", overrides)
        tasks = task or [cfg.env.task]
        mode_list = [m.strip() for m in modes.split(",") if m.strip()] if modes else None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not progress,
            transient=True,
        ) as bar:
            ids: dict[str, int] = {}

            def report(label: str, done: int, total: int) -> None:
                name = label.rsplit(":", 1)[0]
                if name not in ids:
                    ids[name] = bar.add_task(name, total=total)
                bar.update(ids[name], completed=done, description=label)

            document = run_bench(cfg, tasks, report, mode_list)
    except AurasError as exc:
        _fail(exc)
    Console(width=max(Console().width, 150)).print(results_table(document))
    path = write_results(document, cfg.bench.out)
    typer.echo(f"wrote {path}")


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

    from auras.config import load_config
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
    policy: Annotated[str, typer.Option("--policy", "-p", help="tiny-vla or tiny-dp.")],
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
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Model hyperparameter key=value.")] = None,
    init: Annotated[str | None, typer.Option(help="Continue from this checkpoint (name or directory).")] = None,
) -> None:
    """Train a policy by behaviour cloning; keeps the best checkpoint by closed-loop success."""
    import yaml
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from auras.policies.train import train as run_train

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
                                max_minutes=max_minutes, overrides=overrides, init=init, progress=report)  # fmt: skip
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
