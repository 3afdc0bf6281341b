"""Many robots against one `auras serve`: accounting, fairness, latency and memory (a benchmark).

    python scripts/load_robots.py [--robots 4] [--frames 10000] [--hz 100] [--policy tiny-dp]
                                  [--config pipeline-tiny-dp] [--mode auras] [--json OUT]
    python scripts/load_robots.py --robots 1 --hz 30 --seconds 1800 --json soak.json   # the soak run
    python scripts/load_robots.py --perception separate,shared --frames 3000    # batched perception or not

`auras serve` runs as its own process, by default with an agent per robot (``--engine per-robot``: each
robot gets its own session and pipeline; with ``--perception shared`` the sessions share one perception
model whose calls are batched across robots, ``serve.perception``; ``--engine shared``: one frame
engine); each robot is a separate process with a :class:`RobotClient` that publishes ``--frames`` 84x84
camera frames + joint states at ``--hz`` (a perf_counter schedule) and records every action it receives.

Per robot it reports:
- accounting: every sequence number the robot used is exactly one of submitted to its agent,
  dropped incomplete, lost in transport (including frames the robot's own queue refused), pending,
  or never seen (sent after the last one that arrived). ``unaccounted`` must be 0. Of the submitted
  ones, each became an action or was superseded by a newer frame before the agent took it.
- duplicates: sequence numbers the robot received an action for more than once (must be 0).
- actions sent by the server and received by the robot; latency (capture stamp -> action received,
  for the frame each action answers) p50/p90/p99; frames that reached the agent per second (fairness).
Memory: the server process's RSS (with its children) sampled every second; start, end, max and the
slope of a line fitted over the second half (MB per minute: flat is ~0).

``--seconds`` runs for a duration instead of a frame count (``--frames`` is then hz x seconds), and
the report adds one row per minute: actions received, latency p50/p99 and server RSS (the soak).
"""

from __future__ import annotations

import argparse
import collections
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.ports: free ports, as the tests use


def robot(index: int, address: str, frames: int, hz: float, instruction: str, out: Any) -> None:
    """One robot process: publish ``frames`` observations at ``hz``, record actions, report (or
    report its error: the parent never waits on a robot that died)."""
    try:
        _robot(index, address, frames, hz, instruction, out)
    except BaseException as exc:
        out.put({"robot": index, "error": repr(exc)})
        raise


def _robot(index: int, address: str, frames: int, hz: float, instruction: str, out: Any) -> None:
    from auras_client.client import RobotClient

    received: collections.Counter = collections.Counter()
    latency_ms: list[float] = []
    staleness_ms: list[float] = []  # action received -> capture of its newest input (context_seq)
    stamps: dict[int, float] = {}
    arrivals: list[tuple[float, float]] = []  # (monotonic received, latency ms) per first action of a seq
    lock = threading.Lock()

    def on_action(action: Any) -> None:
        with lock:
            received[action.seq] += 1
            if received[action.seq] == 1:
                latency_ms.append((action.received - action.stamp) * 1e3)
                arrivals.append((time.monotonic(), latency_ms[-1]))
            staleness_ms.append((action.received - stamps.get(action.context_seq, action.stamp)) * 1e3)

    rng = np.random.default_rng(index)
    bank = [rng.integers(0, 255, (84, 84, 3), dtype=np.uint8) for _ in range(8)]
    client = RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction=instruction,
                         robot=f"load-{index}", ttl_s=5.0, on_action=on_action, connect=False)
    client.hello_timeout_s = 300.0  # a server building an agent per robot answers many hellos one at a time
    client.connect()
    published = refused = 0
    start = time.perf_counter()
    for i in range(frames):
        state = np.array([0.0, 0.6, 0.2, float(i % 2)], np.float32)
        stamp = time.time()
        seq = client.publish({"front": bank[i % len(bank)]}, state, stamp=stamp)
        if seq is None:
            refused += 1
        else:
            published += 1
            with lock:
                stamps[seq] = stamp
        late = time.perf_counter() - (start + (i + 1) / hz)
        if late < 0:
            time.sleep(-late)
        else:
            start += late
    duration = time.perf_counter() - start
    time.sleep(2.0)  # let the last actions arrive
    stats = client.stats()
    client.close()  # its counters stay readable
    numbered = published + refused
    c = collections.Counter(stats["counters"])
    tail = numbered - 1 - stats["max_seen"]
    accounted = c["submitted"] + c["dropped_incomplete"] + c["lost"] + c["pending"] + c["before_reset"] + tail
    with lock:
        lat = np.asarray(latency_ms) if latency_ms else np.zeros(1)
        stale = np.asarray(staleness_ms) if staleness_ms else np.zeros(1)
        out.put({
            "robot": index, "numbered": numbered, "published": published, "refused_at_client": refused,
            "submitted": c["submitted"], "superseded": c["superseded"], "dropped_incomplete": c["dropped_incomplete"],
            "lost": c["lost"], "pending": c["pending"], "unseen_tail": tail, "unaccounted": numbered - accounted,
            "actions_sent": c["actions"], "actions_received": client.counters["actions"],
            "distinct_actions": len(received),
            "duplicates": sum(1 for n in received.values() if n > 1),
            "used_by_agent": c["submitted"] - c["superseded"], "seconds": duration,
            "used_per_s": (c["submitted"] - c["superseded"]) / duration,
            "latency_ms": {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)},
            "staleness_ms": {f"p{q}": float(np.percentile(stale, q)) for q in (50, 90, 99)},
            "distinct_per_s": len(received) / duration,
            "cpu_s": time.process_time(),  # this robot process's CPU time (it shares the machine with the server)
            "server_errors": {k: v for k, v in c.items() if k.startswith("error_")},
            "arrivals": arrivals,
        })


