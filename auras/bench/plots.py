"""Figures from a results document (results.json): throughput/success, stability, latency, sweeps.

``write_plots(document, out_dir)`` writes one PNG per figure whose data is present and returns the paths.
Missing or None values are skipped (shown as "n/a"), never raised on. matplotlib is imported lazily
(Agg backend), so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from auras.bench.metrics import wilson_interval
from auras.bench.results import Cell, Results, fmt, parse_results

__all__ = ["write_plots"]

DPI = 110
_SCALE_KEYS = ("scale_perception", "scale_generation")
_DELAY_KEYS = ("delay_ms_perception", "delay_ms_generation")
_CONDITION_KEYS = _SCALE_KEYS + _DELAY_KEYS
_CONDITION_DEFAULTS = {
    "scale_perception": 1.0,
    "scale_generation": 1.0,
    "delay_ms_perception": 0.0,
    "delay_ms_generation": 0.0,
}
_PIPELINED = ("pipeline", "auras")
_MODE_ORDER = ("sequential", "decoupled", "parallel", "pipeline", "auras")

Row = Cell
GroupKey = tuple[str, str]


# ---------------------------------------------------------------- small accessors


def _num(value: Any) -> float | None:
    """A finite float, or None for None / non-numbers / NaN / inf (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _metric(row: Row, name: str) -> float | None:
    return _num(getattr(row.metrics, name, None))


def _setting(row: Row, name: str) -> float | None:
    value = _num(getattr(row.settings, name, None))
    return _CONDITION_DEFAULTS.get(name) if value is None else value


def _samples(row: Row, name: str) -> list[float]:
    return [v for v in (_num(x) for x in getattr(row.samples, name, ())) if v is not None]


def _degree(row: Row) -> tuple[int, int] | None:
    """(pp_perception, pp_generation), or None when either is absent."""
    p, g = _setting(row, "pp_perception"), _setting(row, "pp_generation")
    return None if p is None or g is None else (int(p), int(g))


def _ci95(row: Row) -> tuple[float, float] | None:
    """The success 95% CI: the stored one, else Wilson from successes/episodes, else None."""
    metrics = row.metrics
    if metrics.success_ci95 is not None:
        return metrics.success_ci95
    if metrics.successes is None or not metrics.episodes:
        return None
    return wilson_interval(metrics.successes, metrics.episodes)


# ---------------------------------------------------------------- grouping / pairing


def _group_by_policy_task(rows: Iterable[Row]) -> dict[GroupKey, list[Row]]:
    """Rows grouped by (policy, task), in order of first appearance."""
    groups: dict[GroupKey, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.policy, row.task), []).append(row)
    return groups


def _labels(rows: Sequence[Row]) -> list[str]:
    """Row labels, made unique within the list."""
    seen: Counter[str] = Counter()
    out = []
    for row in rows:
        seen[row.label] += 1
        out.append(row.label if seen[row.label] == 1 else f"{row.label} #{seen[row.label]}")
    return out


def _condition(row: Row, keys: Sequence[str]) -> tuple[float | None, ...]:
    return tuple(_setting(row, k) for k in keys)


def _baseline(rows: Sequence[Row], keys: Sequence[str]) -> list[Row]:
    """Rows at one fixed value of the ``keys`` settings: the defaults if any row has them, else the commonest."""
    if not rows or not keys:
        return list(rows)
    default = tuple(_CONDITION_DEFAULTS[k] for k in keys)
    counts = Counter(_condition(r, keys) for r in rows)
    chosen = default if default in counts else counts.most_common(1)[0][0]
    return [r for r in rows if _condition(r, keys) == chosen]


def _varies(rows: Sequence[Row], keys: Sequence[str]) -> list[str]:
    """The ``keys`` settings that take >= 2 distinct values among ``rows``."""
    return [k for k in keys if len({_setting(r, k) for r in rows}) >= 2]


def _pair_with_sequential(rows: Sequence[Row]) -> list[tuple[Row, Row]]:
    """(row, sequential row at the same scale and delay settings) for every non-sequential row."""
    sequential = {}
    for row in rows:
        if row.mode == "sequential":
            sequential.setdefault(_condition(row, _CONDITION_KEYS), row)
    pairs = []
    for row in rows:
        if row.mode != "sequential":
            seq = sequential.get(_condition(row, _CONDITION_KEYS))
            if seq is not None:
                pairs.append((row, seq))
    return pairs


