"""The ZeroMQ bridge's own overhead: round-trip latency and camera-stream accounting (a benchmark).

    python scripts/bridge_overhead.py [--n 2000] [--warmup 100] [--seconds 10] [--hz 120]
                                      [--agent-ms 5] [--transports tcp,ipc] [--encoding raw[,jpeg]]
                                      [--json OUT]

As on a robot, the server and the client are separate processes: each :class:`BridgeServer` runs in
a ``multiprocessing`` spawn child, bound to a free loopback TCP port (three consecutive ones: service,
observations, actions) or to ``ipc:///tmp/auras-bridge-bench-<pid>-<k>``; the :class:`RobotClient`
runs here. The agent is an ``AurasAgent`` (sequential mode) over an inline fake policy on an 84x84
camera and a 4-d state, so nothing but the bridge costs time.

1. Round trip. A near-zero-compute policy; one 84x84x3 uint8 observation is published, the client
   waits for the action answering its seq (header ``seq``), then publishes the next (ping-pong: no
   queueing anywhere). ``--warmup`` exchanges are discarded, ``--n`` are measured. Reported: the
   raw round trip (publish called -> the client's receiver hands the action to ``on_action``: from
   then on the robot's ``latest_action()`` returns it), the agent's compute (header ``latency_ms``:
   observation admitted -> action out) and the overhead = round trip - agent compute, median and p99;
   also the overhead until a thread blocked waiting for the action is woken (one more thread hand-off,
   which a control loop that polls ``latest_action()`` at its own rate does not pay). Beside it, in the
   same run (before and after), a bare ZeroMQ REQ/REP round trip with the same image and a msgpack
   header (``--n / 2`` each time): the floor any ZeroMQ policy server pays. Goal: overhead median
   <= 1 ms and <= 2x bare. Publishes the client refuses (``publish`` returns None) and observations
   never answered are counted ("refused", "lost") and not timed; publishing goes on until
   ``--warmup + --n`` were answered.
2. Camera stream. The policy sleeps ``--agent-ms`` per step; the client publishes frames at ``--hz``
   for ``--seconds`` on a perf_counter schedule (a late frame slips the schedule, never bursts).
   From the session's ``stats`` (difference before/after) it reports the observations submitted to
   the agent's stream and superseded there by a newer one (drop-oldest), dropped incomplete, lost in
   transport (a gap in the seqs that arrived) and pending; the frames that reached the agent
   (submitted - superseded); actions sent by the server and received by the client; frame -> action
   latency; and checks the accounting: every seq the client numbered (published, or dropped at the
   client) == submitted + dropped_incomplete + lost + pending, give or take one still in flight.
   Counters a server version does not keep count as 0; "unaccounted" is what vanished unseen.

``--encoding raw,jpeg`` repeats both with JPEG camera frames. Prints a Markdown table of each part at
the end; ``--json OUT`` writes every figure. Figures depend on the machine and its load: run it on an
otherwise idle host for numbers to quote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from auras.generation.base import Generation
from auras.perception.base import Context, Perception
from auras.policies.base import Policy
from auras.types import Observation, ObservationSpec
from auras_client.client import ReceivedAction, RobotClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.ports: free ports, as the tests use

IMAGE_SIZE = 84
STATE_DIM = 4
GOAL_MEDIAN_MS = 1.0
GOAL_RATIO = 2.0  # bridge overhead median / bare ZeroMQ REQ/REP round trip median, same run
INSTRUCTION = "bridge overhead benchmark"


# -- the agent's policy (runs in the server process) -------------------------------------------------
class BenchPerception(Perception):
    """Context = the states, as is: no compute."""

    def __init__(self) -> None:
        self._spec = ObservationSpec({"front": (IMAGE_SIZE, IMAGE_SIZE)}, state_dim=STATE_DIM)

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def perceive(self, observations: Sequence[Observation]) -> Context:
        return {"state": np.stack([o.state for o in observations])}  # (B, 4)


class BenchGeneration(Generation):
    """Action = state (B, 4) float32, after sleeping ``delay_s`` (0: no compute)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    @property
    def action_dim(self) -> int:
        return STATE_DIM

    def generate(self, context: Context) -> np.ndarray:
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return np.asarray(context["state"], np.float32)