def sample_memory(pid: int, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    import psutil

    root = psutil.Process(pid)
    t0 = time.monotonic()
    while not stop.is_set():
        try:
            rss = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
        except psutil.Error:
            return
        samples.append((time.monotonic() - t0, rss / 2**20))
        stop.wait(1.0)


def per_minute(robots: list[dict[str, Any]], samples: list[tuple[float, float]], t0: float) -> list[dict[str, Any]]:
    """Actions, latency percentiles and server RSS per minute of the run (all robots together)."""
    by_minute: dict[int, list[float]] = collections.defaultdict(list)
    for r in robots:
        for when, latency in r["arrivals"]:
            by_minute[int((when - t0) // 60)].append(latency)
    rss = collections.defaultdict(list)
    for t, mb in samples:
        rss[int(t // 60)].append(mb)
    rows = []
    for minute in sorted(by_minute):
        values = np.asarray(by_minute[minute])
        p50, p99 = np.percentile(values, [50, 99])
        memory = float(np.mean(rss.get(minute, [np.nan])))
        rows.append({"minute": minute, "actions": len(values), "p50": float(p50), "p99": float(p99), "rss_mb": memory})
    return rows


def server_stats(address: str) -> dict[str, Any]:
    """The server-wide ``stats`` reply (no session), or {} if the server does not answer."""
    import zmq

    from auras_client.protocol import SCHEMA_VERSION, decode_map, encode_map

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(address)
    try:
        sock.send(encode_map({"v": SCHEMA_VERSION, "op": "stats", "id": 0}))
        return decode_map(sock.recv()) if sock.poll(5000) else {}
    finally:
        sock.close(linger=0)


def run(args: argparse.Namespace, perception: str) -> dict[str, Any]:
    """One load run against a fresh `auras serve --perception PERCEPTION`; prints its tables."""
    from tests.ports import free_service_port

    address = f"tcp://127.0.0.1:{free_service_port()}"
    env = dict(os.environ, MUJOCO_GL="egl")
    server = subprocess.Popen(
        [sys.executable, "-m", "auras.cli", "serve", "--bind", address, "--policy", args.policy, "-c", args.config,
         "--mode", args.mode, "--engine", args.engine, "--perception", perception, "--session-timeout", "30",
         *(f"--set={kv}" for kv in args.set)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(server.pid, samples, stop), daemon=True)
    sampler.start()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=robot, args=(i, address, args.frames, args.hz, "press the button", out))
             for i in range(args.robots)]
    started = time.time()
    for p in procs:
        p.start()
    reports = [out.get(timeout=args.frames / args.hz * 3 + 300) for _ in procs]
    failed = [r for r in reports if "error" in r]
    if failed:
        stop.set()
        server.terminate()
        raise SystemExit(f"robots failed: {failed}")
    for p in procs:
        p.join(timeout=30)
    served = server_stats(address)
    stop.set()
    server.terminate()
    _, stderr = server.communicate(timeout=60)
    crashed = server.returncode not in (0, -15)
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    slope = float(np.polyfit([t for t, _ in half], [m for _, m in half], 1)[0] * 60) if len(half) > 2 else None
    memory = {
        "start_mb": samples[0][1] if samples else None, "end_mb": samples[-1][1] if samples else None,
        "max_mb": max(m for _, m in samples) if samples else None, "slope_mb_per_min_second_half": slope,
        "samples": samples,
    }
    result = {
        "perception": perception, "wall_s": time.time() - started, "server_crashed": crashed,
        "robots": sorted(reports, key=lambda r: r["robot"]), "memory": memory,
        "shared_perception": served.get("shared_perception"),
    }
    print(f"\n## {perception} perception")
    print("| robot | frames | refused at robot | submitted | used by agent (Hz) | superseded | dropped incomplete "
          "| lost | unaccounted | duplicate seqs | actions sent / received | latency p50 / p90 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["robots"]:
        lat = r["latency_ms"]
        print(f"| {r['robot']} | {r['numbered']} | {r['refused_at_client']} | {r['submitted']} "
              f"| {r['used_by_agent']} ({r['used_per_s']:.1f}) | {r['superseded']} | {r['dropped_incomplete']} "
              f"| {r['lost']} | {r['unaccounted']} | {r['duplicates']} | {r['actions_sent']} / {r['actions_received']} "
              f"| {lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} |")
    print(f"server RSS: start {memory['start_mb']:.0f} MB, end {memory['end_mb']:.0f} MB, "
          f"max {memory['max_mb']:.0f} MB, "
          f"slope over the second half {slope if slope is None else round(slope, 2)} MB/min; "
          f"server crashed: {crashed}; wall {result['wall_s']:.0f} s")
    if result["shared_perception"]:
        b = result["shared_perception"]
        print(f"shared perception: {b['observations']} observations in {b['batches']} batched calls "
              f"(mean batch {b['mean_batch']:.2f})")
    if crashed:
        print(stderr[-2000:])
    result["per_minute"] = per_minute(result["robots"], samples, time.monotonic() - (time.time() - started))
    if len(result["per_minute"]) > 1:
        print("| minute | actions received | latency p50 / p99 ms | server RSS MB |")
        print("|---|---|---|---|")
        for row in result["per_minute"]:
            print(f"| {row['minute']} | {row['actions']} | {row['p50']:.1f} / {row['p99']:.1f} | {row['rss_mb']:.0f} |")
    for r in result["robots"]:
        r.pop("arrivals")
    return result


def summary(result: dict[str, Any]) -> dict[str, float]:
    """All robots together: frames used per second, their spread (fairness), latency, memory."""
    rates = [r["used_per_s"] for r in result["robots"]]
    return {
        "used_per_s_total": float(sum(rates)), "used_per_s_min": float(min(rates)),
        "used_per_s_max": float(max(rates)),
        "latency_p50_ms": float(np.median([r["latency_ms"]["p50"] for r in result["robots"]])),
        "latency_p99_ms": float(max(r["latency_ms"]["p99"] for r in result["robots"])),
        "unaccounted": sum(r["unaccounted"] for r in result["robots"]),
        "duplicates": sum(r["duplicates"] for r in result["robots"]),
        "rss_max_mb": result["memory"]["max_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=None, help="Run this long (sets --frames = hz x seconds).")
    parser.add_argument("--hz", type=float, default=100.0)
    parser.add_argument("--policy", default="tiny-dp")
    parser.add_argument("--config", default="pipeline-tiny-dp")
    parser.add_argument("--mode", default="auras")
    parser.add_argument(
        "--engine", default="per-robot", choices=["per-robot", "shared"],
        help="per-robot: an agent per robot, with --perception separate or shared (the layouts this script's "
        "tables in docs/reliability.md measure); shared: one frame engine (scripts/fleet_bench.py sweeps it).",
    )
    parser.add_argument(
        "--perception",
        default="separate",
        help="separate, shared, or both (separate,shared): one run each, then a comparison.",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Config override passed to `auras serve` (repeatable), e.g. policy.scale_perception=8.",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.seconds is not None:
        args.frames = int(args.hz * args.seconds)
    kinds = [k.strip() for k in args.perception.split(",") if k.strip()]
    if not kinds or set(kinds) - {"separate", "shared"}:
        parser.error(f"--perception: expected separate, shared or separate,shared, got {args.perception!r}")
    runs = [run(args, kind) for kind in kinds]
    if len(runs) > 1:
        print("\n## comparison (all robots)")
        print("| perception | frames used/s (total) | per robot min / max | latency p50 / worst p99 ms "
              "| unaccounted | duplicates | server RSS max MB |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            s = r["summary"] = summary(r)
            print(f"| {r['perception']} | {s['used_per_s_total']:.1f} | {s['used_per_s_min']:.1f} / "
                  f"{s['used_per_s_max']:.1f} | {s['latency_p50_ms']:.1f} / {s['latency_p99_ms']:.1f} "
                  f"| {s['unaccounted']} | {s['duplicates']} | {s['rss_max_mb']:.0f} |")
        base = runs[0]["summary"]
        for r in runs[1:]:
            print(f"{r['perception']} / {runs[0]['perception']}: throughput "
                  f"{r['summary']['used_per_s_total'] / base['used_per_s_total']:.2f}x, latency p50 "
                  f"{r['summary']['latency_p50_ms'] / base['latency_p50_ms']:.2f}x")
    else:
        runs[0]["summary"] = summary(runs[0])
    if args.json:
        document = {"args": vars(args) | {"json": str(args.json)}, "runs": runs}
        if len(runs) == 1:  # the single-run layout of earlier reports
            document |= runs[0]
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
