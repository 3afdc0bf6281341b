"""Turn auras bench results.json files into Markdown tables for the README.

    python scripts/results_markdown.py --rows runs/results-default/results.json

Prints one row per cell (policy, task, mode): the README Results table.

    python scripts/results_markdown.py runs/evaluate/bench-tiny-vla/results.json \
        runs/evaluate/bench-tiny-dp/results.json

Prints one table: rows = task, columns = policy (and mode, when several modes are present), cells =
success rate with successes/episodes and the 95% Wilson interval; then a throughput/latency table.

    python scripts/results_markdown.py --modes runs/modes/tiny-dp-local-*/results.json

Prints the mode comparison: one row per (policy, backend, clock, mode) with throughput and speedup
(mean over tasks), the frame rate against the bound 1 / slowest stage, interval_cv, staleness,
and success per task with its ratio to sequential.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    rows = [(row, doc) for p in paths for doc in [json.loads(Path(p).read_text())] for row in doc["results"]]
    columns = list(dict.fromkeys((r["policy"], r["mode"]) for r, _ in rows))
    tasks = list(dict.fromkeys(r["task"] for r, _ in rows))
    several_modes = len({mode for _, mode in columns}) > 1
    names = [f"{p} ({m})" if several_modes else p for p, m in columns]
    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(columns))
    cells = {(r["task"], r["policy"], r["mode"]): r["metrics"] for r, _ in rows}
    for task in tasks:
        out = []
        for policy, mode in columns:
            m = cells.get((task, policy, mode))
            if m is None:
                out.append("-")
                continue
            lo, hi = m["success_ci95"]
            out.append(f"{m['success_rate']:.0%} ({m['successes']}/{m['episodes']}, CI {lo:.0%}-{hi:.0%})")
        print(f"| {task} | " + " | ".join(out) + " |")
    print()
    print("| policy | mode | task | throughput Hz | latency p50 ms | stage p50 ms |")
    print("|---|---|---|---|---|---|")
    for r, _ in rows:
        m = r["metrics"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in m["stage_ms_p50"].items())
        hz = f"{m['throughput_hz']:.1f}" if m["throughput_hz"] else "-"
        print(f"| {r['policy']} | {r['mode']} | {r['task']} | {hz} | {m['latency_ms']['p50']:.1f} | {stages} |")


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def modes_table(paths: list[str]) -> None:
    docs = [json.loads(Path(p).read_text()) for p in paths]
    tasks = list(dict.fromkeys(t for d in docs for t in d["tasks"]))
    print(
        "| policy | backend | clock | mode | throughput Hz | speedup | frame rate / bound | interval_cv "
        "| staleness frames (mean) | " + " | ".join(f"{t} success (vs seq)" for t in tasks) + " |"
    )
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * len(tasks))
    for doc in docs:
        clock = doc["clock"]
        for mode in doc["modes"]:
            rows = [r for r in doc["results"] if r["mode"] == mode]
            m = [r["metrics"] for r in rows]
            cells = []
            for task in tasks:
                r = next((r for r in rows if r["task"] == task), None)
                if r is None:
                    cells.append("-")
                    continue
                rel = r["metrics"]["relative_accuracy"]
                cells.append(
                    f"{r['metrics']['success_rate']:.0%} ({r['metrics']['successes']}/{r['metrics']['episodes']})"
                    + (f", {rel:.2f}x" if rel is not None and mode != "sequential" else "")
                )
            print(
                f"| {rows[0]['policy']} | {rows[0]['backend']} | {clock} | {mode} "
                f"| {_fmt(_mean([x['throughput_hz'] for x in m]), '.1f')} "
                f"| {_fmt(_mean([x['speedup'] for x in m]), '.2f')} "
                f"| {_fmt(_mean([x['bound_fraction'] for x in m]), '.2f')} "
                f"| {_fmt(_mean([x['interval_cv'] for x in m]), '.3f')} "
                f"| {_fmt(_mean([x['staleness_frames']['mean'] for x in m]), '.1f')} | " + " | ".join(cells) + " |"
            )


def rows_table(paths: list[str]) -> None:
    """One row per result row (cell) of each document: the README Results table."""
    print("| policy | task | mode | throughput Hz | speedup | of bound | latency p50 / p99 ms | interval_cv "
          "| staleness p50 ms | success (95% CI) | relative accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for doc in (json.loads(Path(p).read_text()) for p in paths):
        for r in doc["results"]:
            m = r["metrics"]
            if m["success_rate"] is None:
                success = "-"
            else:
                lo, hi = m["success_ci95"]
                success = f"{m['success_rate']:.0%} ({m['successes']}/{m['episodes']}, {lo:.0%}-{hi:.0%})"
            bound = _fmt(m["bound_fraction"] * 100 if m["bound_fraction"] else None, ".0f")
            print(
                f"| {r['policy']} | {r['task']} | {r.get('label', r['mode'])} | {_fmt(m['throughput_hz'], '.1f')} "
                f"| {_fmt(m['speedup'], '.2f')}x | {bound}% "
                f"| {_fmt(m['latency_ms']['p50'], '.1f')} / {_fmt(m['latency_ms']['p99'], '.1f')} "
                f"| {_fmt(m['interval_cv'], '.3f')} | {_fmt(m['staleness_ms']['p50'], '.1f')} | {success} "
                f"| {_fmt(m['relative_accuracy'], '.2f')} |"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rows"]:
        rows_table(sys.argv[2:])
    elif sys.argv[1:2] == ["--modes"]:
        modes_table(sys.argv[2:])
    else:
        main(sys.argv[1:])