def _serve(bind: str, agent_delay_s: float, events: Any, stop: Any) -> None:
    """Server process: a BridgeServer on ``bind`` until ``stop`` is set; reports ready/error on ``events``."""
    logging.basicConfig(level=logging.WARNING)
    from auras.agent import AurasAgent
    from auras.bridge.server import BridgeServer
    from auras.config import AurasConfig

    config = AurasConfig()  # sequential mode, local backend

    def agent_factory() -> AurasAgent:
        return AurasAgent(config, policy=Policy("bench", BenchPerception(), BenchGeneration(agent_delay_s)))

    try:
        server = BridgeServer(config, bind, agent_factory=agent_factory)
    except Exception as exc:  # typically a port taken since it was probed: the parent retries
        events.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    with server:
        server.start()
        events.put(("ready", bind))
        stop.wait()


def _echo_serve(bind: str, events: Any, stop: Any) -> None:
    """Bare baseline server: a REP socket that reads [msgpack header, image] and answers
    [msgpack header, (1, 4) float32 action], the least any ZeroMQ policy server does."""
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    try:
        rep.bind(bind)
    except zmq.ZMQError as exc:
        events.put(("error", f"ZMQError: {exc}"))
        return
    events.put(("ready", bind))
    action = np.zeros((1, STATE_DIM), np.float32)
    while not stop.is_set():
        if not rep.poll(100):
            continue
        header_frame, image_frame = rep.recv_multipart(copy=False)
        header = msgpack.unpackb(header_frame.buffer)
        image = np.frombuffer(image_frame.buffer, np.uint8).reshape(header["shape"])
        reply = {"seq": header["seq"], "stamp": header["stamp"], "shape": [1, STATE_DIM], "mean": float(image[0, 0, 0])}
        rep.send_multipart([msgpack.packb(reply), action])
    rep.close()
    ctx.term()


