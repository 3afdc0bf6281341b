"""The results document (``results.json``) as typed objects, shared by everything that reads one.

``auras bench`` writes the document (``runner.results_document``); ``report`` prints it, ``compare``
compares two, ``plots`` draws it and ``scripts/results_markdown.py`` turns it into tables. Each reads it
through :class:`Results` (parsed and checked by :func:`parse_results` / :func:`load_results`), so a field
has one name and one type everywhere, and a malformed document is refused once, with the path of the
field, what was expected and what arrived. The models mirror ``results.schema.json`` field for field
(``tests/test_bench_results.py`` checks that their required fields are the schema's); both allow extra
fields, so a newer writer's additions pass through. :func:`fmt` is the one way a figure becomes text.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from auras.errors import InvalidInputError, clip

__all__ = [
    "SCHEMA_VERSION",
    "Cell",
    "Episode",
    "Metrics",
    "Percentiles",
    "Results",
    "fmt",
    "load_results",
    "parse_results",
    "success_text",
]

SCHEMA_VERSION = 2
EXPECTED = "a results.json written by `auras bench` (schema version 2)"


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Percentiles(_Record):
    p50: float | None
    p90: float | None
    p99: float | None


class StalenessFrames(_Record):
    mean: float | None
    max: float | None


class Metrics(_Record):
    """One cell's figures (docs/bench.md defines each)."""

    throughput_hz: float | None
    speedup: float | None
    latency_ms: Percentiles
    interval_cv: float | None
    interval_spread: float | None
    staleness_ms: Percentiles
    staleness_frames: StalenessFrames
    success_rate: float | None = Field(ge=0, le=1)
    success_ci95: tuple[float, float] | None
    relative_accuracy: float | None
    steps_to_success: float | None
    startup_ms: float | None
    rss_mb: float | None
    bound_hz: float | None
    bound_fraction: float | None
    stage_ms_p50: dict[str, float | None]
    episodes: int
    successes: int | None
    overruns: int | None = Field(ge=0)
    late_ms_max: float | None
    stream_actions: int | None
    interval_ms_mean: float | None = None
    compile_ms: float | None = None
    context_transport: str | None = None
    engine: dict[str, Any] | None = None
    episode_latency_ms: dict[str, float | None] | None = None
    control_rate_hz: float | None = None
    stale_action_ratio: float | None = None
    deadline_misses: int | None = None
    success_lost: float | None = None


class Settings(_Record):
    """The pipeline settings a cell ran with (including the injected delays and scales of a sweep)."""

    pp_perception: int
    pp_generation: int
    fetch_offset: int
    alpha: float
    emit: str
    workers: int
    delay_ms_perception: float
    delay_ms_generation: float
    scale_perception: float
    scale_generation: float
    envs: int = 1


class Samples(_Record):
    intervals_ms: list[float]
    latency_ms: list[float]


class Episode(_Record):
    seed: int
    success: bool
    steps: int
    steps_to_success: int | None = None
    actions_sha: str | None = None


class Cell(_Record):
    """One row of ``results``: a policy, task, mode and sweep point, measured."""

    task: str
    policy: str
    privileged: bool
    mode: str
    backend: str
    clock: str
    label: str = Field(min_length=1)
    point: dict[str, Any]
    settings: Settings
    config_hash: str = Field(pattern=r"^[0-9a-f]{12}$")
    metrics: Metrics
    samples: Samples
    episodes: list[Episode]
    config: dict[str, Any]
    served: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(policy, task, mode, label): what identifies a cell across two runs."""
        return self.policy, self.task, self.mode, self.label

    @property
    def name(self) -> str:
        """How reports name the cell: policy, task and its label (with the mode when the label omits it)."""
        label = self.label
        return f"{self.policy} {self.task} {label}" if label.startswith(self.mode) else \
            f"{self.policy} {self.task} {self.mode} {label}"

    @property
    def actions_digest(self) -> str | None:
        """One digest over the episodes' seeds and the SHA-1 of the rows each applied; None without digests."""
        episodes = [e for e in self.episodes if e.actions_sha]
        if not episodes:
            return None
        combined = hashlib.sha1("".join(f"{e.seed}:{e.actions_sha};" for e in episodes).encode())
        return combined.hexdigest()[:12]


