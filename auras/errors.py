"""One error hierarchy for auras.

- :class:`InvalidInputError`: the caller gave something wrong (bad config value, bad observation).
  Nothing ran; fix the input and call again.
- :class:`StepFailedError`: one step failed at run time; the agent is still usable.
- :class:`WorkerDiedError`: a worker (thread, process, actor) is gone; the agent must be rebuilt.
- :class:`MissingDependencyError`: an optional dependency is not installed; the message names the
  pip command.

Every message says what was expected, what arrived, and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AurasError(Exception):
    """Base of every error auras raises on purpose."""


class InvalidInputError(AurasError, ValueError):
    """Bad input at an API boundary (config, observation, action, CLI argument)."""


class ConfigError(InvalidInputError):
    """A configuration value is out of range, of the wrong type, or unknown."""


class StepFailedError(AurasError, RuntimeError):
    """Recoverable: one step failed; the agent can take the next observation."""


class WorkerDiedError(AurasError, RuntimeError):
    """Fatal: a worker died; close the agent and build a new one."""


class WorkerRestartedError(StepFailedError):
    """A worker died (or missed its deadline) and was replaced: in-flight requests and the public
    context were dropped, this observation produced no action, and the next step refills the
    pipeline. The agent stays usable; ``AurasAgent.restarts`` counts these."""


class AgentClosedError(AurasError, RuntimeError):
    """The agent was used after ``close()``."""


class MissingDependencyError(AurasError, ImportError):
    """An optional dependency is missing."""

    def __init__(self, module: str, extra: str | None = None, purpose: str = "") -> None:
        hint = f'pip install "auras[{extra}]"' if extra else f"pip install {module}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"Python module '{module}' is not installed{what}. Install it with: {hint}")
        self.module = module


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """'unknown task 'psuh-v3'; did you mean 'push-v3'? choices: ...' for registries."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    listed = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
    return f"unknown {kind} '{name}'{hint} Choices: {listed}"


def clip(text: object, limit: int = 300) -> str:
    """``str(text)`` in at most ``limit`` characters, its beginning and end kept: what a log line or an error
    reply quotes of a message (an error's outcome is often at its end; a client's payload in the middle can
    run to megabytes)."""
    text = str(text)
    if len(text) <= limit:
        return text
    head = (limit - 5) // 2
    return f"{text[:head]} ... {text[-(limit - 5 - head) :]}"