# -- the server process ----------------------------------------------------------------------------
class ServerProcess:
    """``with ServerProcess("tcp", agent_delay_s) as server:`` a BridgeServer in a spawned child;
    ``server.bind`` is its service endpoint. Exiting stops it (gracefully, then terminate)."""

    _count = 0

    def __init__(
        self, transport: str, agent_delay_s: float = 0.0, start_timeout_s: float = 60.0, bare: bool = False
    ) -> None:
        if transport not in ("tcp", "ipc"):
            raise ValueError(f"transport: expected tcp or ipc, got {transport!r}")
        self.transport, self.agent_delay_s, self.start_timeout_s = transport, agent_delay_s, start_timeout_s
        self.bare = bare  # the bare ZeroMQ REP baseline instead of a BridgeServer
        self.bind = ""
        self._proc: Any = None
        self._stop: Any = None

    def _endpoint(self) -> str:
        if self.transport == "tcp":
            from tests.ports import free_service_port

            return f"tcp://127.0.0.1:{free_service_port()}"
        ServerProcess._count += 1
        return f"ipc:///tmp/auras-bridge-bench-{os.getpid()}-{ServerProcess._count}"

    def __enter__(self) -> ServerProcess:
        ctx = mp.get_context("spawn")
        error = ""
        for _ in range(3):
            bind = self._endpoint()
            events, stop = ctx.Queue(), ctx.Event()
            target, args = (
                (_echo_serve, (bind, events, stop)) if self.bare else (_serve, (bind, self.agent_delay_s, events, stop))
            )
            proc = ctx.Process(target=target, args=args, daemon=True)
            proc.start()
            try:
                kind, error = events.get(timeout=self.start_timeout_s)
            except queue.Empty:
                kind, error = "error", f"no answer within {self.start_timeout_s} s"
            if kind == "ready":
                self.bind, self._proc, self._stop = bind, proc, stop
                return self
            stop.set()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            self._remove_ipc_files(bind)
        raise RuntimeError(f"bridge server did not start on {self.transport}: {error}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._stop.set()
        self._proc.join(timeout=20)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()
        self._remove_ipc_files(self.bind)
        self._proc = None

    @staticmethod
    def _remove_ipc_files(bind: str) -> None:
        if bind.startswith("ipc://"):
            path = bind[len("ipc://") :]
            for name in (path, path + ".obs", path + ".act"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)


# -- the client side -------------------------------------------------------------------------------
class ActionWaiter:
    """The client's ``on_action`` callback: keeps the newest action and wakes whoever waits for it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.latest: ReceivedAction | None = None
        self.ages_ms: list[float] = []  # capture stamp -> received, per action (robot clock)
        self.arrived: dict[int, float] = {}  # seq -> perf_counter when the client handed it to on_action

    def __call__(self, action: ReceivedAction) -> None:
        with self._cond:
            self.latest = action
            self.ages_ms.append((action.received - action.stamp) * 1e3)
            self.arrived[action.seq] = time.perf_counter()
            self._cond.notify_all()

    def wait_for(self, seq: int, timeout_s: float) -> ReceivedAction | None:
        """The action answering ``seq`` (or a newer one), or None after ``timeout_s``."""
        with self._cond:
            self._cond.wait_for(lambda: self.latest is not None and self.latest.seq >= seq, timeout_s)
            return self.latest if self.latest is not None and self.latest.seq >= seq else None


def camera_frames(count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """84x84x3 uint8 frames that look more like a camera than noise does (gradients + mild noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    frames = []
    for i in range(count):
        base = np.stack([x, y, (x + y + i / count) % 1.0], axis=-1) * 200
        frames.append(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
    return frames


def open_client(bind: str, encoding: str, waiter: ActionWaiter) -> RobotClient:
    return RobotClient(
        bind, cameras={"front": (IMAGE_SIZE, IMAGE_SIZE)}, state_dim=STATE_DIM, instruction=INSTRUCTION,
        robot="bench", ttl_s=60.0, encoding=encoding, on_action=waiter,
    )


def wait_until_flowing(client: RobotClient, waiter: ActionWaiter, frame: np.ndarray, state: np.ndarray) -> None:
    """Publish until an action comes back: both PUB/SUB connections are up (ZeroMQ's slow joiner)."""
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        seq = client.publish({"front": frame}, state)
        if seq is not None and waiter.wait_for(seq, 0.2) is not None:
            return
    raise RuntimeError(f"no action from {client.server} within 15 s")


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"median": None, "p99": None, "mean": None}
    array = np.asarray(values, np.float64)
    return {"median": float(np.median(array)), "p99": float(np.percentile(array, 99)), "mean": float(array.mean())}


def round_trip(bind: str, transport: str, encoding: str, n: int, warmup: int) -> dict[str, Any]:
    """Ping-pong: publish one observation, wait for its action, repeat."""
    frames, state = camera_frames(), np.full(STATE_DIM, 0.1, np.float32)
    waiter = ActionWaiter()
    rtt_ms, agent_ms, server_ms, overhead_ms, woken_ms = [], [], [], [], []
    lost = refused = answered = 0
    with open_client(bind, encoding, waiter) as client:
        wait_until_flowing(client, waiter, frames[0], state)
        for i in range(10 * (warmup + n)):  # until warmup + n answered; the bound only guards a broken link
            if answered == warmup + n:
                break
            start = time.perf_counter()
            seq = client.publish({"front": frames[i % len(frames)]}, state)
            if seq is None:  # no session, or the client's send queue refused it: nothing to time
                refused += 1
                continue
            action = waiter.wait_for(seq, 2.0)
            end = time.perf_counter()
            if action is None or action.seq != seq:  # no answer within 2 s (or only a newer one)
                lost += 1
                continue
            answered += 1
            if answered <= warmup:
                continue
            rtt = (waiter.arrived[seq] - start) * 1e3  # the robot's latest_action() has it from here
            agent = float(action.header["latency_ms"])
            rtt_ms.append(rtt)
            agent_ms.append(agent)
            overhead_ms.append(rtt - agent)
            woken_ms.append((end - start) * 1e3 - agent)  # + waking a thread blocked on the action
            if action.header.get("staleness_ms") is not None:  # submitted to the stream -> action out
                server_ms.append(float(action.header["staleness_ms"]))
    overhead = percentiles(overhead_ms)
    return {
        "transport": transport, "encoding": encoding, "n": len(rtt_ms), "refused": refused, "lost": lost,
        "overhead_ms": overhead, "round_trip_ms": percentiles(rtt_ms), "agent_ms": percentiles(agent_ms),
        "overhead_to_woken_thread_ms": percentiles(woken_ms),
        "server_submit_to_action_ms": percentiles(server_ms),
        "goal_median_ms": GOAL_MEDIAN_MS,
        "goal_met": overhead["median"] is not None and overhead["median"] <= GOAL_MEDIAN_MS,
    }


def bare_round_trip(bind: str, n: int, warmup: int) -> dict[str, Any]:
    """The same exchange over a bare ZeroMQ REQ/REP pair: [msgpack header, raw image] out,
    [msgpack header, action] back. What any ZeroMQ policy server costs at least."""
    frames = camera_frames()
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(bind)
    rtt_ms = []
    try:
        for i in range(warmup + n):
            frame = frames[i % len(frames)]
            start = time.perf_counter()
            header = {"v": 1, "seq": i, "stamp": time.time(), "shape": list(frame.shape), "dtype": "uint8"}
            req.send_multipart([msgpack.packb(header), frame])
            if not req.poll(5000):
                raise RuntimeError(f"bare REP server at {bind} did not answer within 5 s")
            reply_header, action = req.recv_multipart()
            reply = msgpack.unpackb(reply_header)
            np.frombuffer(action, np.float32).reshape(reply["shape"])
            if i >= warmup:
                rtt_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        req.close()
        ctx.term()
    return {"n": len(rtt_ms), "round_trip_ms": percentiles(rtt_ms)}


# Session counters (``stats``) the accounting reads; a server that lacks one reports it as 0.
STAT_KEYS = (
    "submitted", "superseded", "dropped_incomplete", "lost", "pending", "late_or_duplicate", "late_messages",
    "actions", "messages",
)


def session_counters(client: RobotClient) -> dict[str, int]:
    counters = client.stats()["counters"]
    return {key: int(counters.get(key, 0)) for key in STAT_KEYS}


def camera_stream(bind: str, transport: str, encoding: str, seconds: float, hz: float) -> dict[str, Any]:
    """Publish frames at ``hz`` for ``seconds`` to a slow agent; account for every frame."""
    frames, state = camera_frames(), np.full(STATE_DIM, 0.1, np.float32)
    waiter = ActionWaiter()
    with open_client(bind, encoding, waiter) as client:
        wait_until_flowing(client, waiter, frames[0], state)
        time.sleep(0.3)  # let the connection check's frames finish before the snapshot
        before, client_before = session_counters(client), dict(client.counters)
        waiter.ages_ms.clear()
        period, planned = 1.0 / hz, round(seconds * hz)
        published = refused = slips = 0
        start = next_at = time.perf_counter()
        first = last = start
        for i in range(planned):
            now = time.perf_counter()
            if next_at > now:
                time.sleep(next_at - now)
            elif now - next_at > period:  # more than a period late: slip the schedule, never burst
                slips += 1
                next_at = now
            sent = time.perf_counter()
            if client.publish({"front": frames[i % len(frames)]}, state) is None:
                refused += 1  # no session, or (a client with a bounded send queue) dropped at the client
            else:
                published += 1
                first, last = (sent, sent) if published == 1 else (first, sent)
            next_at += period
        elapsed = time.perf_counter() - start
        time.sleep(0.5)  # drain: the last observations reach the agent and their actions come back
        after, client_after = session_counters(client), dict(client.counters)
        ages = list(waiter.ages_ms)
    diff = {key: after[key] - before[key] for key in STAT_KEYS}
    client_diff = {key: client_after.get(key, 0) - client_before.get(key, 0)
                   for key in ("actions", "dropped_at_client", "unsent")}
    # Every seq the client numbered (published, or dropped at the client after taking a seq) is on the
    # server exactly one of: submitted, dropped incomplete, lost (a gap in the seqs that arrived) or
    # pending; what is left over vanished unseen (or is still in flight: at most one after the drain).
    numbered = published + client_diff["dropped_at_client"]
    accounted = diff["submitted"] + diff["dropped_incomplete"] + diff["lost"] + diff["pending"]
    reached = diff["submitted"] - diff["superseded"]
    return {
        "transport": transport, "encoding": encoding, "target_hz": hz, "seconds": seconds,
        "planned": planned, "published": published, "refused": refused,
        "dropped_at_client": client_diff["dropped_at_client"], "schedule_slips": slips,
        "publish_hz": (published - 1) / (last - first) if published > 1 and last > first else None,
        "elapsed_s": elapsed, "server": diff, "reached_agent": reached,
        "reached_fraction": reached / numbered if numbered else None,
        "dropped_fraction": (numbered - reached) / numbered if numbered else None,
        "unaccounted": numbered - accounted, "accounting_ok": 0 <= numbered - accounted <= 1,
        "actions_sent": diff["actions"], "actions_received": client_diff["actions"],
        "frame_to_action_ms": percentiles(ages),
    }


# -- report ----------------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f} %"


def round_trip_table(rows: list[dict[str, Any]], n: int) -> str:
    lines = [
        f"Round trip, 84x84x3 uint8 ping-pong (client and server in separate processes), n = {n}; "
        f"overhead = round trip - agent compute; bare = the same image and a msgpack header over a bare "
        f"ZeroMQ REQ/REP pair, measured before and after the bridge in the same run; "
        f"goal: median <= {GOAL_MEDIAN_MS:g} ms and <= {GOAL_RATIO:g}x bare",
        "",
        "| transport | encoding | overhead median ms | overhead p99 ms | round trip median ms | round trip p99 ms "
        "| agent median ms | overhead to a woken thread, median ms | bare REQ/REP median ms | overhead / bare "
        "| refused / lost | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['transport']} | {r['encoding']} "
            f"| {fmt(r['overhead_ms']['median'])} | {fmt(r['overhead_ms']['p99'])} "
            f"| {fmt(r['round_trip_ms']['median'])} | {fmt(r['round_trip_ms']['p99'])} "
            f"| {fmt(r['agent_ms']['median'])} | {fmt(r['overhead_to_woken_thread_ms']['median'])} "
            f"| {fmt(r['bare_round_trip_ms']['median'])} "
            f"| {r['ratio_to_bare']:.2f} | {r['refused']} / {r['lost']} "
            f"| {'met' if r['goal_met'] else 'missed'} |"
        )
    return "\n".join(lines)


def stream_table(rows: list[dict[str, Any]], agent_ms: float) -> str:
    if not rows:
        return ""
    r0 = rows[0]
    lines = [
        f"Camera stream, 84x84x3 frames at {r0['target_hz']:g} Hz for {r0['seconds']:g} s to an agent of "
        f"~{agent_ms:g} ms/step (drop-oldest); reached = submitted - superseded",
        "",
        "| transport | encoding | published | publish Hz | reached agent | superseded | dropped incomplete "
        "| lost (at client) | unaccounted | actions sent / received | frame->action median / p99 ms | accounting |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["server"]
        lines.append(
            f"| {r['transport']} | {r['encoding']} | {r['published']} | {fmt(r['publish_hz'], 1)} "
            f"| {r['reached_agent']} ({percent(r['reached_fraction'])}) | {s['superseded']} "
            f"| {s['dropped_incomplete']} | {s['lost']} ({r['dropped_at_client']}) | {r['unaccounted']} "
            f"| {r['actions_sent']} / {r['actions_received']} "
            f"| {fmt(r['frame_to_action_ms']['median'], 2)} / {fmt(r['frame_to_action_ms']['p99'], 2)} "
            f"| {'ok' if r['accounting_ok'] else 'MISMATCH'} |"
        )
    return "\n".join(lines)


def csv_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="Measured round trips per transport and encoding.")
    parser.add_argument("--warmup", type=int, default=100, help="Round trips discarded first.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Camera stream duration (0: skip it).")
    parser.add_argument("--hz", type=float, default=120.0, help="Camera stream publish rate.")
    parser.add_argument("--agent-ms", type=float, default=5.0, help="Agent step time in the camera stream.")
    parser.add_argument("--transports", type=csv_list, default=["tcp", "ipc"], help="Comma list of tcp, ipc.")
    parser.add_argument("--encoding", type=csv_list, default=["raw"], help="Comma list of raw, jpeg.")
    parser.add_argument("--json", type=Path, default=None, help="Write every figure to this JSON file.")
    args = parser.parse_args()
    for transport in args.transports:
        if transport not in ("tcp", "ipc"):
            parser.error(f"--transports: expected tcp and/or ipc, got {transport!r}")
    for encoding in args.encoding:
        if encoding not in ("raw", "jpeg"):
            parser.error(f"--encoding: expected raw and/or jpeg, got {encoding!r}")
    if args.n < 1 or args.warmup < 0 or args.hz <= 0 or args.seconds < 0 or args.agent_ms < 0:
        parser.error("--n must be >= 1, --warmup >= 0, --hz > 0, --seconds and --agent-ms >= 0")

    began = time.perf_counter()
    round_trips: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    for transport in args.transports:
        for encoding in args.encoding:
            # bare, bridge, bare: the baseline brackets the bridge so a drifting machine shows in both
            bare_ms: list[float] = []
            for block in range(3):
                if block == 1:
                    with ServerProcess(transport) as server:
                        row = round_trip(server.bind, transport, encoding, args.n, args.warmup)
                    continue
                with ServerProcess(transport, bare=True) as server:
                    bare = bare_round_trip(server.bind, args.n // 2, args.warmup)
                bare_ms.append(bare["round_trip_ms"]["median"])
            row["bare_round_trip_ms"] = {"median": float(np.mean(bare_ms)), "blocks": bare_ms}
            row["ratio_to_bare"] = row["overhead_ms"]["median"] / row["bare_round_trip_ms"]["median"]
            row["goal_ratio"] = GOAL_RATIO
            row["goal_met"] = row["goal_met"] and row["ratio_to_bare"] <= GOAL_RATIO
            round_trips.append(row)
            o, r = row["overhead_ms"], row["round_trip_ms"]
            print(f"round trip  {transport}/{encoding}: overhead median {fmt(o['median'])} ms, "
                  f"p99 {fmt(o['p99'])} ms (raw {fmt(r['median'])} / {fmt(r['p99'])} ms, "
                  f"agent {fmt(row['agent_ms']['median'])} ms, refused {row['refused']}, lost {row['lost']}); "
                  f"bare ZeroMQ REQ/REP {fmt(row['bare_round_trip_ms']['median'])} ms "
                  f"(blocks {', '.join(fmt(b) for b in bare_ms)}), ratio {row['ratio_to_bare']:.2f}",
                  flush=True)
        if args.seconds <= 0:
            continue
        with ServerProcess(transport, args.agent_ms / 1e3) as server:
            for encoding in args.encoding:
                row = camera_stream(server.bind, transport, encoding, args.seconds, args.hz)
                streams.append(row)
                print(f"camera      {transport}/{encoding}: published {row['published']} at "
                      f"{fmt(row['publish_hz'], 1)} Hz, reached agent {row['reached_agent']}, server {row['server']}, "
                      f"unaccounted {row['unaccounted']}, actions received {row['actions_received']}",
                      flush=True)

    print()
    print(round_trip_table(round_trips, args.n))
    if streams:
        print()
        print(stream_table(streams, args.agent_ms))
    total = time.perf_counter() - began
    print(f"\n({total:.1f} s; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
    if args.json is not None:
        report = {
            "settings": {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()},
            "host": {
                "platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            },
            "round_trip": round_trips, "camera_stream": streams, "elapsed_s": total,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
