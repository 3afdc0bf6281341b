"""auras beside LeRobot 0.4.4's async inference server, in one run on loopback: the same SmolVLA checkpoint, the same
simulated robot (Meta-World push-v3), 1, 2 and 4 robots at the same control rate, measured the same way on the robot.

    bash scripts/lerobot_async_env.sh          # once: the LeRobot venv (.tmp/lerobot-ref-venv) with its async extras
    MUJOCO_GL=egl .venv/bin/python scripts/lerobot_async_compare.py --out docs/results/lerobot-async

Setups (``--setups``):

- ``lerobot``: LeRobot's policy server (``lerobot.async_inference.policy_server``, its defaults but the port and
  ``fps``) and its real ``RobotClient`` (``actions_per_chunk`` = the chunk, ``chunk_size_threshold`` 0.5,
  ``weighted_average``). A client's ``Ready`` resets its server, so one server process (and one copy of the model)
  per robot.
- ``lerobot-nofilter``: the same with the server's observation-similarity filter off (huggingface/lerobot#1557;
  scripts/lerobot_async_server.py ``--no-similarity-filter``), so the client's threshold decides when it asks.
- ``lerobot-shared``: every robot against ONE LeRobot server (fleets of 2 or more): what happens when a server
  process is asked to serve more than one robot.
- ``auras``: one ``auras serve --policy smolvla --set policy.checkpoint=DIR --mode auras`` for every robot (one
  frame engine, every robot's frames batched), each robot running ``auras_client``'s control loop with the server's
  strategy (public context; an observation on every control tick).
- ``auras-chunk_blend``: the same server, the robots with ``strategy="chunk_blend"``: LeRobot's client discipline
  (ask when half the chunk is left, blend 0.3 old / 0.7 new).
- ``auras-reset``: ``auras`` whose robots reset their control loop (``RobotControl.reset()``: the server drops the
  last scene's work and context, the robot its chunk) at each episode end; the other setups tell no server of
  episode ends (LeRobot's client has no such call).

The robots are scripts/lerobot_async_robot.py processes (one per robot, started together once every server has
loaded its model); every robot, LeRobot's and auras', sends the task's instruction from ``auras.tasks`` (push-v3:
"push the puck to the green goal", the instruction auras' demonstrations record and tiny-flow was trained with).
The checkpoint is ``--checkpoint DIR`` (a LeRobot SmolVLA checkpoint directory; e.g. the trained tiny-flow exported by
scripts/tiny_flow_to_lerobot.py: ``--checkpoint .tmp/tiny-flow-lerobot/checkpoint``) or, by default,
scripts/lerobot_async_checkpoint.py's random-weight one (made in the LeRobot venv, reused while its recipe is
unchanged). LeRobot's ``actions_per_chunk`` is the checkpoint's ``chunk_size`` unless ``--chunk`` says otherwise.
Writes results.json and table.md to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_HELP = ("build it with `bash scripts/lerobot_async_env.sh` (a few minutes: LeRobot 0.4.4 with its async "
             "extras and Meta-World, in its own venv; LeRobot is never an auras dependency)")
SETUPS = ("lerobot", "lerobot-nofilter", "lerobot-shared", "auras", "auras-chunk_blend", "auras-reset")
START_S = 240.0  # a server or robot that is not ready by then fails the run


def fail(message: str) -> None:
    print(f"lerobot_async_compare: {message}", file=sys.stderr)
    raise SystemExit(2)


def lerobot_python(venv: Path) -> Path:
    """The LeRobot venv's python, or exit with how to build it."""
    python = venv / "bin" / "python"
    if not python.is_file():
        fail(f"no LeRobot venv at {venv} (expected {python}); {VENV_HELP}")
    probe = subprocess.run([str(python), "-c", "import lerobot, grpc, metaworld, mujoco; print(lerobot.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        fail(f"the LeRobot venv at {venv} lacks what this comparison needs ({last}); {VENV_HELP}")
    return python


def free_port() -> int:
    from auras.bridge.transport import free_service_port

    return free_service_port()


def wait_port(process: subprocess.Popen, port: int, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_S
    while True:
        if process.poll() is not None:
            fail(f"{what} exited with status {process.returncode} while starting; its log ({log}) ends:\n"
                 f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            fail(f"{what} did not listen on port {port} within {START_S:.0f} s; log: {log}")
        time.sleep(0.2)


def _tree_sum(pids: list[int], measure) -> float:
    """``measure(process)`` summed over ``pids`` and all their descendants (processes that are gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                total += measure(p)
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss(pids: list[int]) -> int:
    return int(_tree_sum(pids, lambda p: p.memory_info().rss))


def tree_cpu(pids: list[int]) -> float:
    return _tree_sum(pids, lambda p: sum(p.cpu_times()[:2]))  # user + system


def busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_config(setup: str, robots: int, args: argparse.Namespace, lr_python: Path, checkpoint: Path,
               work: Path) -> dict[str, Any]:
    """One setup with ``robots`` robots: start its server(s), start the robots, run them together, stop everything."""
    run_dir = work / f"{setup}-{robots}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    servers: list[subprocess.Popen] = []
    robot_procs: list[subprocess.Popen] = []
    load_before = os.getloadavg()
    ticks = round(args.seconds * args.control_hz) + args.warmup_ticks
    try:
        started = time.monotonic()
        if setup.startswith("lerobot"):
            addresses = []
            # One server process per robot (a client's Ready resets its server), except lerobot-shared: one for all.
            for i in range(1 if setup == "lerobot-shared" else robots):
                port = free_port()
                log = run_dir / f"server-{i}.log"
                command = [str(lr_python), str(HERE / "lerobot_async_server.py"), "--host=127.0.0.1",
                           f"--port={port}", f"--fps={int(args.control_hz)}"]
                if setup == "lerobot-nofilter":
                    command.append("--no-similarity-filter")
                with open(log, "w") as out:
                    servers.append(subprocess.Popen(command, cwd=run_dir, env=env, stdout=out,
                                                    stderr=subprocess.STDOUT))
                wait_port(servers[-1], port, log, f"LeRobot policy server {i}")
                addresses.append(f"127.0.0.1:{port}")
            addresses = addresses * robots if setup == "lerobot-shared" else addresses
            python = lr_python
        else:
            port = free_port()
            log = run_dir / "server.log"
            command = [str(Path(sys.executable).parent / "auras"), "serve", "--policy", "smolvla", "--mode", "auras",
                       "--set", f"policy.checkpoint={checkpoint}", "--bind", f"tcp://127.0.0.1:{port}"]
            with open(log, "w") as out:
                servers.append(subprocess.Popen(command, cwd=run_dir, env=env, stdout=out, stderr=subprocess.STDOUT))
            wait_port(servers[-1], port, log, "auras serve")
            addresses = [f"tcp://127.0.0.1:{port}"] * robots
            python = Path(sys.executable)
        for i in range(robots):
            command = [str(python), str(HERE / "lerobot_async_robot.py"), "--system", setup.split("-")[0],
                       "--server", addresses[i], "--checkpoint", str(checkpoint), "--index", str(i),
                       "--seed", str(args.seed + 100 * i), "--ticks", str(ticks), "--warmup-ticks",
                       str(args.warmup_ticks), "--control-hz", str(args.control_hz), "--stall-s", "10",
                       "--actions-per-chunk",
                       str(args.chunk), "--out", str(run_dir / f"robot-{i}.json")]
            if setup == "auras-chunk_blend":
                command += ["--strategy", "chunk_blend"]
            if setup == "auras-reset":
                command += ["--reset-at-episode-end"]
            log = open(run_dir / f"robot-{i}.log", "w")  # noqa: SIM115  (closed with the process)
            robot_procs.append(subprocess.Popen(command, cwd=run_dir, env=env, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=log, text=True))
        for i, proc in enumerate(robot_procs):  # every robot connected (LeRobot: its server loaded the model)
            line = _readline(proc, START_S)
            if line.strip() != "READY":
                fail(f"{setup} robot {i} did not get ready (said {line!r}); its log: {run_dir / f'robot-{i}.log'}")
        setup_s = time.monotonic() - started
        server_pids = [s.pid for s in servers]
        rss_loaded = tree_rss(server_pids)
        cpu0, busy0, wall0 = tree_cpu(server_pids), busy_cpu_s(), time.monotonic()
        for proc in robot_procs:  # go, all together
            proc.stdin.write("go\n")
            proc.stdin.flush()
        peak = rss_loaded
        while any(p.poll() is None for p in robot_procs):
            peak = max(peak, tree_rss(server_pids))
            time.sleep(0.5)
            if time.monotonic() - wall0 > args.seconds * 4 + 60:
                fail(f"{setup} with {robots} robots ran past {args.seconds * 4 + 60:.0f} s; logs in {run_dir}")
        cpu1, busy1, wall1 = tree_cpu(server_pids), busy_cpu_s(), time.monotonic()
        bad = [i for i, p in enumerate(robot_procs) if p.returncode != 0]
        if bad:
            fail(f"{setup} robots {bad} failed; their logs: {[str(run_dir / f'robot-{i}.log') for i in bad]}")
    finally:
        for proc in robot_procs:
            if proc.poll() is None:
                proc.kill()
        for proc in servers:
            proc.terminate()
        for proc in servers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    reports = [json.loads((run_dir / f"robot-{i}.json").read_text()) for i in range(robots)]
    return summarize(setup, robots, reports, {
        "setup_s": setup_s, "server_processes": len(servers), "server_rss_loaded_mb": rss_loaded / 2**20,
        "server_rss_peak_mb": peak / 2**20, "server_cpu_s": cpu1 - cpu0, "run_wall_s": wall1 - wall0,
        "machine_busy_cpu_s": busy1 - busy0, "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    })


def _readline(proc: subprocess.Popen, timeout_s: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0] if result else "(nothing)"


def summarize(setup: str, robots: int, reports: list[dict], server: dict[str, Any]) -> dict[str, Any]:
    latency = [v for r in reports for v in r["latency_ms"]]
    staleness = [v for r in reports for v in r["staleness_ms"]]
    ticks = sum(r["ticks"] for r in reports)
    idle = sum(r["idle_ticks"] for r in reports)
    rates = [r["chunks"] / r["window_s"] for r in reports if r["window_s"] > 0]
    served = sum(1 for r in reports if r["chunks"] > 0)
    stalled = sum(1 for r in reports if r["stalled"])
    episodes = [e for r in reports for e in r["episodes"]]
    robot_cpu = sum(r["robot_cpu_s"] for r in reports)
    per_robot = []
    for r in reports:
        row = {k: v for k, v in r.items() if not isinstance(v, list) or k == "episodes"}
        for name in ("latency_ms", "request_latency_ms", "server_latency_ms", "staleness_ms"):
            row[f"{name}_p50"], row[f"{name}_p99"] = pct(r[name], 50), pct(r[name], 99)
        per_robot.append(row)
    busy = server["machine_busy_cpu_s"]
    return {
        "setup": setup,
        "robots": robots,
        "latency_ms_p50": pct(latency, 50),
        "latency_ms_p99": pct(latency, 99),
        "chunks": len(latency),
        "foreign_chunks": sum(r["foreign_chunks"] for r in reports),
        "chunks_per_s_per_robot_mean": float(np.mean(rates)) if rates else 0.0,
        "chunks_per_s_per_robot_min": float(np.min(rates)) if rates else 0.0,
        "ticks": ticks,
        "idle_ticks": idle,
        "idle_fraction": idle / ticks if ticks else None,
        "idle_fraction_worst_robot": max((r["idle_ticks"] / r["ticks"] for r in reports if r["ticks"]), default=None),
        "robots_with_chunks": served,
        "robots_stalled": stalled,
        "overruns": sum(r["overruns"] for r in reports),
        "staleness_ms_p50": pct(staleness, 50),
        "staleness_ms_p99": pct(staleness, 99),
        "observations_per_s_per_robot": float(np.mean([r["observations"] / max(r["window_s"], 1e-9)
                                                        for r in reports])),
        "episodes": len(episodes),
        "successes": sum(e["success"] for e in episodes),
        "seeds": sorted(e["seed"] for e in episodes),
        "robot_cpu_s": robot_cpu,
        "other_cpu_s": busy - server["server_cpu_s"] - robot_cpu,  # busy CPU of the machine outside this run
        **server,
        "per_robot": per_robot,
    }


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| setup | robots (with chunks; stalled) | obs->chunk p50 / p99 ms | fresh chunks/s per robot | idle ticks | "
        "staleness p50 / p99 ms | late ticks | server processes | server RSS MB | server CPU cores | "
        "other load cores | success |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setup']} | {r['robots']} ({r['robots_with_chunks']}; {r['robots_stalled']}) | "
            f"{fmt(r['latency_ms_p50'])} / {fmt(r['latency_ms_p99'])} | "
            f"{fmt(r['chunks_per_s_per_robot_mean'], 1)} | {r['idle_ticks']}/{r['ticks']} "
            f"({fmt(100 * r['idle_fraction'], 1)}%) | {fmt(r['staleness_ms_p50'])} / {fmt(r['staleness_ms_p99'])} | "
            f"{r['overruns']} | {r['server_processes']} | {fmt(r['server_rss_peak_mb'])} | "
            f"{fmt(r['server_cpu_s'] / r['run_wall_s'], 2)} | {fmt(max(0.0, r['other_cpu_s']) / r['run_wall_s'], 2)} | "
            f"{r['successes']}/{r['episodes']} |"
        )
    return "\n".join(lines)


def same_seeds(rows: list[dict]) -> list[dict]:
    """Success of every row on the seeds that every row of its fleet size finished (rows of one fleet finish
    different numbers of episodes: a success ends an episode early), so setups are compared episode for episode."""
    out = []
    for robots in sorted({r["robots"] for r in rows}):
        fleet = [r for r in rows if r["robots"] == robots]
        runs = {r["setup"]: {e["seed"]: bool(e["success"]) for p in r["per_robot"] for e in p["episodes"]}
                for r in fleet}
        common = sorted(set.intersection(*(set(v) for v in runs.values())))
        out.append({"robots": robots, "seeds": common,
                    "successes": {setup: sum(v[s] for s in common) for setup, v in runs.items()},
                    "by_seed": {setup: [int(v[s]) for s in common] for setup, v in runs.items()}})
    return out


def same_seeds_table(summary: list[dict]) -> str:
    setups = list(dict.fromkeys(s for row in summary for s in row["successes"]))
    lines = ["| robots | seeds every setup finished | " + " | ".join(setups) + " |",
             "|---|---|" + "---|" * len(setups)]
    for row in summary:
        n = len(row["seeds"])
        cells = [f"{row['successes'][s]}/{n}" if s in row["successes"] else "-" for s in setups]
        lines.append(f"| {row['robots']} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(out: Path, result: dict) -> str:
    """table.md: the run's table, then success on the seeds every setup of a fleet finished."""
    result["same_seeds"] = same_seeds(result["rows"])
    text = (table(result["rows"]) + "\n\nSuccess on the same seeds (the episodes every setup of the fleet size "
            "finished):\n\n" + same_seeds_table(result["same_seeds"]))
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "table.md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--robots", default="1,2,4", help="fleet sizes, comma-separated")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per robot and configuration")
    ap.add_argument("--warmup-ticks", type=int, default=30, help="ticks before the measured window")
    ap.add_argument("--control-hz", type=float, default=30.0)
    ap.add_argument("--chunk", type=int, default=None,
                    help="LeRobot's actions_per_chunk (default: the checkpoint's chunk_size)")
    ap.add_argument("--seed", type=int, default=0, help="robot i runs episodes on seeds seed + 100 i, + 1, ...")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="a LeRobot SmolVLA checkpoint directory both systems load (default: a random-weight one made "
                    "by scripts/lerobot_async_checkpoint.py)")
    ap.add_argument("--lerobot-venv", type=Path, default=REPO / ".tmp" / "lerobot-ref-venv")
    ap.add_argument("--work", type=Path, default=REPO / ".tmp" / "lerobot-async")
    ap.add_argument("--out", type=Path, help="write results.json and table.md here")
    ap.add_argument("--retable", action="store_true", help="only rewrite --out's table.md (and the same-seed "
                    "summary in its results.json) from its results.json")
    args = ap.parse_args(argv)
    if args.retable:
        if not args.out or not (args.out / "results.json").is_file():
            fail("--retable needs --out DIR holding a results.json")
        print(write_tables(args.out, json.loads((args.out / "results.json").read_text())))
        return 0
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = sorted(set(setups) - set(SETUPS))
    if unknown:
        fail(f"--setups: unknown {unknown}; choose from {list(SETUPS)}")
    fleet = [int(n) for n in args.robots.split(",")]
    lr_python = lerobot_python(args.lerobot_venv.resolve())
    os.environ.setdefault("MUJOCO_GL", "egl")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        made = subprocess.run(
            [str(lr_python), str(HERE / "lerobot_async_checkpoint.py"), "--out", str(work / "checkpoint")],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if made.returncode != 0:
            fail(f"making the checkpoint failed:\n{made.stderr[-3000:]}")
        recipe = json.loads(made.stdout.strip().splitlines()[-1])
        checkpoint = Path(recipe["checkpoint"])
        weights = "random weights"
        print(f"checkpoint {checkpoint} ({recipe['parameters']} parameters, random weights, "
              f"{'reused' if recipe['reused'] else 'made'})", flush=True)
    else:
        checkpoint = args.checkpoint.resolve()
        if not (checkpoint / "config.json").is_file() or not (checkpoint / "model.safetensors").is_file():
            fail(f"--checkpoint {checkpoint}: expected a LeRobot SmolVLA checkpoint directory (config.json, "
                 "model.safetensors and the saved processors)")
        export = checkpoint.parent / "export.json"  # scripts/tiny_flow_to_lerobot.py's record, if it made it
        recipe = {"checkpoint": str(checkpoint), **(json.loads(export.read_text()) if export.is_file() else {})}
        weights = "trained tiny-flow" if export.is_file() else f"the checkpoint {checkpoint}"
        print(f"checkpoint {checkpoint} ({weights})", flush=True)
    recipe["config"] = {k: v for k, v in json.loads((checkpoint / "config.json").read_text()).items()
                        if k in ("chunk_size", "n_action_steps", "num_steps", "vlm_model_name")}
    if args.chunk is None:
        args.chunk = int(recipe["config"]["chunk_size"])
    began, load0 = time.time(), os.getloadavg()
    rows = []
    for robots in fleet:
        for setup in setups:  # interleaved, so drifting background load touches every setup alike
            if setup == "lerobot-shared" and robots < 2:
                continue
            row = run_config(setup, robots, args, lr_python, checkpoint, work)
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        versions = subprocess.run(
            [str(lr_python), "-c", "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
             "('lerobot', 'torch', 'grpcio', 'transformers', 'mujoco', 'metaworld')}))"],
            capture_output=True, text=True).stdout.strip()
        import importlib.metadata as md

        result = {
            "what": f"auras serve beside LeRobot 0.4.4's async inference server: same SmolVLA checkpoint ({weights}), "
                    "same simulated robot (Meta-World push-v3), measured on the robot",
            "command": "MUJOCO_GL=egl .venv/bin/python scripts/lerobot_async_compare.py "
                       + " ".join(argv or sys.argv[1:]),
            "date": datetime.date.today().isoformat(),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version()},
            "versions": {"lerobot_venv": json.loads(versions) if versions else None,
                         "auras_venv": {p: md.version(p) for p in ("auras", "torch", "transformers", "mujoco",
                                                                   "metaworld", "pyzmq")}},
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "checkpoint": recipe,
            "instructions": sorted({r.get("instruction") for row in rows for r in row["per_robot"]} - {None}),
            "loadavg_start": list(load0),
            "loadavg_end": list(os.getloadavg()),
            "wall_s": time.time() - began,
            "rows": rows,
        }
        print(write_tables(args.out, result).split(text, 1)[1].strip())
        print(f"wrote {args.out / 'results.json'} and {args.out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
