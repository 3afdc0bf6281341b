"""`python -m auras.cli`: the `auras` command."""

from auras.cli import main

main()
