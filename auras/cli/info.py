"""`auras config show|list` and `auras envs`: what a configuration resolves to, and the tasks."""

from __future__ import annotations

import typer

from auras.cli.common import ConfigOpt, SetOpt, app, config_app, fail
from auras.config import config_hash, load_config, preset_names
from auras.errors import AurasError
from auras.tasks import CORE_TASKS, TASKS


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration (preset or file, then --set overrides) as YAML."""
    import yaml

    try:
        cfg = load_config(config, set_ or [])
    except AurasError as exc:
        fail(exc)
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
