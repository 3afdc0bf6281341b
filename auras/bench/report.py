"""Benchmark output: results.json (config, hash, versions, machine, every figure) and the table."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from auras.bench.results import SCHEMA_VERSION, Results, fmt, success_text

__all__ = ["SCHEMA_VERSION", "host_figures", "machine_info", "package_versions", "results_table", "write_results"]

_PACKAGES = (
    "auras",
    "numpy",
    "torch",
    "mujoco",
    "metaworld",
    "gymnasium",
    "ray",
    "transformers",
    "diffusers",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_names() -> list[str] | None:
    """The CUDA devices this process sees (names), or None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "gpu": _gpu_names(),
        "ci": os.environ.get("CI") == "true",
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_results(document: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def results_table(results: Results):
    """A rich Table with one row per cell (policy, task, mode and sweep point)."""
    from rich.table import Table

    episodes = f"{results.episodes} episodes per cell" if results.episodes else "throughput only"
    table = Table(title=f"auras bench ({results.clock} clock, {episodes})")
    columns = ("task", "policy", "mode", "success", "95% CI", "rel. acc", "throughput Hz", "speedup",
               "of bound", "latency p50/p99 ms", "interval cv", "staleness p50 ms")
    for col in columns:
        table.add_column(col, justify="left" if col in ("task", "policy", "mode") else "right")
    for cell in results.cells:
        m = cell.metrics
        table.add_row(
            cell.task,
            cell.policy + (" (privileged)" if cell.privileged else ""),
            cell.label,
            *success_text(m),
            fmt(m.relative_accuracy, ".2f"),
            fmt(m.throughput_hz, ".1f"),
            fmt(m.speedup, ".2f"),
            fmt(m.bound_fraction * 100 if m.bound_fraction else None, ".0f") + "%",
            f"{fmt(m.latency_ms.p50, '.2f')} / {fmt(m.latency_ms.p99, '.2f')}",
            fmt(m.interval_cv, ".3f"),
            fmt(m.staleness_ms.p50, ".1f"),
        )
    return table


def host_figures(results: Results) -> list[str]:
    """One line per policy with a sequential row: what one request takes on this host (the sequential
    latency p50), so results from another host can be scaled to this one (a host twice as slow per request
    gives about half the rates)."""
    machine = results.machine
    where = f"{machine.cpu_model or 'this CPU'}, {machine.cpu_count or '?'} cores"
    lines, seen = [], set()
    for cell in results.cells:
        p50 = cell.metrics.latency_ms.p50
        if cell.mode != "sequential" or cell.policy in seen or p50 is None:
            continue
        seen.add(cell.policy)
        lines.append(f"host figure: one sequential {cell.policy} request takes {p50:.1f} ms here ({where}); "
                     "compare it with the sequential latency p50 beside any published figure before comparing rates")
    return lines
