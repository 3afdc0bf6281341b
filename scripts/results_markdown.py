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

import sys

from auras.bench.results import Metrics, Results, fmt, load_results


def main(paths: list[str]) -> None:
    cells = [cell for p in paths for cell in load_results(p).cells]
    columns = list(dict.fromkeys((c.policy, c.mode) for c in cells))
    tasks = list(dict.fromkeys(c.task for c in cells))
    several_modes = len({mode for _, mode in columns}) > 1
    names = [f"{p} ({m})" if several_modes else p for p, m in columns]
    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(columns))
    by_key = {(c.task, c.policy, c.mode): c.metrics for c in cells}
    for task in tasks:
        out = []
        for policy, mode in columns:
            m = by_key.get((task, policy, mode))
            out.append("-" if m is None else _success(m))
        print(f"| {task} | " + " | ".join(out) + " |")
    print()
    print("| policy | mode | task | throughput Hz | latency p50 ms | stage p50 ms |")
    print("|---|---|---|---|---|---|")
    for c in cells:
        m = c.metrics
        stages = ", ".join(f"{k} {fmt(v, '.1f')}" for k, v in m.stage_ms_p50.items())
        print(f"| {c.policy} | {c.mode} | {c.task} | {fmt(m.throughput_hz or None, '.1f')} "
              f"| {fmt(m.latency_ms.p50, '.1f')} | {stages} |")


def _success(m: Metrics) -> str:
    """"90% (18/20, CI 70%-97%)", or "-" without episodes."""
    if m.success_rate is None:
        return "-"
    ci = f", CI {m.success_ci95[0]:.0%}-{m.success_ci95[1]:.0%}" if m.success_ci95 else ""
    return f"{m.success_rate:.0%} ({m.successes}/{m.episodes}{ci})"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def modes_table(paths: list[str]) -> None:
    docs: list[Results] = [load_results(p) for p in paths]
    tasks = list(dict.fromkeys(t for d in docs for t in d.tasks))
    print(
        "| policy | backend | clock | mode | throughput Hz | speedup | frame rate / bound | interval_cv "
        "| staleness frames (mean) | " + " | ".join(f"{t} success (vs seq)" for t in tasks) + " |"
    )
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * len(tasks))
    for doc in docs:
        for mode in doc.modes:
            rows = [c for c in doc.cells if c.mode == mode]
            m = [c.metrics for c in rows]
            cells = []
            for task in tasks:
                cell = next((c for c in rows if c.task == task), None)
                if cell is None:
                    cells.append("-")
                    continue
                rel = cell.metrics.relative_accuracy
                cells.append(
                    f"{fmt(cell.metrics.success_rate, '.0%')} ({cell.metrics.successes}/{cell.metrics.episodes})"
                    + (f", {rel:.2f}x" if rel is not None and mode != "sequential" else "")
                )
            print(
                f"| {rows[0].policy} | {rows[0].backend} | {doc.clock} | {mode} "
                f"| {fmt(_mean([x.throughput_hz for x in m]), '.1f')} "
                f"| {fmt(_mean([x.speedup for x in m]), '.2f')} "
                f"| {fmt(_mean([x.bound_fraction for x in m]), '.2f')} "
                f"| {fmt(_mean([x.interval_cv for x in m]), '.3f')} "
                f"| {fmt(_mean([x.staleness_frames.mean for x in m]), '.1f')} | " + " | ".join(cells) + " |"
            )


def rows_table(paths: list[str]) -> None:
    """One row per result row (cell) of each document: the README Results table."""
    print("| policy | task | mode | throughput Hz | speedup | of bound | latency p50 / p99 ms | interval_cv "
          "| staleness p50 ms | success (95% CI) | relative accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for doc in map(load_results, paths):
        for c in doc.cells:
            m = c.metrics
            bound = fmt(m.bound_fraction * 100 if m.bound_fraction else None, ".0f")
            success = "-" if m.success_rate is None else _success(m).replace("CI ", "")
            print(
                f"| {c.policy} | {c.task} | {c.label} | {fmt(m.throughput_hz, '.1f')} "
                f"| {fmt(m.speedup, '.2f')}x | {bound}% "
                f"| {fmt(m.latency_ms.p50, '.1f')} / {fmt(m.latency_ms.p99, '.1f')} "
                f"| {fmt(m.interval_cv, '.3f')} | {fmt(m.staleness_ms.p50, '.1f')} | {success} "
                f"| {fmt(m.relative_accuracy, '.2f')} |"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rows"]:
        rows_table(sys.argv[2:])
    elif sys.argv[1:2] == ["--modes"]:
        modes_table(sys.argv[2:])
    else:
        main(sys.argv[1:])
