"""One simulated robot of scripts/lerobot_async_compare.py, driven either by LeRobot 0.4.4's real async
``RobotClient`` (run with the LeRobot venv's python) or by the auras robot client's control loop
(``RobotClient.control``; run with auras' python), against the same Meta-World push-v3 simulation and the same
measurements.

The robot: auras' Meta-World env (``auras.envs.make_env("push-v3")``: an 84x84 front camera, a 4-dim state, 4-dim
actions), stepped once per control tick at ``--control-hz``. A camera frame is rendered only when the client asks
for an observation. On a tick where the client has no chunk row to run (LeRobot: an empty action queue; auras: no
fresh row, i.e. before the first chunk, past a chunk's end or in the fallback) the tick is *idle*: LeRobot's robot
stands still (zero displacement), auras' runs its deadline rule. Episodes are ``--horizon`` ticks (sooner on
success) on seeds ``--seed``, ``--seed``+1, ...; the server is not told of episode ends on either side.

Measured on the robot's clock (``time.time()`` in this process, the clock both clients stamp observations with):

- obs->chunk latency: for every chunk received, its receipt time minus the capture stamp of the newest
  observation it was computed from (LeRobot: its one observation; auras: the action's ``context_stamp``);
- fresh chunks: chunks received (LeRobot) and actions that took over (auras) per second;
- idle ticks: ticks without a chunk row to run;
- staleness: on every tick that runs a chunk row, now minus the capture stamp of that chunk's newest input.

Only ticks from ``--warmup-ticks`` on (and chunks received after that tick began) are counted; the first
inferences of a freshly loaded model are excluded on both sides. Waits for a line on stdin (the start signal of the
comparison script) after printing ``READY``, so every robot of a run starts its clock together; writes its report
as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

REPO = Path(__file__).resolve().parent.parent
JOINTS = ("x.pos", "y.pos", "z.pos", "gripper.pos")  # the 4-dim state / action, named for LeRobot's features


def make_env(task: str) -> Any:
    """auras' env of ``task``; in the LeRobot venv (where auras is not installed) auras' env package is loaded from
    the repository's ``envs/`` folder under its installed name ``auras.envs``."""
    try:
        from auras.envs import make_env as make
    except ModuleNotFoundError:
        sys.path.insert(0, str(REPO))
        spec = importlib.util.spec_from_file_location("auras.envs", REPO / "envs" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "envs")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["auras.envs"] = module
        spec.loader.exec_module(module)
        make = module.make_env
    return make(task)


class Recorder:
    """The measurements above, shared by both clients (thread-safe: chunks arrive on the client's receiver thread)."""

    def __init__(self, warmup_ticks: int) -> None:
        self.warmup_ticks = warmup_ticks
        self.lock = threading.Lock()
        self.tick = 0  # ticks begun
        self.window_start: float | None = None  # time.time() when tick warmup_ticks began
        self.window_end = 0.0
        self.cpu_start = self.cpu_s = 0.0  # this process's CPU time in the window (the robot and its client)
        self.latency_ms: list[float] = []
        self.request_latency_ms: list[float] = []  # auras: receipt - capture of the observation the chunk answers
        self.server_latency_ms: list[float] = []  # auras: the server's own admission -> action time (its header)
        self.staleness_ms: list[float] = []
        self.fresh_ticks = self.idle_ticks = self.overruns = 0
        self.chunks = 0  # chunks received in the window
        self.foreign_chunks = 0  # of them, computed from an observation this robot did not send
        self.taken_over = 0  # auras: actions that took over in the window
        self.observations = 0  # observations sent in the window
        self.closed = False  # past the last tick: nothing more is counted
        self.go = 0.0  # time.time() of the start signal
        self.finished = threading.Event()  # the control loop ended by itself

    def begin_tick(self) -> None:
        with self.lock:
            if self.closed:
                return
            if self.tick == self.warmup_ticks:
                self.window_start = time.time()
                self.cpu_start = time.process_time()
            self.tick += 1

    @property
    def counting(self) -> bool:
        return self.window_start is not None and not self.closed

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.window_end = time.time()
            self.cpu_s = time.process_time() - self.cpu_start

    def chunk(self, capture_stamp: float, request_stamp: float | None = None, server_ms: Any = None) -> None:
        now = time.time()
        with self.lock:
            if not self.counting:
                return
            self.chunks += 1
            self.latency_ms.append((now - capture_stamp) * 1e3)
            if request_stamp is not None:
                self.request_latency_ms.append((now - request_stamp) * 1e3)
            if isinstance(server_ms, int | float):
                self.server_latency_ms.append(float(server_ms))

    def ran(self, fresh: bool, capture_stamp: float | None = None) -> None:
        with self.lock:
            if not self.counting:
                return
            if fresh:
                self.fresh_ticks += 1
                if capture_stamp is not None:
                    self.staleness_ms.append((time.time() - capture_stamp) * 1e3)
            else:
                self.idle_ticks += 1

    def observed(self) -> None:
        with self.lock:
            if self.counting:
                self.observations += 1

    def summary(self) -> dict[str, Any]:
        end = self.window_end if self.closed else time.time()
        seconds = end - self.window_start if self.window_start is not None else 0.0
        return {
            "window_s": seconds,
            "robot_cpu_s": self.cpu_s,
            "ticks": self.fresh_ticks + self.idle_ticks,
            "fresh_ticks": self.fresh_ticks,
            "idle_ticks": self.idle_ticks,
            "overruns": self.overruns,
            "chunks": self.chunks,
            "foreign_chunks": self.foreign_chunks,
            "taken_over": self.taken_over,
            "observations": self.observations,
            "latency_ms": self.latency_ms,
            "request_latency_ms": self.request_latency_ms,
            "server_latency_ms": self.server_latency_ms,
            "staleness_ms": self.staleness_ms,
        }


