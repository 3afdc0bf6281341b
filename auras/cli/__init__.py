"""The `auras` command, one module per group of commands: bench (bench, compare, tune), serving (serve,
robot-sim, keys), data (collect, train) and info (config, envs). Every command resolves one AurasConfig."""

from __future__ import annotations

import sys

from auras.cli import bench, data, info, serving  # noqa: F401  (each registers its commands on the app)
from auras.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