class Machine(_Record):
    platform: str
    python: str
    cpu_model: str | None
    cpu_count: int | None
    memory_gb: float | None


class Results(_Record):
    """A whole results.json: the run's context and its cells (``results``)."""

    schema_version: int
    created: str
    command: list[str]
    config: dict[str, Any]
    config_hash: str = Field(pattern=r"^[0-9a-f]{12}$")
    tasks: list[str] = Field(min_length=1)
    clock: str
    episodes: int = Field(ge=0)
    versions: dict[str, str | None]
    machine: Machine
    results: list[Cell]
    modes: list[str] = Field(min_length=1)
    policies: list[str] = Field(min_length=1)
    sweep: dict[str, list[Any]]

    @property
    def cells(self) -> list[Cell]:
        return self.results

    def document(self) -> dict[str, Any]:
        """The JSON document (what results.json holds)."""
        return self.model_dump(mode="json")


def parse_results(document: Any, source: str = "results document") -> Results:
    """``document`` (a results.json's JSON value, or a Results) as Results; InvalidInputError naming the first
    field that does not fit, what it expected and what it got."""
    if isinstance(document, Results):
        return document
    if not isinstance(document, dict):
        raise InvalidInputError(f"{source} holds a JSON {type(document).__name__}, not an object. Expected {EXPECTED}.")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidInputError(
            f"{source}: schema_version {version!r}, expected {SCHEMA_VERSION} ({EXPECTED}); "
            "re-run `auras bench` with this version to compare or plot it"
        )
    try:
        return Results.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        got = clip(repr(first.get("input")), 120)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidInputError(f"{source}: field {where}: {first['msg']}, got {got}{more}. Expected {EXPECTED}.") \
            from None


def load_results(path: str | Path) -> Results:
    """Read and parse a results.json (or a directory holding one); InvalidInputError if it is missing, not
    JSON, or not a results document."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise InvalidInputError(f"results file not found: '{path}'. Expected {EXPECTED}; check the path.")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"'{path}' is not valid JSON ({exc}). Expected {EXPECTED}.") from exc
    except OSError as exc:
        raise InvalidInputError(f"cannot read '{path}' ({exc}). Expected {EXPECTED}.") from exc
    return parse_results(document, f"'{path}'")


def fmt(value: Any, spec: str | None = None, missing: str = "-", signed: bool = False) -> str:
    """A figure as text: ``missing`` for None; with ``spec`` that format; else integers with thousands
    separators and floats to 4 significant digits (no decimals from 1000 on); ``signed`` shows a + sign.
    Non-numbers (and NaN, inf) print as they are."""
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    sign = "+" if signed else ""
    if spec is not None:
        return format(value, sign + spec)
    if isinstance(value, int):
        return format(value, f"{sign},d")
    if not math.isfinite(value):
        return str(value)
    return format(value, f"{sign},.0f" if abs(value) >= 1000 else f"{sign}.4g")


def success_text(metrics: Metrics, percent: str = ".0f") -> tuple[str, str]:
    """(success as "90% (18/20)", its 95% interval as "70-97%"); ("-", "-") when no episode ran."""
    if metrics.success_rate is None:
        return "-", "-"
    rate = format(metrics.success_rate * 100, percent)
    interval = "-"
    if metrics.success_ci95 is not None:
        lo, hi = metrics.success_ci95
        interval = f"{lo * 100:.0f}-{hi * 100:.0f}%"
    return f"{rate}% ({metrics.successes}/{metrics.episodes})", interval