def _speedup(row: Row, sequential: Row) -> float | None:
    """Throughput ratio row / sequential, computed from the two throughputs."""
    a, b = _metric(row, "throughput_hz"), _metric(sequential, "throughput_hz")
    return None if a is None or not b else a / b


def _mode_rank(mode: Any) -> int:
    return _MODE_ORDER.index(mode) if mode in _MODE_ORDER else len(_MODE_ORDER)


# ---------------------------------------------------------------- figure helpers


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(document: Results, key: GroupKey) -> str:
    return f"{key[0]} · {key[1]} · {document.clock} clock"


def _figure(n_panels: int, axes_per_panel: int = 1, panel_size: tuple[float, float] = (6.0, 4.0), max_cols: int = 2):
    """A figure with ``n_panels`` panels of ``axes_per_panel`` side-by-side axes; returns (fig, [[axes...]...])."""
    plt = _pyplot()
    per_row = max(1, max_cols // axes_per_panel)
    panels_per_row = min(n_panels, per_row)
    nrows = math.ceil(n_panels / panels_per_row)
    ncols = panels_per_row * axes_per_panel
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, layout="constrained"
    )
    flat = [ax for line in axes for ax in line]
    panels = [flat[i * axes_per_panel : (i + 1) * axes_per_panel] for i in range(n_panels)]
    for ax in flat[n_panels * axes_per_panel :]:
        ax.set_visible(False)
    return fig, panels


class _Output:
    """Where figures go: a folder, and ``inspect(name, figure)`` called with each before it is closed."""

    def __init__(self, folder: Path, inspect: Callable[[str, Any], None] | None = None) -> None:
        self.folder, self.inspect = folder, inspect

    def save(self, fig, name: str, title: str) -> Path:
        fig.suptitle(title, fontsize=12)
        path = self.folder / name
        fig.savefig(path, dpi=DPI)
        if self.inspect is not None:
            self.inspect(name, fig)
        _pyplot().close(fig)
        return path


def _rotate(ax, labels: Sequence[str]) -> None:
    ax.set_xticks(range(len(labels)))
    long = len(labels) > 4 or any(len(label) > 10 for label in labels)
    ax.set_xticklabels(labels, rotation=40 if long else 0, ha="right" if long else "center", fontsize=8)