class SimRobot:
    """The simulated robot both clients drive: ``observe`` renders a frame, ``apply`` steps the simulation."""

    def __init__(self, task: str, first_seed: int, horizon: int, recorder: Recorder) -> None:
        self.env = make_env(task)
        self.env.horizon = horizon
        self.instruction = self.env.instruction
        self.recorder = recorder
        self.seed = first_seed
        self.episodes: list[dict[str, Any]] = []
        self._steps = 0
        self._success = False
        self.episode_ended = False  # set by apply when an episode ends; the client may reset on it
        self.env.reset(seed=self.seed)

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        obs = self.env.observe()
        self.recorder.observed()
        return obs["image"], np.asarray(obs["state"], np.float32)

    def apply(self, row: np.ndarray) -> None:
        _, terminated, truncated, info = self.env.advance(np.clip(np.asarray(row, np.float32), -1.0, 1.0))
        self._steps += 1
        self._success = self._success or bool(info["success"])
        if terminated or truncated:
            self.episodes.append({"seed": self.seed, "success": self._success, "steps": self._steps})
            self.episode_ended = True
            self.seed, self._steps, self._success = self.seed + 1, 0, False
            self.env.reset(seed=self.seed)

    def close(self) -> None:
        self.env.close()


def wait_for_start(args: argparse.Namespace, sim: SimRobot, rec: Recorder) -> None:
    """Say READY, wait for the start line, then arm the watchdog: a client whose control loop stops (blocked in
    a call to its server) is reported as stalled, with what it measured until then, ``--stall-s`` past its run."""
    print("READY", flush=True)
    sys.stdin.readline()
    rec.go = time.time()
    limit = args.ticks / args.control_hz + args.stall_s

    def watchdog() -> None:
        if rec.finished.wait(limit):
            return
        with rec.lock:
            if rec.window_start is None:  # stalled before the window: it would have begun warmup_ticks in
                rec.window_start = rec.go + args.warmup_ticks / args.control_hz
                rec.cpu_start = time.process_time()
        rec.close()
        rec.overruns = max(0, round((time.time() - rec.go) * args.control_hz) - rec.tick)
        write_report(args, sim, rec, {"stalled": True, "stalled_after_ticks": rec.tick})
        os._exit(0)  # the control loop is blocked inside the client: nothing else can end it

    threading.Thread(target=watchdog, daemon=True).start()


def write_report(args: argparse.Namespace, sim: SimRobot, rec: Recorder, extra: dict[str, Any]) -> None:
    report = {"system": args.system, "index": args.index, "instruction": sim.instruction, **rec.summary(),
              "episodes": sim.episodes,
              "stalled": False, **extra}
    args.out.write_text(json.dumps(report))


