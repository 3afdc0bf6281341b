"""What every `auras` command shares: the app, common options and how an error ends a command."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

__all__ = ["ConfigOpt", "EnvKind", "RayAddressOpt", "SetOpt", "app", "config_app", "fail"]

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


class EnvKind(str, Enum):
    mujoco = "mujoco"


def fail(exc: Exception) -> None:
    """End the command with ``exc``'s message on stderr and exit status 2."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)
