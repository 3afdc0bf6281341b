"""Throw malformed input at the Python API and at a live bridge server; report how each class was answered.

    python scripts/bad_input_campaign.py [--per-class 200] [--json OUT]

Python API (an AurasAgent over the shipped tiny-dp policy): each bad observation must raise
InvalidInputError (a clear message) and the next good step must still work. Bridge (a BridgeServer
over a fast fake agent, with one well-behaved robot publishing at 100 Hz the whole time): each class
of hostile message is sent ``--per-class`` times from raw sockets; afterwards the server must still
answer, every hostile message must show up in the server's error counters (or be refused by libzmq
for size), and the good robot must have kept receiving actions throughout. A "crash" is any other
exception, a dead server thread, or a good robot left without actions.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auras.agent import AurasAgent
from auras.bridge.limits import ServeLimits
from auras.bridge.server import BridgeServer
from auras.config import load_config
from auras.errors import InvalidInputError
from auras.policies.base import Policy
from auras.types import Observation
from auras_client.client import RobotClient
from auras_client.protocol import encode_frame, encode_map
from tests.fakes import FakeGeneration, FakePerception

IMAGE = np.zeros((84, 84, 3), np.uint8)
STATE = np.zeros(4, np.float32)


def _obs(**changes: Any) -> Observation:
    fields = {"images": {"front": IMAGE}, "state": STATE, "instruction": "press the button", "step_id": 0,
              "capture_time": time.monotonic()} | changes
    return Observation(**fields)


API_CASES = {
    "image float32": lambda: _obs(images={"front": IMAGE.astype(np.float32)}),
    "image wrong size": lambda: _obs(images={"front": np.zeros((64, 64, 3), np.uint8)}),
    "image grayscale": lambda: _obs(images={"front": np.zeros((84, 84), np.uint8)}),
    "image huge": lambda: _obs(images={"front": np.zeros((4096, 4096, 3), np.uint8)}),
    "missing camera": lambda: _obs(images={"wrist": IMAGE}),
    "state NaN": lambda: _obs(state=np.array([0, np.nan, 0, 0], np.float32)),
    "state inf": lambda: _obs(state=np.array([0, np.inf, 0, 0], np.float32)),
    "state wrong size": lambda: _obs(state=np.zeros(7, np.float32)),
    "state float64": lambda: _obs(state=np.zeros(4, np.float64)),
    "empty instruction": lambda: _obs(instruction="  "),
    "negative step id": lambda: _obs(step_id=-3),
    "not an observation": lambda: {"image": IMAGE},
    "None": lambda: None,
}


def api_campaign(per_class: int) -> dict[str, Any]:
    agent = AurasAgent(load_config(overrides=["policy.type=tiny-dp"]))
    results = {}
    for name, make in API_CASES.items():
        answers: collections.Counter = collections.Counter()
        for _ in range(max(1, per_class // 20)):
            try:
                agent.step(make())
                answers["accepted (!)"] += 1
            except InvalidInputError as exc:
                answers["InvalidInputError"] += 1
                message = str(exc)
            except Exception as exc:  # a crash: anything but a clear input error
                answers[f"CRASH {type(exc).__name__}"] += 1
                message = repr(exc)
        good = agent.step(_obs(step_id=1))  # the agent must still work
        results[name] = {"tried": sum(answers.values()), "answers": dict(answers), "message": message[:160],
                         "agent_still_works": good.values.shape == (16, 4)}
    agent.close()
    return results


def _header(**changes: Any) -> bytes:
    header = {"v": 1, "seq": 1, "stamp": time.time(), "session": "x",
              "arrays": [{"dtype": "float32", "shape": [4], "encoding": "raw"}]} | changes
    return msgpack.packb(header)


def bridge_cases(session: str) -> dict[str, Any]:
    """name -> a function returning one hostile multipart message (for the observation socket)."""
    good_state = STATE.tobytes()
    image_desc = [{"dtype": "uint8", "shape": [84, 84, 3], "encoding": "raw"}]
    return {
        "wrong shape": lambda: [
            b"joint_states",
            _header(session=session, arrays=[{"dtype": "float32", "shape": [7], "encoding": "raw"}]),
            np.zeros(7, np.float32).tobytes(),
        ],
        "wrong dtype": lambda: [
            b"joint_states",
            _header(session=session, arrays=[{"dtype": "int64", "shape": [4], "encoding": "raw"}]),
            np.zeros(4, np.int64).tobytes(),
        ],
        "NaN state": lambda: encode_frame(
            "joint_states", [np.array([np.nan] * 4, np.float32)], seq=1, stamp=0.0, session=session
        ),
        "truncated frame": lambda: [b"camera/front", _header(session=session, arrays=image_desc), bytes(1000)],
        "missing buffer": lambda: [b"camera/front", _header(session=session, arrays=image_desc)],
        "wrong version": lambda: [b"joint_states", _header(session=session, v=7), good_state],
        "garbage header": lambda: [b"joint_states", b"\xc1\xc1\xc1", good_state],
        "unknown topic": lambda: [b"lidar/top", _header(session=session), good_state],
        "unknown session": lambda: [b"joint_states", _header(session="nobody"), good_state],
        "bad image bytes": lambda: [
            b"camera/front",
            _header(session=session, arrays=[{"dtype": "uint8", "shape": [84, 84, 3], "encoding": "png"}]),
            b"\x89PNG not really",
        ],
        "huge message": lambda: [b"camera/front", _header(session=session, arrays=image_desc), bytes(20 * 2**20)],
    }


SERVICE_CASES = {
    "garbage request": lambda: b"\x00\x01\x02 not msgpack",
    "request not a map": lambda: msgpack.packb([1, 2, 3]),
    "unknown op": lambda: encode_map({"v": 1, "op": "self_destruct"}),
    "op not a string": lambda: encode_map({"v": 1, "op": {"nested": 1}}),
    "wrong version": lambda: encode_map({"v": 99, "op": "health"}),
    "hello bad fields": lambda: encode_map({"v": 1, "op": "hello", "versions": "1", "cameras": 5}),
    "reset foreign session": lambda: encode_map({"v": 1, "op": "reset", "session": "f00f"}),
}


def bridge_campaign(per_class: int, flood: int) -> dict[str, Any]:
    def agent() -> AurasAgent:
        return AurasAgent(load_config(), policy=Policy("fake", FakePerception(image_size=84), FakeGeneration()))

    address = "tcp://127.0.0.1:5901"
    limits = ServeLimits(max_message_bytes=4 * 2**20)
    server = BridgeServer(bind=address, agent_factory=agent, limits=limits).start()
    good = RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction="x", robot="good")
    stop = threading.Event()
    good_actions: list[float] = []

    def well_behaved() -> None:  # 100 Hz, all campaign long
        last = None
        while not stop.is_set():
            good.publish({"front": IMAGE}, STATE)
            action = good.latest_action()
            if action is not None and action is not last:
                good_actions.append(time.monotonic())
                last = action
            time.sleep(0.01)

    runner = threading.Thread(target=well_behaved, daemon=True)
    runner.start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(server.obs_endpoint)
    req = ctx.socket(zmq.REQ)
    req.connect(address)
    results: dict[str, Any] = {}
    for name, make in bridge_cases(good.session).items():
        before = collections.Counter(server.counters)
        count = per_class if name != "huge message" else max(1, per_class // 50)
        for _ in range(count):
            push.send_multipart(make())
        time.sleep(0.3)
        delta = {k: v - before.get(k, 0) for k, v in server.counters.items() if v != before.get(k, 0)}
        errors = {k: v for k, v in delta.items() if k.startswith("error_") or k == "internal_errors"}
        results[f"data: {name}"] = {"tried": count, "answers": errors or {"refused by ZMQ_MAXMSGSIZE": count}}
    for name, make in SERVICE_CASES.items():
        answers: collections.Counter = collections.Counter()
        for _ in range(per_class // 4):
            req.send(make())
            if not req.poll(5000):
                answers["NO REPLY (!)"] += 1
                req.close(0)
                req = ctx.socket(zmq.REQ)
                req.connect(address)
                continue
            reply = msgpack.unpackb(req.recv())
            answers[reply["error"]["code"] if not reply.get("ok") else "ok"] += 1
        results[f"service: {name}"] = {"tried": sum(answers.values()), "answers": dict(answers)}
    before_flood = len(good_actions)
    start = time.monotonic()
    for i in range(flood):
        push.send_multipart(encode_frame("joint_states", [STATE], seq=10**9 + i, stamp=time.time(), session="nobody"))
    flood_s = time.monotonic() - start
    time.sleep(1.0)
    results["data: flood (unknown session)"] = {"tried": flood, "answers": {"sent in s": round(flood_s, 2)}}
    stop.set()
    runner.join()
    req.send(encode_map({"v": 1, "op": "health"}))
    alive = bool(req.poll(5000)) and msgpack.unpackb(req.recv())["ok"] and server.serving
    gaps = np.diff(good_actions) if len(good_actions) > 1 else np.array([np.inf])
    summary = {
        "server_alive": alive, "internal_errors": server.counters["internal_errors"],
        "good_robot_actions": len(good_actions), "good_robot_actions_during_flood": len(good_actions) - before_flood,
        "good_robot_longest_gap_ms": float(gaps.max() * 1e3),
    }
    for sock in (push, req):
        sock.close(0)
    ctx.term()
    good.close()
    server.close()
    return {"classes": results, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--flood", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    api = api_campaign(args.per_class)
    bridge = bridge_campaign(args.per_class, args.flood)
    print("| target | class | tried | answered as |")
    print("|---|---|---|---|")
    for name, r in api.items():
        print(f"| Python API | {name} | {r['tried']} | {r['answers']} (agent still works: {r['agent_still_works']}) |")
    for name, r in bridge["classes"].items():
        print(f"| bridge | {name} | {r['tried']} | {r['answers']} |")
    print(f"\nbridge summary: {bridge['summary']}")
    crashes = sum(v for r in api.values() for k, v in r["answers"].items() if k.startswith("CRASH"))
    crashes += sum(v for r in bridge["classes"].values() for k, v in r["answers"].items() if "internal" in k)
    print(f"crashes: {crashes}")
    if args.json:
        args.json.write_text(json.dumps({"api": api, "bridge": bridge, "crashes": crashes}, indent=2, default=str))


if __name__ == "__main__":
    main()