def run_lerobot(args: argparse.Namespace, sim: SimRobot, rec: Recorder) -> dict[str, Any]:
    """LeRobot's own RobotClient (control loop + action receiver threads) with ``sim`` as its robot."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import smolvla_reference  # noqa: F401  (offline env vars and the torchvision shim, before lerobot imports)
    import torch

    torch.set_num_threads(1)
    import lerobot.async_inference.robot_client as rc
    from lerobot.async_inference.configs import RobotClientConfig

    height, width = sim.env.image_size, sim.env.image_size

    class LeRobotSim:
        """A LeRobot ``Robot`` (the duck type RobotClient uses) over the simulation."""

        name = "auras-metaworld-sim"
        observation_features: ClassVar[dict] = {**dict.fromkeys(JOINTS, float), "front": (height, width, 3)}
        action_features: ClassVar[dict] = dict.fromkeys(JOINTS, float)

        def connect(self) -> None:
            pass

        def disconnect(self) -> None:
            pass

        def get_observation(self) -> dict[str, Any]:
            image, state = sim.observe()
            return {**{j: float(v) for j, v in zip(JOINTS, state, strict=True)}, "front": image}

        def send_action(self, action: dict[str, float]) -> dict[str, float]:
            sim.apply(np.array([action[j] for j in JOINTS], np.float32))
            return action

    rc.make_robot_from_config = lambda _cfg: LeRobotSim()
    cfg = RobotClientConfig(policy_type="smolvla", pretrained_name_or_path=args.checkpoint, robot=None,
                            actions_per_chunk=args.actions_per_chunk, task=sim.instruction,
                            server_address=args.server, fps=int(args.control_hz),
                            chunk_size_threshold=args.chunk_size_threshold)
    client = rc.RobotClient(cfg)
    chunk_stamp: dict[int, float] = {}  # action timestep -> capture stamp of the chunk that last wrote it
    sent_stamps: set[float] = set()  # capture stamps of this robot's observations (a chunk carries its input's)

    send = client.send_observation

    def send_observation(obs: Any) -> bool:
        sent_stamps.add(obs.get_timestamp())
        return send(obs)

    aggregate = client._aggregate_action_queues

    def on_chunk(actions: list, fn: Any = None) -> None:  # runs on the receiver thread, right after receipt
        if actions:
            stamp = actions[0].get_timestamp()  # the observation's capture stamp (TimedAction i: stamp + i * dt)
            rec.chunk(stamp)
            if stamp not in sent_stamps:  # another client's observation (several robots on one server)
                with rec.lock:
                    if rec.counting:
                        rec.foreign_chunks += 1
            for action in actions:
                chunk_stamp[action.get_timestep()] = stamp
        aggregate(actions, fn)

    available = client.actions_available

    def tick() -> bool:  # RobotClient.control_loop asks this once per tick, first thing
        if rec.tick >= args.ticks:  # the run is over: this tick only ends the loop
            rec.close()
            client.shutdown_event.set()
            return False
        rec.begin_tick()
        if available():
            return True
        sim.apply(np.zeros(len(JOINTS), np.float32))  # nothing to run: the robot stands still, time goes on
        rec.ran(False)
        return False

    def control_loop_action(verbose: bool = False) -> dict[str, Any]:
        # RobotClient.control_loop_action (LeRobot 0.4.4) with the applied action's chunk recorded.
        with client.action_queue_lock:
            client.action_queue_size.append(client.action_queue.qsize())
            timed_action = client.action_queue.get_nowait()
        performed = client.robot.send_action(client._action_tensor_to_action_dict(timed_action.get_action()))
        with client.latest_action_lock:
            client.latest_action = timed_action.get_timestep()
        rec.ran(True, chunk_stamp.get(timed_action.get_timestep()))
        return performed

    client.send_observation = send_observation
    client._aggregate_action_queues = on_chunk
    client.actions_available = tick
    client.control_loop_action = control_loop_action
    if not client.start():
        raise SystemExit(f"LeRobot RobotClient could not reach its policy server at {args.server}")
    receiver = threading.Thread(target=client.receive_actions, daemon=True)
    receiver.start()
    wait_for_start(args, sim, rec)
    started = time.time()
    client.control_loop(task=sim.instruction)
    wall = time.time() - started
    rec.overruns = max(0, round(wall * args.control_hz) - rec.tick)  # ticks the paced loop fell behind by
    client.stop()
    return {"client": {"action_chunk_size": client.action_chunk_size}}


def run_auras(args: argparse.Namespace, sim: SimRobot, rec: Recorder) -> dict[str, Any]:
    """The auras robot client's control loop (``RobotClient.control``) stepping ``sim`` at ``--control-hz``."""
    from auras_client import Fallback, RobotClient

    stamps: dict[tuple[int, int], float] = {}  # action order -> capture stamp of its newest input

    def on_action(action: Any) -> None:  # the receiver thread, at receipt (actions younger than ttl_s)
        stamps[action.order] = action.context_stamp
        if len(stamps) > 4096:
            for key in sorted(stamps)[:1024]:
                del stamps[key]
        rec.chunk(action.context_stamp, action.stamp, action.header.get("latency_ms"))

    size = sim.env.image_size
    client = RobotClient(args.server, cameras={"front": (size, size)}, state_dim=len(JOINTS),
                         instruction=sim.instruction, robot=f"sim-{args.index}", ttl_s=args.ttl_s,
                         on_action=on_action)
    with client:
        control = client.control(args.control_hz, camera_hz=args.camera_hz or None, strategy=args.strategy,
                                 deadline_s=args.deadline_s, fallback=Fallback("decay", decay_s=0.2))
        runtime = control.runtime

        def observe() -> tuple[dict[str, np.ndarray], np.ndarray]:
            image, state = sim.observe()
            return {"front": image}, state

        current: float | None = None  # capture stamp of the newest input of the action running now
        dt = 1.0 / args.control_hz
        wait_for_start(args, sim, rec)
        start = time.perf_counter()
        for _ in range(args.ticks):
            tick_start = time.perf_counter()
            rec.begin_tick()
            applied = runtime.stats.actions_applied
            step = control.t  # the control loop's own step (it restarts at 0 after a reset)
            row = control.step(observe)
            if runtime.stats.actions_applied > applied:
                current = stamps.get(control.offered)
                with rec.lock:
                    if rec.counting:
                        rec.taken_over += 1
            fresh = runtime.executor.covers(step)
            sim.apply(row)
            if sim.episode_ended and args.reset_at_episode_end:  # the server starts the next episode afresh
                sim.episode_ended = False
                control.reset()
            rec.ran(fresh, current if fresh else None)
            late = time.perf_counter() - tick_start
            time.sleep(max(0.0, dt - late))  # as LeRobot's control loop: no catching up after an overrun
        rec.close()
        wall = time.perf_counter() - start
        rec.overruns = max(0, round(wall * args.control_hz) - args.ticks)
        counters = dict(client.counters)
        summary = control.stats()
    return {"client": {"counters": counters, "control": summary, "strategy": control.executor.strategy.name}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", choices=("lerobot", "auras"), required=True)
    ap.add_argument("--server", required=True, help="LeRobot: HOST:PORT of its policy server; auras: tcp://HOST:PORT")
    ap.add_argument("--checkpoint", help="LeRobot: the checkpoint directory its server loads")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--task", default="push-v3")
    ap.add_argument("--seed", type=int, default=0, help="first episode's seed")
    ap.add_argument("--horizon", type=int, default=200, help="ticks per episode (sooner on success)")
    ap.add_argument("--ticks", type=int, default=600)
    ap.add_argument("--warmup-ticks", type=int, default=30)
    ap.add_argument("--control-hz", type=float, default=30.0)
    ap.add_argument("--actions-per-chunk", type=int, default=50, help="LeRobot: RobotClientConfig.actions_per_chunk")
    ap.add_argument("--chunk-size-threshold", type=float, default=0.5, help="LeRobot: send when queue/chunk <= this")
    ap.add_argument("--camera-hz", type=float, default=0.0, help="auras: most observations per second (0: every tick)")
    ap.add_argument("--strategy", default=None, help="auras: robot-side strategy (default: the server's)")
    ap.add_argument("--ttl-s", type=float, default=2.0, help="auras: never take over an action older than this")
    ap.add_argument("--deadline-s", type=float, default=0.25, help="auras: run this long without a fresh row, "
                    "then the fallback")
    ap.add_argument("--reset-at-episode-end", action="store_true",
                    help="auras: RobotControl.reset() when an episode ends (the chunk and context of the last scene "
                    "go; by default neither client is told)")
    ap.add_argument("--stall-s", type=float, default=20.0, help="report the robot as stalled this long past its run")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rec = Recorder(args.warmup_ticks)
    sim = SimRobot(args.task, args.seed, args.horizon, rec)
    try:
        extra = run_lerobot(args, sim, rec) if args.system == "lerobot" else run_auras(args, sim, rec)
        rec.finished.set()
    finally:
        sim.close()
    write_report(args, sim, rec, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
