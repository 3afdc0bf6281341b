"""Compare two results documents (results.json): per-row metric deltas and run-context differences.

``compare_documents(a, b)`` lists the differences of two :class:`~auras.bench.results.Results` as dicts;
``format_comparison(diffs, a_name, b_name)`` renders them as a rich Table.
"""

from __future__ import annotations

import math
from typing import Any

from auras.bench.results import Cell, Results, fmt, parse_results

__all__ = ["compare_documents", "format_comparison"]

RUN_ROW = "(run)"
ROW_FIELD = "(row)"
ACTIONS_FIELD = "actions_sha"  # a digest of every action the row's episodes applied (frame and virtual clocks)
HIGHLIGHT = 0.10  # ratios beyond ±10% are coloured

# Fields where a decrease is an improvement (matched as a dotted-name prefix).
_LOWER_IS_BETTER = (
    "latency_ms",
    "interval_cv",
    "interval_spread",
    "interval_ms_mean",
    "staleness_ms",
    "staleness_frames",
    "startup_ms",
    "rss_mb",
    "stage_ms_p50",
    "steps_to_success",
)
# Fields that describe the run's size rather than its quality: changes are shown but not judged.
_NEUTRAL = ("episodes", "stream_actions")


# ---------------------------------------------------------------- comparison


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(metrics: Any, prefix: str = "") -> dict[str, Any]:
    """Numeric (or None) metric fields with dotted names for nested dicts; lists are skipped."""
    out: dict[str, Any] = {}
    if not isinstance(metrics, dict):
        return out
    for name, value in metrics.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        elif value is None or _is_number(value):
            out[dotted] = value
    return out


def _keyed_cells(results: Results) -> dict[tuple[str, str, str, str], Cell]:
    """Cells by (policy, task, mode, label); a repeated key gets ' #2', ' #3' on its label."""
    cells: dict[tuple[str, str, str, str], Cell] = {}
    for cell in results.cells:
        policy, task, mode, label = cell.key
        key, n = cell.key, 1
        while key in cells:
            n += 1
            key = (policy, task, mode, f"{label} #{n}")
        cells[key] = cell
    return cells


def _cell_name(key: tuple[str, str, str, str]) -> str:
    policy, task, mode, label = key
    return f"{policy} {task} {label}" if label.startswith(mode) else f"{policy} {task} {mode} {label}"


def _diff(row: str, field: str, a: Any, b: Any) -> dict[str, Any]:
    numeric = _is_number(a) and _is_number(b)
    delta = b - a if numeric else None
    ratio = b / a if numeric and a != 0 else None
    if ratio is not None and not math.isfinite(ratio):
        ratio = None
    return {"row": row, "field": field, "a": a, "b": b, "delta": delta, "ratio": ratio}


def _run_context(results: Results) -> dict[str, Any]:
    context: dict[str, Any] = {"config_hash": results.config_hash, "clock": results.clock, "episodes": results.episodes}
    context.update({f"versions.{name}": value for name, value in results.versions.items()})
    context.update({"machine.cpu_model": results.machine.cpu_model, "machine.cpu_count": results.machine.cpu_count})
    return context


