"""Turn auras bench results.json files into Markdown tables for the README.

    python scripts/results_markdown.py runs/evaluate/bench-tiny-vla/results.json \
        runs/evaluate/bench-tiny-dp/results.json

Prints one table: rows = task, columns = policy (and mode, when several modes are present), cells =
success rate with successes/episodes and the 95% Wilson interval; then a throughput/latency table.
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


if __name__ == "__main__":
    main(sys.argv[1:])
