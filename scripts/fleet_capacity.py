"""How many robots one engine serves at a camera rate: the fleet figure of a device.

    python scripts/fleet_capacity.py [--policy tiny-dp] [--device cpu] [--dtype float32] [--hz 30]
                                     [--staleness-ms 100] [--robots 1 2 4 8 16 32 64] [--seconds 10]
                                     [--set KEY=VALUE ...] [--json OUT]

One frame engine over the policy's ``pipeline-<policy>`` preset (auras mode) on ``--device``, and N robot
threads in this process, each offering a fresh observation at ``--hz`` (84x84 frames, its own images) and
stepping its session whenever a new one is there. Per N it reports the per-robot action rate (min), the
staleness of each action when it comes out (now - capture of its newest input) p50 / p99 and the
engine's mean frame size and frame time; the figure is the largest N whose every robot keeps at least 95%
of ``--hz`` with p99 staleness under ``--staleness-ms``. It stops at the first N that misses. ``--hz 0``:
robots step back to back (no camera), every N runs, and the figure is the engine's throughput per N.
With ``--set pipeline.controller=adaptive`` every robot re-plans its own generation depth as the fleet's
frames grow (``pipeline.target_hz``, ``pipeline.staleness_bound_ms``); the depths they end at are printed.
No network: this is the engine's capacity (`scripts/fleet_bench.py` measures the served path, robots as
processes).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(engine, config, policy, robots: int, hz: float, seconds: float) -> dict:
    from auras.pipeline import build_executor
    from auras.types import Observation

    spec = policy.perception.spec
    executors = [build_executor(config, engine=engine) for _ in range(robots)]
    rates, staleness, depths = [], [], []
    lock = threading.Lock()
    start_at = time.monotonic() + 0.2

    def robot(index: int) -> None:
        rng = np.random.default_rng(index)
        bank = [{cam: rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for cam, hw in spec.cameras.items()}
                for _ in range(4)]
        period, actions, stale = (1.0 / hz if hz > 0 else 0.0), 0, []
        executor = executors[index]
        while time.monotonic() < start_at:
            time.sleep(0.001)
        t0 = time.monotonic()
        step = 0
        while (now := time.monotonic()) - t0 < seconds:
            frame = int((now - t0) / period) if period else step  # the camera's newest frame
            capture = t0 + frame * period if period else now
            obs = Observation(bank[frame % 4], rng.uniform(-0.2, 0.8, spec.state_dim).astype(np.float32),
                              "press the button", step, capture)
            action = executor.step(obs)
            step += 1
            if now - t0 > 1.0:  # after the pipeline filled
                actions += 1
                stale.append(action.staleness_ms)
            wait = capture + period - time.monotonic() if period else 0.0
            if wait > 0:  # the next frame is not there yet
                time.sleep(wait)
        controller = executor.controller_stats()  # an adaptive pipeline: the depth it settled at
        executor.close()
        with lock:
            rates.append(actions / (seconds - 1.0))
            staleness.extend(stale)
            if controller is not None:
                depths.append(controller["pp_generation"])

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(robots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stale = np.asarray(staleness) if staleness else np.zeros(1)
    stats = engine.stats()
    return {"robots": robots, "rate_min_hz": float(min(rates)), "rate_mean_hz": float(np.mean(rates)),
            "aggregate_hz": float(sum(rates)), "frame_ms": 1e3 * stats["busy_s"] / max(1, stats["frames"]),
            "staleness_p50_ms": float(np.percentile(stale, 50)), "staleness_p99_ms": float(np.percentile(stale, 99)),
            "mean_frame_sessions": stats["mean_frame_sessions"], "depths": sorted(depths) or None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="tiny-dp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--staleness-ms", type=float, default=100.0)
    parser.add_argument("--robots", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from auras import load_config
    from auras.pipeline import build_engine

    config = load_config(f"pipeline-{args.policy}", [f"policy.device={args.device}", f"policy.dtype={args.dtype}",
                                                     "pipeline.mode=auras", *args.set])
    engine = build_engine(config)
    policy = engine.hosted_policy
    rows, capacity = [], 0
    try:
        for n in args.robots:
            engine.counters.__init__()  # this N's frames only
            row = measure(engine, config, policy, n, args.hz, args.seconds)
            row["holds"] = row["rate_min_hz"] >= 0.95 * args.hz and row["staleness_p99_ms"] < args.staleness_ms
            rows.append(row)
            print(f"{n} robots: {row['aggregate_hz']:.1f} actions/s in all, per-robot rate min "
                  f"{row['rate_min_hz']:.1f} Hz, staleness p50 / p99 {row['staleness_p50_ms']:.0f} / "
                  f"{row['staleness_p99_ms']:.0f} ms, frame {row['frame_ms']:.1f} ms over "
                  f"{row['mean_frame_sessions']} robots on average"
                  + (f", generation depths {row['depths']}" if row["depths"] else "")
                  + ("" if args.hz <= 0 else f": {'holds' if row['holds'] else 'misses'}"), flush=True)
            if args.hz > 0 and not row["holds"]:
                break
            capacity = n
    finally:
        engine.close()
    if args.hz > 0:
        print(f"{args.policy} on {args.device} ({args.dtype}): {capacity} robots at {args.hz:g} Hz with p99 "
              f"staleness under {args.staleness_ms:g} ms")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "capacity": capacity,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