def compare_documents(a: Results | dict[str, Any], b: Results | dict[str, Any]) -> list[dict[str, Any]]:
    """Differences from A to B.

    First the run context (config_hash, clock, episodes, versions.*, machine.cpu_model/cpu_count) as row
    "(run)", only where it differs (delta/ratio None). Then, per row matched on (policy, task, mode, label),
    every numeric metric (nested dicts flattened: ``latency_ms.p50``) with a, b, delta = b - a and
    ratio = b / a (None when undefined), and ``actions_sha``: one digest over the rows every episode
    applied, so equal digests mean the two runs acted identically. Rows on one side only get field "(row)"
    and ``only_in`` "A" or "B".
    """
    a, b = parse_results(a, "document A"), parse_results(b, "document B")
    diffs: list[dict[str, Any]] = []
    ctx_a, ctx_b = _run_context(a), _run_context(b)
    for field in list(ctx_a) + [f for f in ctx_b if f not in ctx_a]:
        va, vb = ctx_a.get(field), ctx_b.get(field)
        if va != vb:
            diffs.append({"row": RUN_ROW, "field": field, "a": va, "b": vb, "delta": None, "ratio": None})

    rows_a, rows_b = _keyed_cells(a), _keyed_cells(b)
    for key in list(rows_a) + [k for k in rows_b if k not in rows_a]:
        name = _cell_name(key)
        if key not in rows_b or key not in rows_a:
            side = "A" if key in rows_a else "B"
            diffs.append(
                {
                    "row": name,
                    "field": ROW_FIELD,
                    "a": "present" if side == "A" else None,
                    "b": "present" if side == "B" else None,
                    "delta": None,
                    "ratio": None,
                    "only_in": side,
                }
            )
            continue
        ma, mb = _flatten(rows_a[key].metrics.model_dump()), _flatten(rows_b[key].metrics.model_dump())
        for field in list(ma) + [f for f in mb if f not in ma]:
            va, vb = ma.get(field), mb.get(field)
            if va is None and vb is None:
                continue
            diffs.append(_diff(name, field, va, vb))
        actions_a, actions_b = rows_a[key].actions_digest, rows_b[key].actions_digest
        if actions_a is not None or actions_b is not None:
            diffs.append(_diff(name, ACTIONS_FIELD, actions_a, actions_b))
    return diffs


# ---------------------------------------------------------------- rendering


def _lower_is_better(field: str) -> bool:
    return any(field == p or field.startswith(p + ".") for p in _LOWER_IS_BETTER)


def _style(diff: dict[str, Any]) -> str:
    """ "green"/"red" for a change beyond ±10% that is better/worse, "yellow" for neutral or context changes."""
    if diff["row"] == RUN_ROW:
        return "yellow"
    if "only_in" in diff:
        return "magenta"
    if diff["field"] == ACTIONS_FIELD:
        return "red" if diff["a"] != diff["b"] else ""
    ratio = diff["ratio"]
    if ratio is None or abs(ratio - 1.0) <= HIGHLIGHT:
        return ""
    if diff["field"] in _NEUTRAL:
        return "yellow"
    better = ratio < 1.0 if _lower_is_better(diff["field"]) else ratio > 1.0
    return "green" if better else "red"


def _changed(diff: dict[str, Any]) -> bool:
    return diff["row"] == RUN_ROW or "only_in" in diff or diff["a"] != diff["b"]


def format_comparison(diffs: list[dict[str, Any]], a_name: str, b_name: str, only_changed: bool = True):
    """A rich Table (row, field, A, B, delta, ratio); ratio and delta coloured beyond ±10%.

    Green is better, red worse (for latency, jitter, staleness, startup, memory and steps a decrease is
    better); yellow marks run-context differences and neutral size fields; magenta rows exist on one side only.
    ``only_changed`` drops fields whose A and B values are equal.
    """
    from rich.table import Table
    from rich.text import Text

    shown = [d for d in diffs if _changed(d)] if only_changed else list(diffs)
    table = Table(title=f"A = {a_name}  vs  B = {b_name}", caption="ratio = B / A; ±10% highlighted")
    table.add_column("row", justify="left")
    table.add_column("field", justify="left")
    table.add_column(f"A: {a_name}", justify="right")
    table.add_column(f"B: {b_name}", justify="right")
    table.add_column("delta", justify="right")
    table.add_column("ratio", justify="right")
    for diff in shown:
        style = _style(diff)
        ratio = "-" if diff["ratio"] is None else f"{diff['ratio']:.3f}x"
        if diff["row"] == RUN_ROW or "only_in" in diff:
            a_cell, b_cell = Text(fmt(diff["a"]), style=style), Text(fmt(diff["b"]), style=style)
        else:
            a_cell, b_cell = Text(fmt(diff["a"])), Text(fmt(diff["b"]))
        table.add_row(
            diff["row"],
            diff["field"],
            a_cell,
            b_cell,
            Text(fmt(diff["delta"], signed=True), style=style),
            Text(ratio, style=style),
        )
    return table
