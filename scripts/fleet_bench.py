"""One model, many robots: the fleet benchmark of `auras serve`, engine against an agent per robot.

    python scripts/fleet_bench.py [--policies tiny-dp tiny-vla] [--robots 1 2 4 8 16 32] [--hz 30]
                                  [--seconds 20] [--engines shared per-robot] [--out docs/results/fleet]
                                  [--set KEY=VALUE ...]

For each policy (its ``pipeline-<policy>`` preset, auras mode), each way of serving (``shared``: one frame
engine, one model, every robot's frames batched; ``per-robot``: an agent and a model per robot, today's
other server) and each fleet size N, a fresh ``auras serve`` process serves N robot processes
(scripts/load_robots.py's robot: 84x84 frames + joint states at ``--hz``, every action recorded) for
``--seconds``. Per run it reports the aggregate rate of distinct actions (observations answered per
second, all robots), the per-robot rates (min / max and their spread), latency (capture -> action
received) and staleness (action received -> capture of its newest input) p50 / p99 over every robot,
the server's peak memory (RSS with its children), and the engine's mean frame size. Then, in this
process, the batching-invariance figure: the largest difference between a robot's actions served alone
and batched with the others (N = the largest fleet; fp32 on this CPU).

Writes ``fleet.json``, ``fleet.md`` (the tables) and ``fleet.png`` (aggregate throughput and per-robot
latency against N) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from load_robots import robot, sample_memory, server_stats  # noqa: E402


def serve_fleet(policy: str, engine: str, robots: int, hz: float, seconds: float,
                overrides: list[str] = ()) -> dict[str, Any]:
    """One run: a fresh server, ``robots`` robot processes for ``seconds``; the figures of the run."""
    from tests.ports import free_service_port

    address = f"tcp://127.0.0.1:{free_service_port()}"
    server = subprocess.Popen(
        [sys.executable, "-m", "auras.cli", "serve", "--bind", address, "-c", f"pipeline-{policy}",
         "--mode", "auras", "--engine", engine, "--session-timeout", "60", "--max-sessions", str(max(robots, 16)),
         *(f"--set={kv}" for kv in overrides)],
        env=dict(os.environ, MUJOCO_GL="egl"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    threading.Thread(target=sample_memory, args=(server.pid, samples, stop), daemon=True).start()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    frames = int(hz * seconds)
    procs = [ctx.Process(target=robot, args=(i, address, frames, hz, "press the button", out)) for i in range(robots)]
    for p in procs:
        p.start()
    try:
        reports = [out.get(timeout=seconds * 3 + 300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
        served = server_stats(address)
        server_cpu_s = _cpu_seconds(server.pid)
        stop.set()
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    failed = [r for r in reports if "error" in r]
    if failed:  # recorded and reported; the sweep goes on
        print(f"{policy} {engine} N={robots}: {len(failed)} robots failed: {failed[:2]}\n{stderr[-1500:]}", flush=True)
        return {"policy": policy, "engine": engine, "robots": robots, "failed": len(failed),
                "error": failed[0]["error"]}
    rates = np.array([r["distinct_per_s"] for r in reports])
    return {
        "policy": policy, "engine": engine, "robots": robots, "hz": hz, "seconds": seconds,
        "aggregate_per_s": float(rates.sum()),
        "per_robot_min": float(rates.min()), "per_robot_max": float(rates.max()),
        "spread": float((rates.max() - rates.min()) / rates.max()) if rates.max() > 0 else None,
        "latency_p50_ms": float(np.median([r["latency_ms"]["p50"] for r in reports])),
        "latency_p99_ms": float(max(r["latency_ms"]["p99"] for r in reports)),
        "staleness_p50_ms": float(np.median([r["staleness_ms"]["p50"] for r in reports])),
        "staleness_p99_ms": float(max(r["staleness_ms"]["p99"] for r in reports)),
        "unaccounted": int(sum(r["unaccounted"] for r in reports)),
        "duplicates": int(sum(r["duplicates"] for r in reports)),
        "server_rss_max_mb": max(m for _, m in samples) if samples else None,
        "server_cpu_s": server_cpu_s, "robots_cpu_s": float(sum(r.get("cpu_s", 0.0) for r in reports)),
        "engine_stats": served.get("engine"),
        "server_crashed": server.returncode not in (0, -15),
    }


def _cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of a process and its children so far."""
    import psutil

    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        return float(sum(p.cpu_times().user + p.cpu_times().system for p in processes))
    except psutil.Error:
        return None


def batching_deviation(policy: str, robots: int, steps: int = 8) -> float:
    """Largest |action alone - action batched with ``robots - 1`` others| over every robot and step."""
    from auras import load_config
    from tests.test_engine import FrameShape, _alone, _engine, _max_deviation, _observations, _policy, _together

    pipe = load_config(f"pipeline-{policy}").pipeline
    shape = FrameShape(pipe.pp_perception, pipe.pp_generation, pipe.fetch_offset)
    model = _policy(policy)
    streams = [_observations(model, r, steps) for r in range(robots)]
    alone = _alone(model, shape, True, streams)
    engine = _engine(model, robots)
    together = _together(engine, [shape] * robots, True, streams)
    engine.close()
    return _max_deviation(alone, together)


