"""A simulated robot on a bad network: deadline misses, recovery and success under injected faults.

    MUJOCO_GL=egl python scripts/fault_table.py [--episodes 10] [--task push-v3] [--config pipeline-tiny-dp]
                                               [--deadline-ms 100] [--fallback decay] [--decay-ms 200]
                                               [--out docs/results/faults]

`auras serve -c CONFIG` runs as its own process (:class:`~auras.bridge.faults.ServerProcess`); a
:class:`~auras.bridge.faults.FaultProxy` sits between it and a simulated robot (the `auras robot-sim`
loop, :func:`auras.bridge.robot_sim.run_robot`, in this process: MuJoCo at 80 Hz in real time, a 30 Hz
camera, the server's staleness strategy and the deadline fallback of ``auras_client.runtime``). Each
condition runs the same seeds:

- ``clean``: no faults (the reference);
- ``loss P``, ``duplicate P``, ``reorder P`` for P = 1%, 5%, 20%, in both directions (every ZeroMQ
  message: each camera frame, joint state and extra, each action and status event); a reordered message
  is held back 50 ms;
- ``restart``: no network faults; in every episode the server is killed (SIGKILL) ``--kill-at-s`` after
  the robot's third action of the episode took over (an episode ends at success), and started again at
  once. Its episodes are ``--restart-horizon`` steps long (a restart takes seconds, longer than a
  200-step episode), with a fault-free twin of the same length.

Per condition: success against the clean run; deadline misses per episode and the share of control
steps in the fallback; the longest run without a fresh row; actions taken over; message copies the
client dropped and actions refused as not newer (reordered ones, by the client and the control step);
the server's accounting (``unaccounted`` seqs must be 0); for ``restart``, the recovery time: from the
server answering again to the robot's first fresh row (both on this machine's monotonic clock). It
checks, and fails loudly if not, that no action took over twice or after a fresher one.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import numpy as np

from auras import robot_loop
from auras.bridge.faults import FaultProxy, Faults, ServerProcess
from auras.bridge.robot_sim import executor_for, run_robot
from auras.envs import make_env
from auras.robot_loop import RealTime
from auras_client.client import RobotClient
from auras_client.runtime import Fallback, RobotRuntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.ports: free ports, as the tests use
from tests.ports import free_service_port

RATES = (0.01, 0.05, 0.20)


class CheckedRuntime(RobotRuntime):
    """The control step, recording the rank of every action that took over (checked after each episode)."""

    taken: ClassVar[list[tuple[int, int]]] = []
    current: ClassVar[RobotRuntime | None] = None  # the episode under way

    def reset(self) -> None:
        super().reset()
        CheckedRuntime.current = self

    def offer(self, t, chunk, request_id, context_id, age_s, latency_ms=None):
        took = super().offer(t, chunk, request_id, context_id, age_s, latency_ms)
        if took:
            CheckedRuntime.taken.append((int(context_id), int(request_id)))
        return took


def conditions() -> list[tuple[str, Faults]]:
    out = [("clean", Faults())]
    for name, field in (("loss", "drop"), ("duplicate", "duplicate"), ("reorder", "reorder")):
        out += [(f"{name} {rate:.0%}", Faults(**{field: rate}, reorder_ms=50.0, seed=7)) for rate in RATES]
    return out


def unaccounted(stats: dict) -> int:
    """Seqs from 0 to the highest the server saw that its counters do not place (docs/bridge.md)."""
    c = stats["counters"]
    placed = sum(c.get(k, 0) for k in ("submitted", "rejected", "dropped_incomplete", "dropped_at_reset", "lost",
                                       "pending", "unseen_at_reset"))
    return stats["max_seen"] + 1 - placed


def run_condition(name: str, faults: Faults, args: argparse.Namespace, server: ServerProcess,
                  horizon: int, restart: bool) -> dict:
    proxy_address = f"tcp://127.0.0.1:{free_service_port()}"
    with FaultProxy(server.service, proxy_address, observations=faults, actions=faults) as proxy, \
            make_env(args.task, horizon=horizon) as env:
        client = RobotClient(proxy.bind, cameras={"front": (env.image_size, env.image_size)}, state_dim=4,
                             instruction=env.instruction, robot=f"faults-{name}"[:64], ttl_s=args.ttl_ms / 1e3,
                             timeout_s=2.0, heartbeat_s=0.2,
                             contract={"deadline_ms": args.deadline_ms, "control_hz": 1.0 / env.control_dt})
        clock = RealTime(args.ttl_ms / 1e3, args.deadline_ms / 1e3,
                         Fallback(args.fallback, decay_s=args.decay_ms / 1e3))
        episodes, recoveries, server_stats = [], [], []
        with client:
            executor = executor_for(client)
            for i in range(args.episodes):
                CheckedRuntime.taken, CheckedRuntime.current = [], None
                back: list[float] = []
                killer = None
                if restart:
                    def kill_and_restart(back: list[float] = back) -> None:
                        end = time.monotonic() + 60  # mid-episode: once the robot runs this episode's actions
                        while time.monotonic() < end and (CheckedRuntime.current is None
                                                          or CheckedRuntime.current.stats.actions_applied < 3):
                            time.sleep(0.005)
                        time.sleep(args.kill_at_s)
                        server.restart()
                        wall = server.wait_ready(timeout=120)
                        back.append(wall + (time.monotonic() - time.time()))  # on the monotonic clock
                    killer = threading.Thread(target=kill_and_restart, daemon=True)
                    killer.start()
                episode = run_robot(client, env, args.seed + i, args.camera_hz, False, executor, clock)
                if killer is not None:
                    killer.join(timeout=120)
                    after = [t for t in episode.resumed_at if back and t >= back[0]]
                    recoveries.append(after[0] - back[0] if after else None)
                taken = CheckedRuntime.taken
                if len(set(taken)) != len(taken) or taken != sorted(taken):
                    raise SystemExit(f"{name}: an action took over twice or after a fresher one: {taken}")
                episodes.append(episode)
                print(f"  {name} episode {i}: success {episode.success}, misses {episode.deadline_misses}, "
                      f"longest gap {episode.longest_gap_s * 1e3:.0f} ms", flush=True)
            time.sleep(0.5)  # let the last messages land before the server's count is read
            try:
                server_stats.append(client.stats())
            except Exception as exc:  # a measurement reports what it could not read
                print(f"  {name}: no server stats ({exc})", flush=True)
            counters = dict(client.counters)
        proxy_counters = proxy.counters
    steps = sum(e.steps for e in episodes)
    fallback_steps = sum(e.control.get("fallback_steps", 0) for e in episodes)
    found = [r for r in recoveries if r is not None]
    return {
        "condition": name, "faults": asdict(faults) if not restart else {"restart_at_s": args.kill_at_s},
        "episodes": len(episodes), "horizon": horizon, "success": sum(e.success for e in episodes),
        "deadline_misses": sum(e.deadline_misses for e in episodes),
        "misses_per_episode": sum(e.deadline_misses for e in episodes) / len(episodes),
        "fallback_share": fallback_steps / steps if steps else 0.0,
        "longest_gap_ms": {"p50": float(np.median([e.longest_gap_s for e in episodes]) * 1e3),
                           "max": float(max(e.longest_gap_s for e in episodes) * 1e3)},
        "actions_applied": sum(e.actions_applied for e in episodes),
        "copies_dropped": counters.get("duplicate_actions", 0) + counters.get("duplicate_events", 0),
        "not_newer": counters.get("not_newer", 0) + sum(e.control.get("not_newer", 0) for e in episodes),
        "expired": sum(e.expired for e in episodes),
        "unaccounted": unaccounted(server_stats[-1]) if server_stats and not restart else None,
        "server_robot_deadline": server_stats[-1]["performance"].get("robot_deadline") if server_stats else None,
        "recovery_ms": ({"p50": float(np.median(found) * 1e3), "max": float(max(found) * 1e3),
                         "resumed": len(found), "restarts": len(recoveries)} if restart else None),
        "client": counters, "proxy": proxy_counters,
    }


def table(rows: list[dict], clean: dict, clean_long: dict | None) -> str:
    lines = ["| condition | success | vs fault-free | misses / episode | steps in fallback | longest gap p50 / max ms "
             "| copies dropped / not newer | unaccounted | recovery p50 / max ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reference = clean_long if r["recovery_ms"] is not None and clean_long else clean
        recovery = (f"{r['recovery_ms']['p50']:.0f} / {r['recovery_ms']['max']:.0f} "
                    f"({r['recovery_ms']['resumed']}/{r['recovery_ms']['restarts']})") if r["recovery_ms"] else "-"
        lines.append(
            f"| {r['condition']} | {r['success']}/{r['episodes']} | {reference['success']}/{reference['episodes']} "
            f"| {r['misses_per_episode']:.2f} | {r['fallback_share']:.1%} | {r['longest_gap_ms']['p50']:.0f} / "
            f"{r['longest_gap_ms']['max']:.0f} | {r['copies_dropped']} / {r['not_newer']} | "
            f"{'-' if r['unaccounted'] is None else r['unaccounted']} | {recovery} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--task", default="push-v3")
    parser.add_argument("--config", default="pipeline-tiny-dp")
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--ttl-ms", type=float, default=250.0)
    parser.add_argument("--deadline-ms", type=float, default=100.0)
    parser.add_argument("--fallback", default="decay", choices=("hold", "decay", "stop"))
    parser.add_argument("--decay-ms", type=float, default=200.0)
    parser.add_argument("--kill-at-s", type=float, default=0.0)
    parser.add_argument("--restart-horizon", type=int, default=1200)
    parser.add_argument("--only", nargs="*", help="Run only these conditions (names as in the table).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    service = f"tcp://127.0.0.1:{free_service_port()}"
    rows = []
    started = time.time()
    with ServerProcess(["-c", args.config], service) as server:
        server.wait_ready(timeout=120)
        plan = [(name, faults, 200, False) for name, faults in conditions()]
        plan += [("clean (long)", Faults(), args.restart_horizon, False), ("restart", Faults(), args.restart_horizon,
                                                                           True)]
        for name, faults, horizon, restart in plan:
            if args.only and name not in args.only:
                continue
            print(f"{name} ...", flush=True)
            rows.append(run_condition(name, faults, args, server, horizon, restart))
    clean = next((r for r in rows if r["condition"] == "clean"), rows[0])
    clean_long = next((r for r in rows if r["condition"] == "clean (long)"), None)
    command = "MUJOCO_GL=egl python scripts/fault_table.py " + " ".join(sys.argv[1:])
    text = table(rows, clean, clean_long)
    print(text)
    print(f"({time.time() - started:.0f} s)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "faults.json").write_text(json.dumps({"command": command, "date": time.strftime("%Y-%m-%d"),
                                                          "settings": vars(args) | {"out": str(args.out)},
                                                          "rows": rows}, indent=2, default=str))
        (args.out / "table.md").write_text(f"`{command}`\n\n{text}\n")


robot_loop.RobotRuntime = CheckedRuntime  # run_robot's control step, checked

if __name__ == "__main__":
    main()
