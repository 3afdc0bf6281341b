"""`auras collect` and `auras train`: demonstrations into a dataset, and behaviour cloning from one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auras.cli.common import app, fail
from auras.config import load_config
from auras.errors import AurasError


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
        fail(exc)
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
            fail(ValueError(f"--set expects key=value, got {item!r}"))
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
        fail(exc)
    typer.echo(f"best mean eval success {summary['best_eval_mean']:.2f}; checkpoints in {out}/best and {out}/last")