def table(runs: list[dict[str, Any]]) -> str:
    one = {(r["policy"], r["engine"]): r["aggregate_per_s"] for r in runs if r["robots"] == 1 and "error" not in r}
    lines = [
        "| policy | serving | robots | actions/s (all) | x one robot | per robot min / max (spread) "
        "| latency p50 / p99 ms | staleness p50 / p99 ms | server RSS MB | mean frame (robots) | unaccounted "
        "| CPU s server / robots |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['policy']} | {r['engine']} | {r['robots']} | failed: {r['failed']} robots: "
                         f"{r['error'][:80]} |" + " |" * 8)
            continue
        base = one.get((r["policy"], r["engine"]))
        gain = f"{r['aggregate_per_s'] / base:.2f}x" if base else "-"
        frame = r["engine_stats"]["mean_frame_sessions"] if r.get("engine_stats") else "-"
        spread = f"{r['spread'] * 100:.0f}%" if r["spread"] is not None else "-"
        lines.append(
            f"| {r['policy']} | {r['engine']} | {r['robots']} | {r['aggregate_per_s']:.1f} | {gain} "
            f"| {r['per_robot_min']:.1f} / {r['per_robot_max']:.1f} ({spread}) "
            f"| {r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} "
            f"| {r['staleness_p50_ms']:.0f} / {r['staleness_p99_ms']:.0f} | {r['server_rss_max_mb']:.0f} "
            f"| {frame} | {r['unaccounted']} | {_fmt(r.get('server_cpu_s'))} / {_fmt(r.get('robots_cpu_s'))} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def memory_per_robot(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Server memory added per robot: the slope of peak RSS against N, per policy and way of serving."""
    out = {}
    for key in sorted({(r["policy"], r["engine"]) for r in runs}):
        points = [(r["robots"], r["server_rss_max_mb"]) for r in runs
                  if (r["policy"], r["engine"]) == key and "error" not in r]
        if len(points) > 1:
            out[f"{key[0]} {key[1]}"] = float(np.polyfit(*zip(*points, strict=True), 1)[0])
    return out


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["policy"], r["engine"]) for r in runs}):
        rows = sorted((r for r in runs if (r["policy"], r["engine"]) == key and "error" not in r),
                      key=lambda r: r["robots"])
        n = [r["robots"] for r in rows]
        style = "-o" if key[1] == "shared" else "--s"
        left.plot(n, [r["aggregate_per_s"] for r in rows], style, label=f"{key[0]}, {key[1]}")
        right.plot(n, [r["latency_p50_ms"] for r in rows], style, label=f"{key[0]}, {key[1]}")
    for ax, title in ((left, "aggregate actions per second"), (right, "per-robot latency p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("robots at 30 Hz")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=["tiny-dp", "tiny-vla"])
    parser.add_argument("--robots", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--engines", nargs="+", default=["shared", "per-robot"], choices=["shared", "per-robot"])
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("fleet-results"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Config override passed to every `auras serve` (repeatable), e.g. policy.torch_threads=2.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    runs = []
    for policy in args.policies:
        for engine in args.engines:
            for n in args.robots:
                run = serve_fleet(policy, engine, n, args.hz, args.seconds, args.set)
                runs.append(run)
                (args.out / "fleet.json").write_text(json.dumps({"runs": runs}, indent=2))  # so far
                if "error" in run:
                    continue
                print(f"{policy} {engine} N={n}: {run['aggregate_per_s']:.1f} actions/s, latency p50 "
                      f"{run['latency_p50_ms']:.0f} ms, RSS {run['server_rss_max_mb']:.0f} MB", flush=True)
    deviation = {p: batching_deviation(p, max(args.robots)) for p in args.policies}
    command = "python scripts/fleet_bench.py " + " ".join(sys.argv[1:])
    text = [f"# Fleet benchmark ({started})", "", f"`{command}`", "", table(runs), "",
            "Server memory added per robot (slope of peak RSS against N, MB): "
            + ", ".join(f"{k} {v:.1f}" for k, v in memory_per_robot(runs).items()), "",
            f"Batching invariance ({max(args.robots)} robots, fp32 CPU): largest |action alone - batched| "
            + ", ".join(f"{p} {d:.2e}" for p, d in deviation.items())]
    (args.out / "fleet.md").write_text("\n".join(text) + "\n")
    (args.out / "fleet.json").write_text(json.dumps(
        {"command": command, "started": started, "runs": runs, "deviation": deviation,
         "memory_per_robot_mb": memory_per_robot(runs)}, indent=2))
    plot(runs, args.out / "fleet.png")
    print("\n".join(text))


if __name__ == "__main__":
    main()