def _line_style(i: int, n: int) -> dict[str, Any]:
    """Distinct colour (and, past 10 lines, line style) for line ``i`` of ``n``."""
    if n <= 10:
        return {"color": f"C{i % 10}"}
    return {"color": _pyplot().get_cmap("tab20")(i % 20), "linestyle": ("-", "--", ":", "-.")[(i // 20) % 4]}


def _legend(ax, fontsize: int = 7) -> None:
    """A legend when there is something to label; outside the axes when it is long."""
    n = len(ax.get_legend_handles_labels()[0])
    if n > 6:
        ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    elif n:
        ax.legend(fontsize=fontsize)


def _bars(ax, labels: Sequence[str], values: Sequence[float | None], color: str, errors=None) -> None:
    """Bars with "n/a" where a value is missing."""
    xs = range(len(labels))
    heights = [0.0 if v is None else v for v in values]
    ax.bar(xs, heights, color=color, yerr=errors, capsize=3 if errors is not None else 0)
    for x, v in zip(xs, values, strict=True):
        ax.annotate(
            fmt(v, ".3g", missing="n/a"),
            (x, 0 if v is None else v),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_xlim(-0.6, max(len(labels), 4) - 0.4)  # a lone bar stays bar-sized
    _rotate(ax, labels)


# ---------------------------------------------------------------- plots


def _plot_throughput_success(document, groups, out: _Output) -> Path | None:
    if not groups:
        return None
    width = max(6.0, 0.55 * max(len(rows) for rows in groups.values()))
    fig, panels = _figure(len(groups), axes_per_panel=2, panel_size=(width, 4.0))
    for (key, rows), (ax_t, ax_s) in zip(groups.items(), panels, strict=True):
        labels = _labels(rows)
        _bars(ax_t, labels, [_metric(r, "throughput_hz") for r in rows], "tab:blue")
        ax_t.set_ylabel("throughput (Hz)")
        ax_t.set_title(f"{key[0]} · {key[1]}: throughput", fontsize=10)
        rates = [_metric(r, "success_rate") for r in rows]
        lo_err, hi_err = [], []
        for rate, row in zip(rates, rows, strict=True):
            ci = _ci95(row) if rate is not None else None
            lo_err.append(0.0 if ci is None else max(0.0, rate - ci[0]))
            hi_err.append(0.0 if ci is None else max(0.0, ci[1] - rate))
        _bars(ax_s, labels, rates, "tab:green", errors=[lo_err, hi_err])
        ax_s.set_ylim(0, 1.1)
        ax_s.set_ylabel("success rate (95% Wilson CI)")
        ax_s.set_title(f"{key[0]} · {key[1]}: success", fontsize=10)
    return out.save(fig, "throughput_success.png", f"Throughput and success ({document.clock} clock)")


def _with_samples(groups, name: str) -> dict[GroupKey, list[tuple[str, Row, list[float]]]]:
    """Per group, (label, row, samples) for rows that have samples ``name``; groups without any dropped."""
    out = {}
    for key, rows in groups.items():
        found = [(label, row, _samples(row, name)) for label, row in zip(_labels(rows), rows, strict=True)]
        found = [item for item in found if item[2]]
        if found:
            out[key] = found
    return out


def _plot_intervals(document, groups, out: _Output) -> Path | None:
    import numpy as np

    data = _with_samples(groups, "intervals_ms")
    if not data:
        return None
    fig, panels = _figure(len(data))
    for (key, items), (ax,) in zip(data.items(), panels, strict=True):
        everything = np.concatenate([np.asarray(s) for _, _, s in items])
        hi = float(np.percentile(everything, 99.5))
        lo = float(everything.min())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        for i, (label, row, samples) in enumerate(items):
            cv = _metric(row, "interval_cv")
            ax.hist(
                np.clip(samples, bins[0], bins[-1]),
                bins=bins,
                histtype="step",
                linewidth=1.4,
                **_line_style(i, len(items)),
                label=f"{label} (cv={fmt(cv, '.3f', missing='n/a')})",
            )
        ax.set_xlabel("action interval (ms)")
        ax.set_ylabel("count")
        ax.set_title(_title(document, key), fontsize=10)
        _legend(ax)
    return out.save(fig, "intervals.png", "Action interval distribution (lower cv = steadier stream)")


def _plot_latency_cdf(document, groups, out: _Output) -> Path | None:
    import numpy as np

    data = _with_samples(groups, "latency_ms")
    if not data:
        return None
    fig, panels = _figure(len(data))
    for (key, items), (ax,) in zip(data.items(), panels, strict=True):
        for i, (label, _, samples) in enumerate(items):
            xs = np.sort(np.asarray(samples))
            ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=label, **_line_style(i, len(items)))
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of actions ≤ x")
        ax.set_ylim(0, 1.02)
        ax.set_title(_title(document, key), fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax)
    return out.save(fig, "latency_cdf.png", "Latency CDF")


def _best_per_x(rows: Sequence[Row], x_of: Callable[[Row], float | None]) -> list[tuple[float, Row]]:
    """One row per x (the first with a success rate, else the first), sorted by x."""
    chosen: dict[float, Row] = {}
    for row in rows:
        x = x_of(row)
        if x is None:
            continue
        if x not in chosen or (_metric(chosen[x], "success_rate") is None and _metric(row, "success_rate") is not None):
            chosen[x] = row
    return sorted(chosen.items())


def _degree_L(row: Row) -> float | None:
    degree = _degree(row)
    return None if degree is None else float(sum(degree))


def _plot_degree_sweep(document, groups, out: _Output) -> Path | None:
    data = {}
    for key, rows in groups.items():
        base = _baseline(rows, _CONDITION_KEYS)
        pipelined = [r for r in base if r.mode in _PIPELINED]
        if len({_degree_L(r) for r in pipelined} - {None}) >= 2:
            data[key] = base
    if not data:
        return None
    fig, panels = _figure(len(data), axes_per_panel=2)
    for (key, rows), (ax_s, ax_t) in zip(data.items(), panels, strict=True):
        ticks = sorted({_degree_L(r) for r in rows if r.mode in _PIPELINED} - {None})
        for mode, color in (("pipeline", "tab:orange"), ("auras", "tab:blue")):
            points = _best_per_x([r for r in rows if r.mode == mode], _degree_L)
            succ = [(x, _metric(r, "success_rate"), _ci95(r)) for x, r in points]
            succ = [(x, s, ci) for x, s, ci in succ if s is not None]
            if succ:
                err = [
                    [max(0.0, s - ci[0]) if ci else 0.0 for _, s, ci in succ],
                    [max(0.0, ci[1] - s) if ci else 0.0 for _, s, ci in succ],
                ]
                ax_s.errorbar(
                    [x for x, _, _ in succ],
                    [s for _, s, _ in succ],
                    yerr=err,
                    marker="o",
                    capsize=3,
                    color=color,
                    label=mode,
                )
            thr = [(x, _metric(r, "throughput_hz")) for x, r in points]
            thr = [(x, t) for x, t in thr if t is not None]
            if thr:
                ax_t.plot([x for x, _ in thr], [t for _, t in thr], marker="o", color=color, label=mode)
        ax_s.set_xticks(ticks)
        ax_t.set_xticks(ticks)
        for row in rows:
            if row.mode != "sequential":
                continue
            rate, hz = _metric(row, "success_rate"), _metric(row, "throughput_hz")
            if rate is not None:
                ax_s.axhline(rate, linestyle="--", color="gray", label="sequential")
            if hz is not None:
                ax_t.axhline(hz, linestyle="--", color="gray", label="sequential")
            break
        ax_s.set_ylim(0, 1.1)
        ax_s.set(xlabel="pipeline degree L = pp_perception + pp_generation", ylabel="success rate (95% CI)")
        ax_t.set(xlabel="pipeline degree L", ylabel="throughput (Hz)")
        ax_s.set_title(_title(document, key), fontsize=10)
        ax_t.set_title(_title(document, key), fontsize=10)
        for ax in (ax_s, ax_t):
            _legend(ax, fontsize=8)
    return out.save(fig, "degree_sweep.png", "Success and throughput vs pipeline degree")


def _plot_condition_sweep(document, groups, out: _Output, keys: Sequence[str], name: str, what: str) -> Path | None:
    """Speedup over sequential and throughput per mode vs one varied setting among ``keys`` (scale or delay)."""
    others = [k for k in _CONDITION_KEYS if k not in keys]
    data = {}
    for key, rows in groups.items():
        base = _baseline(rows, others)
        varied = _varies(base, keys)
        if varied:
            data[key] = (base, varied[-1])  # prefer the generation-side setting when both vary
    if not data:
        return None
    fig, panels = _figure(len(data), axes_per_panel=2)
    for (key, (rows, x_key)), (ax_sp, ax_t) in zip(data.items(), panels, strict=True):
        fixed = [k for k in keys if k != x_key]

        def line_key(row: Row, fixed=fixed) -> tuple:
            return (_mode_rank(row.mode), row.mode, _degree(row) or (0, 0), _condition(row, fixed))

        lines: dict[tuple, list[Row]] = {}
        for row in rows:
            lines.setdefault(line_key(row), []).append(row)
        swept = []
        for lk, members in sorted(lines.items(), key=lambda item: item[0][:3]):
            points = _best_per_x(members, lambda r, x_key=x_key: _setting(r, x_key))
            if len(points) >= 2 or lk[1] == "sequential":  # one point is no sweep (a degree run at the default only)
                swept.append((lk, points))
        per_mode = Counter(lk[1] for lk, _ in swept)
        speedups = {id(row): _speedup(row, seq) for row, seq in _pair_with_sequential(rows)}
        for i, (lk, points) in enumerate(swept):
            style = _line_style(i, len(swept))
            mode = lk[1]
            label = mode if per_mode[mode] == 1 else f"{mode} {lk[2][0]}x{lk[2][1]}"
            thr = [(x, _metric(r, "throughput_hz")) for x, r in points]
            thr = [(x, t) for x, t in thr if t is not None]
            if thr:
                ax_t.plot([x for x, _ in thr], [t for _, t in thr], marker="o", label=label, **style)
            sp = [(x, speedups.get(id(r))) for x, r in points]
            sp = [(x, s) for x, s in sp if s is not None]
            if sp:
                ax_sp.plot([x for x, _ in sp], [s for _, s in sp], marker="o", label=label, **style)
        ax_sp.axhline(1.0, linestyle="--", color="gray", linewidth=1)
        ax_sp.set(xlabel=x_key, ylabel="speedup over sequential (throughput ratio)")
        ax_t.set(xlabel=x_key, ylabel="throughput (Hz)")
        ax_sp.set_title(_title(document, key), fontsize=10)
        ax_t.set_title(_title(document, key), fontsize=10)
        for ax in (ax_sp, ax_t):
            _legend(ax, fontsize=8)
    return out.save(fig, name, f"Speedup and throughput vs {what}")


def _plot_scale_sweep(document, groups, out: _Output) -> Path | None:
    return _plot_condition_sweep(document, groups, out, _SCALE_KEYS, "scale_sweep.png", "stage cost scale")


def _plot_delay_sweep(document, groups, out: _Output) -> Path | None:
    return _plot_condition_sweep(document, groups, out, _DELAY_KEYS, "delay_sweep.png", "injected stage delay")


def _plot_grid(document, groups, out: _Output) -> Path | None:
    import numpy as np

    data = {}
    for key, rows in groups.items():
        cells: dict[tuple[int, int], float] = {}
        for row in _baseline([r for r in rows if r.mode == "auras"], _CONDITION_KEYS):
            degree, hz = _degree(row), _metric(row, "throughput_hz")
            if degree is not None and hz is not None:
                cells.setdefault(degree, hz)
        if len({p for p, _ in cells}) >= 2 and len({g for _, g in cells}) >= 2:
            data[key] = cells
    if not data:
        return None
    fig, panels = _figure(len(data), panel_size=(5.5, 4.5))
    for (key, cells), (ax,) in zip(data.items(), panels, strict=True):
        ps = sorted({p for p, _ in cells})
        gs = sorted({g for _, g in cells})
        grid = np.full((len(ps), len(gs)), np.nan)
        for (p, g), hz in cells.items():
            grid[ps.index(p), gs.index(g)] = hz
        image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2
        for i in range(len(ps)):
            for j in range(len(gs)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.1f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="black" if grid[i, j] > middle else "white",
                    )
        ax.set_xticks(range(len(gs)), [str(g) for g in gs])
        ax.set_yticks(range(len(ps)), [str(p) for p in ps])
        ax.set(xlabel="pp_generation", ylabel="pp_perception")
        ax.set_title(_title(document, key), fontsize=10)
        fig.colorbar(image, ax=ax, label="throughput (Hz)")
    return out.save(fig, "grid.png", "auras throughput over pipeline degrees")


_PLOTS = (
    _plot_throughput_success,
    _plot_intervals,
    _plot_latency_cdf,
    _plot_degree_sweep,
    _plot_scale_sweep,
    _plot_delay_sweep,
    _plot_grid,
)


def write_plots(document: Results | dict[str, Any], out_dir: str | Path,
                inspect: Callable[[str, Any], None] | None = None) -> list[Path]:
    """Write every figure whose data is present in ``document`` to ``out_dir``; return the PNG paths.

    throughput_success.png is written whenever there is at least one row (missing values show "n/a");
    intervals.png / latency_cdf.png need raw samples; the sweep and grid figures need rows that vary.
    ``inspect(name, figure)`` sees each matplotlib figure before it is closed (to check what was drawn).
    """
    document = parse_results(document)
    groups = _group_by_policy_task(document.cells)
    if not groups:
        return []
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = _Output(folder, inspect)
    paths = []
    for plot in _PLOTS:
        path = plot(document, groups, out)
        if path is not None:
            paths.append(path)
    return paths
