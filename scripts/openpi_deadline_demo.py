"""A robot script written for openpi, with the real openpi-client, against `auras serve --protocol openpi`
while the server is killed (SIGKILL) and restarted: openpi's ``ActionChunkBroker`` versus
``auras_client.openpi.DeadlinePolicy`` wrapping the same ``WebsocketClientPolicy``.

    python scripts/openpi_deadline_demo.py [--venv DIR] [--out result.json] [--hz 50] [--kill-at 1.5] \\
        [--down-s 1.5] [--tail-s 1.5] [--fallback decay --decay-s 0.3] [--deadline-s 0.25] [--strategy none]

openpi-client pins numpy < 2, so the robot runs in a separate virtual environment (``--venv``, made there
if it has no openpi_client yet: ``pip install openpi-client typing_extensions clients/python``; an existing
one gets this checkout's auras-client reinstalled). For each robot (``deadline``, then ``broker``) the
script starts ``auras serve --protocol openpi --policy tiny-dp``, runs the robot loop at ``--hz`` inside
that venv, kills the server ``--kill-at`` seconds after the robot's first row from it, restarts it
``--down-s`` later on the same port, stops the robot ``--tail-s`` after it resumed (the broker: after the
server answers again) and reports what the robot saw: for the DeadlinePolicy its deadline misses, time in
the fallback, longest gap without a fresh row, time from the server answering /healthz again to the first
fresh row, and whether every row during the gap was the fallback's; for the broker what its ``infer`` did
(how long it blocked, what it raised, whether it ever recovered). The robot side of the script is this
file too (``robot`` as first argument, run by the venv's python).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "python"
PROMPT = "push the puck to the goal"


# -- the robot (runs inside the openpi venv: numpy < 2, openpi_client, auras_client) -----------------------
def robot_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="openpi_deadline_demo.py robot")
    parser.add_argument("--mode", choices=("deadline", "broker"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--deadline-s", type=float, default=0.25)
    parser.add_argument("--fallback", default="decay")
    parser.add_argument("--decay-s", type=float, default=0.3)
    parser.add_argument("--strategy", default="none")
    parser.add_argument("--queue-threshold", type=float, default=0.0)
    parser.add_argument("--trace", required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import openpi_client
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(4)]

    def observation(t: int) -> dict:  # openpi's LIBERO example: 224 px HWC uint8 images, state, prompt
        return {"observation/image": frames[t % 4], "observation/wrist_image": frames[(t + 1) % 4],
                "observation/state": np.full(4, 0.01 * (t % 100), np.float32), "prompt": PROMPT}

    first = WebsocketClientPolicy("127.0.0.1", args.port)
    metadata = first.get_server_metadata()
    action_dim = int(metadata["action_shape"][-1])
    trace: dict[str, Any] = {"mode": args.mode, "metadata": metadata, "hz": args.hz, "horizon": args.horizon,
                             "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                                          "openpi_client": _version("openpi-client"),
                                          "websockets": _version("websockets")},
                             "openpi_client_file": openpi_client.__file__}
    if args.mode == "deadline":
        trace.update(_run_deadline(args, first, action_dim, observation, WebsocketClientPolicy))
    else:
        trace.update(_run_broker(args, first, observation))
    Path(args.trace).write_text(json.dumps(trace))
    print("DONE", flush=True)


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _ticks(hz: float, seconds: float):
    """Control ticks at ``hz`` until a line on stdin says stop, ``seconds`` at most (a late tick runs at once,
    the next keeps the schedule)."""
    stop = threading.Event()

    def listen() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=listen, daemon=True).start()
    start = time.monotonic()
    print("STARTED", start, flush=True)
    t = 0
    while t < seconds * hz and not stop.is_set():
        yield t
        t += 1
        time.sleep(max(0.0, start + t / hz - time.monotonic()))


def _run_deadline(args, first, action_dim, observation, WebsocketClientPolicy) -> dict:
    import numpy as np

    from auras_client.openpi import DeadlinePolicy
    from auras_client.runtime import Fallback

    made, calls, connects = [first], [], []

    class Recorded:  # the real WebsocketClientPolicy, each call's times and outcome noted for the report
        def __init__(self, policy) -> None:
            self.policy = policy

        def infer(self, obs: dict) -> dict:
            call = {"start": time.monotonic()}
            calls.append(call)
            try:
                return self.policy.infer(obs)
            except Exception as exc:
                call["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:200]
                raise
            finally:
                call["end"] = time.monotonic()

        def reset(self) -> None:
            self.policy.reset()

    def connect():  # the first connection is the one the metadata came from; then a new one per reconnect
        at = time.monotonic()
        try:
            policy = made.pop() if made else WebsocketClientPolicy("127.0.0.1", args.port)
        except Exception as exc:
            connects.append({"at": at, "error": f"{type(exc).__name__}: {exc}"[:200]})
            raise
        connects.append({"at": at, "connected": time.monotonic()})
        return Recorded(policy)

    class Clock:  # the robot's monotonic clock; ``last`` is the time the row of the last tick was decided at
        last = 0.0

        def __call__(self) -> float:
            self.last = time.monotonic()
            return self.last

    clock = Clock()
    fallback = Fallback(args.fallback, decay_s=args.decay_s, rest=(0.0,) * action_dim)  # tiny-dp: delta control
    policy = DeadlinePolicy(connect, args.hz, action_dim=action_dim, chunk_horizon=args.horizon,
                            deadline_s=args.deadline_s, fallback=fallback, strategy=args.strategy,
                            queue_threshold=args.queue_threshold, clock=clock)
    assert policy.wait_connected(30), "no connection to the server"
    counters = policy.runtime.stats
    ticks, error = [], None
    try:
        for t in _ticks(args.hz, args.seconds):
            before = (counters.fallback_steps, counters.held_steps, counters.idle_steps)
            began = time.monotonic()
            row = policy.infer(observation(t))["actions"]
            took = time.monotonic() - began
            counters = policy.runtime.stats  # (the same object unless reset)
            if counters.fallback_steps > before[0]:
                kind = "fallback"
            elif counters.held_steps > before[1]:
                kind = "held"
            elif counters.idle_steps > before[2]:
                kind = "startup"
            else:
                kind = "fresh"
            if kind == "fresh" and not any(tick["kind"] == "fresh" for tick in ticks[-1:]):
                print("RESUMED" if ticks and ticks[-1]["kind"] == "fallback" else "FRESH", clock.last, flush=True)
            ticks.append({"t": t, "now": clock.last, "infer_s": took, "kind": kind,
                          "row": np.asarray(row, np.float64).tolist()})
    except Exception as exc:  # the contract says this never happens: record it for the report
        error = {"type": type(exc).__name__, "message": str(exc)[:300]}
    finally:
        stats = policy.stats()
        policy.close()
    return {"ticks": ticks, "stats": stats, "exception": error, "resumed_at": list(counters.resumed_at),
            "calls": calls, "connects": connects,
            "config": {"deadline_s": args.deadline_s, "fallback": args.fallback, "decay_s": args.decay_s,
                       "strategy": args.strategy, "queue_threshold": args.queue_threshold},
            "fallback_check": _check_fallback(ticks, fallback, args.deadline_s, action_dim)}


def _check_fallback(ticks: list[dict], fallback, deadline_s: float, action_dim: int) -> dict:
    """Every fallback row against the fallback's own rule: from the row applied before the fallback, at the
    time into the fallback (the gap starts at the first tick without a fresh row)."""
    import numpy as np

    rest = fallback.rest_row(action_dim)
    checked, mismatches, gap_start, last = 0, [], None, None
    for i, tick in enumerate(ticks):
        if tick["kind"] in ("fresh", "startup"):
            gap_start = None
            continue
        if gap_start is None:
            gap_start = tick["now"]
        if tick["kind"] == "held":
            continue
        if ticks[i - 1]["kind"] != "fallback":
            last = np.asarray(ticks[i - 1]["row"], np.float32)
        expected = fallback.row(last, rest, tick["now"] - gap_start - deadline_s)
        checked += 1
        if not np.allclose(tick["row"], expected, atol=1e-5):
            mismatches.append({"t": tick["t"], "row": tick["row"], "expected": np.asarray(expected).tolist()})
    return {"rows_checked": checked, "mismatches": mismatches[:5], "all_equal": checked > 0 and not mismatches}


def _run_broker(args, first, observation) -> dict:
    from openpi_client.action_chunk_broker import ActionChunkBroker

    broker = ActionChunkBroker(first, action_horizon=args.horizon)
    ticks, errors = [], []
    for t in _ticks(args.hz, args.seconds):
        began = time.monotonic()
        try:
            row = broker.infer(observation(t))["actions"]
            if not ticks:
                print("FRESH", time.monotonic(), flush=True)
            ticks.append({"t": t, "now": began, "infer_s": time.monotonic() - began, "ok": True,
                          "row": [float(v) for v in row]})
        except Exception as exc:
            took = time.monotonic() - began
            ticks.append({"t": t, "now": began, "infer_s": took, "ok": False})
            errors.append({"t": t, "at": began, "infer_s": took, "type": f"{type(exc).__module__}.{type(exc).__name__}",
                           "message": str(exc)[:300]})
    return {"ticks": ticks, "errors": errors[:3], "error_count": len(errors),
            "error_types": sorted({e["type"] for e in errors})}


# -- the demo (runs in auras' environment: starts and kills the server) -----------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=None,
                        help="the openpi robot venv (made if it lacks openpi_client; default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--policy", default="tiny-dp")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="each robot loop's longest run")
    parser.add_argument("--tail-s", type=float, default=1.5,
                        help="seconds the robot runs on after it resumed (the broker: after the server is back)")
    parser.add_argument("--hz", type=float, default=50.0, help="the control rate")
    parser.add_argument("--horizon", type=int, default=8,
                        help="rows of each chunk the robot runs (openpi's action_horizon; tiny-dp's execute_steps)")
    parser.add_argument("--kill-at", type=float, default=1.5,
                        help="seconds after the robot's first row from the server to SIGKILL the server")
    parser.add_argument("--down-s", type=float, default=1.5, help="seconds before the server is started again")
    parser.add_argument("--deadline-s", type=float, default=0.25)
    parser.add_argument("--fallback", default="decay", choices=("hold", "decay", "stop"))
    parser.add_argument("--decay-s", type=float, default=0.3)
    parser.add_argument("--strategy", default="none", choices=("none", "chunk_blend"))
    parser.add_argument("--queue-threshold", type=float, default=0.0, help="chunk_blend: 0 asks when a chunk ran out")
    parser.add_argument("--modes", default="deadline,broker", help="which robots to run, in order")
    return parser.parse_args(argv)


def ensure_venv(venv: Path, log=print) -> Path:
    """The robot venv's python, with openpi-client and this checkout's auras-client installed."""
    python = venv / "bin" / "python"
    has_openpi = python.exists() and subprocess.run(
        [str(python), "-c", "import openpi_client.websocket_client_policy, auras_client"],
        capture_output=True).returncode == 0
    if has_openpi:  # reused: this checkout's auras-client, in case it changed
        command = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(CLIENT)]
    else:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # openpi-client 0.1.2 imports typing_extensions without declaring it
        command = [str(python), "-m", "pip", "install", "--quiet", "openpi-client", "typing_extensions", str(CLIENT)]
    log(f"venv {venv}: {'reusing' if has_openpi else 'installing'}: {' '.join(command[3:])}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"pip failed in {venv}:\n{done.stdout}\n{done.stderr}")
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"pip check failed in {venv}:\n{check.stdout}{check.stderr}")
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`auras serve --protocol openpi` as a child process, killed and restarted on the same port."""

    def __init__(self, policy: str, port: int, log_path: Path) -> None:
        self.policy, self.port, self.log_path = policy, port, log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 120.0) -> float:
        """Start it; the monotonic time /healthz first answered."""
        self.starts += 1
        log = open(self.log_path, "a")  # noqa: SIM115 (the child writes to it)
        log.write(f"--- start {self.starts} at {time.monotonic():.3f}\n")
        log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "auras.cli", "serve", "--protocol", "openpi", "--bind",
                                      f"ws://127.0.0.1:{self.port}", "--policy", self.policy],
                                     env=dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl")),
                                     stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic()
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not come up:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.02)

    def kill(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        self.proc.wait(timeout=30)
        return at

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def run_robot(python: Path, mode: str, args: argparse.Namespace, work: Path, log=print) -> dict:
    """One robot loop against a server killed and restarted mid-run; the robot's trace and the server times."""
    port = free_port()
    server = Server(args.policy, port, work / f"server-{mode}.log")
    trace_path = work / f"trace-{mode}.json"
    try:
        first_ready = server.start()
        command = [str(python), str(Path(__file__).resolve()), "robot", "--mode", mode, "--port", str(port),
                   "--seconds", str(args.max_seconds), "--hz", str(args.hz), "--horizon", str(args.horizon),
                   "--deadline-s", str(args.deadline_s), "--fallback", args.fallback, "--decay-s", str(args.decay_s),
                   "--strategy", args.strategy, "--queue-threshold", str(args.queue_threshold),
                   "--trace", str(trace_path)]
        robot = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, cwd=work,
                                 env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
        lines: queue.Queue[str] = queue.Queue()
        output: list[str] = []

        def read() -> None:
            for line in robot.stdout:  # type: ignore[union-attr]
                output.append(line)
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def wait_for(word: str, timeout_s: float, after: float = 0.0) -> float | None:
            """The time (>= ``after``) on the robot's line starting with ``word``; None if none came in time."""
            end = time.monotonic() + timeout_s
            while True:
                try:
                    line = lines.get(timeout=max(0.0, end - time.monotonic()))
                except queue.Empty:
                    return None
                if line.startswith(word) and float(line.split()[1]) >= after:
                    return float(line.split()[1])

        started = wait_for("STARTED", 60)
        fresh = None if started is None else wait_for("FRESH", 60)
        if fresh is None:
            robot.kill()
            raise SystemExit(f"the {mode} robot never started or got no action:\n{''.join(output)}")
        time.sleep(max(0.0, fresh + args.kill_at - time.monotonic()))
        killed_at = server.kill()
        log(f"{mode}: first row {fresh - started:.2f} s into the loop, server killed {killed_at - fresh:.2f} s later")
        time.sleep(args.down_s)
        restarted_at = time.monotonic()
        ready_at = server.start()
        log(f"{mode}: server restarted, /healthz after {ready_at - restarted_at:.2f} s")
        if mode == "deadline":
            wait_for("RESUMED", max(0.0, started + args.max_seconds - time.monotonic()), after=ready_at)
            time.sleep(args.tail_s)
        else:
            time.sleep(args.tail_s)
        with contextlib.suppress(OSError):
            robot.stdin.write("stop\n")  # type: ignore[union-attr]
            robot.stdin.flush()  # type: ignore[union-attr]
        try:
            robot.wait(timeout=120)
        except subprocess.TimeoutExpired:
            robot.kill()
            raise SystemExit(f"the {mode} robot did not finish:\n{''.join(output)}") from None
        reader.join(timeout=5)
    finally:
        server.stop()
    if robot.returncode != 0 or not trace_path.exists():
        raise SystemExit(f"the {mode} robot failed ({robot.returncode}):\n{''.join(output)}")
    trace = json.loads(trace_path.read_text())
    trace["server"] = {"first_ready_at": first_ready, "loop_started_at": started, "first_row_at": fresh,
                       "first_row_s": fresh - started, "killed_at": killed_at,
                       "restarted_at": restarted_at, "ready_at": ready_at,
                       "boot_s": ready_at - restarted_at, "down_s": ready_at - killed_at}
    return trace


def summarize_deadline(trace: dict) -> dict:
    server, stats, ticks = trace["server"], trace["stats"], trace["ticks"]
    budget = 1.0 / trace["hz"]
    killed, ready = server["killed_at"], server["ready_at"]
    after_kill = [t for t in ticks if t["now"] >= killed]
    first_fallback = next((t["now"] for t in after_kill if t["kind"] == "fallback"), None)
    resumed = [r for r in trace["resumed_at"] if r >= ready]
    infer_ms = sorted(t["infer_s"] * 1e3 for t in ticks)
    return {
        "ticks": len(ticks),
        "exception": trace["exception"],
        "deadline_misses": stats["deadline_misses"],
        "fallback_s": round(stats["fallback_s"], 3),
        "fallback_ticks": stats["fallback_steps"],
        "longest_gap_s": round(stats["longest_gap_s"], 3),
        "server_down_s": round(server["down_s"], 3),
        "server_boot_s": round(server["boot_s"], 3),
        "fallback_began_after_kill_s": None if first_fallback is None else round(first_fallback - killed, 3),
        "resumed_after_server_back_s": round(resumed[0] - ready, 3) if resumed else None,
        "resumed_after_kill_s": round(resumed[0] - killed, 3) if resumed else None,
        "fresh_ticks_after_resume": sum(1 for t in ticks if resumed and t["now"] >= resumed[0] and
                                        t["kind"] == "fresh"),
        "fallback_rows_equal_the_fallbacks": trace["fallback_check"]["all_equal"],
        "fallback_rows_checked": trace["fallback_check"]["rows_checked"],
        "fallback_mismatches": trace["fallback_check"]["mismatches"],
        "infer_ms_max": round(infer_ms[-1], 3) if infer_ms else None,
        "infer_ms_p99": round(infer_ms[int(0.99 * (len(infer_ms) - 1))], 3) if infer_ms else None,
        "ticks_over_budget": sum(1 for t in ticks if t["infer_s"] > budget),
        "requests": stats["requests"], "errors": stats["errors"], "connect_errors": stats["connect_errors"],
        "reconnects": stats["reconnects"], "actions_applied": stats["actions_applied"],
        "expired": stats["expired"], "last_error": stats["last_error"],
        "timeline_from_kill_s": {  # the worker's requests and connection attempts around the outage
            "requests": [{"sent": round(c["start"] - killed, 3), "answered": round(c.get("end", killed) - killed, 3),
                          **({"error": c["error"]} if "error" in c else {})}
                         for c in trace["calls"] if c.get("end", killed) >= killed - 0.3][:6],
            "connects": [{"at": round(c["at"] - killed, 3), **({"error": c["error"][:60]} if "error" in c else
                                                                {"took_s": round(c["connected"] - c["at"], 3)})}
                         for c in trace["connects"]],
            "server_back": round(ready - killed, 3),
        },
    }


def summarize_broker(trace: dict) -> dict:
    server, ticks, errors = trace["server"], trace["ticks"], trace["errors"]
    budget = 1.0 / trace["hz"]
    killed, ready = server["killed_at"], server["ready_at"]
    first_error = errors[0] if errors else None
    ok_after_kill = [t for t in ticks if t["ok"] and t["now"] >= killed]
    before_kill = [t for t in ticks if t["now"] < killed]
    return {
        "ticks": len(ticks),
        "ticks_over_budget_before_kill": sum(1 for t in before_kill if t["infer_s"] > budget),
        "ticks_before_kill": len(before_kill),
        "infer_ms_max_before_kill": round(max((t["infer_s"] for t in before_kill), default=0) * 1e3, 3),
        "rows_after_kill_before_first_error": sum(1 for t in ok_after_kill
                                                  if first_error is None or t["now"] < first_error["at"]),
        "first_error": None if first_error is None else {
            "type": first_error["type"], "message": first_error["message"], "tick": first_error["t"],
            "call_began_after_kill_s": round(first_error["at"] - killed, 3),
            "raised_after_kill_s": round(first_error["at"] + first_error["infer_s"] - killed, 3)},
        "error_count": trace["error_count"],
        "error_types": trace["error_types"],
        "rows_after_server_back": sum(1 for t in ticks if t["ok"] and t["now"] >= ready),
        "calls_after_server_back": sum(1 for t in ticks if t["now"] >= ready),
        "recovered": any(t["ok"] and t["now"] >= ready for t in ticks),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="openpi-deadline-") as tmp:
        work = Path(tmp)
        python = ensure_venv(args.venv if args.venv is not None else work / "venv")
        result: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            trace = run_robot(python, mode, args, work)
            result.setdefault("versions", trace["versions"])
            result.setdefault("metadata", trace["metadata"])
            result[mode] = summarize_deadline(trace) if mode == "deadline" else summarize_broker(trace)
            result[mode]["server"] = {k: round(v, 3) for k, v in trace["server"].items()
                                      if k in ("boot_s", "down_s", "first_row_s")}
            logs = work / f"server-{mode}.log"
            result[mode]["server_log_tail"] = logs.read_text()[-1500:].splitlines()[-12:]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "robot":
        robot_main(sys.argv[2:])
    else:
        main()
