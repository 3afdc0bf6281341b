"""The service channel's requests, validated before any operation runs (docs/bridge.md, "Service
operations"): each ``parse_*`` takes a decoded request map and returns what the operation needs, or
raises ProtocolError with the code and what was expected. No sockets, no sessions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from auras.bridge.contracts import Contract, parse_contract
from auras_client.protocol import SUPPORTED_VERSIONS, ProtocolError

__all__ = [
    "OPS",
    "SLOW_OPS",
    "Hello",
    "check_layout",
    "check_op",
    "parse_configure",
    "parse_hello",
    "parse_reset",
    "parse_session_id",
]

OPS = ("hello", "reset", "configure", "health", "stats", "bye")
SLOW_OPS = ("hello", "reset", "bye")  # they build, reset or close an agent: answered from a worker thread
_NAME = re.compile(r"[A-Za-z0-9_\-]{1,32}")


def _is_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in SUPPORTED_VERSIONS


def check_op(request: dict[str, Any]) -> str:
    """The request's operation; every operation but ``hello`` must carry a supported ``v``."""
    version, op = request.get("v"), request.get("op")
    if not isinstance(op, str):
        raise ProtocolError("unknown_op", f"op: expected a string, got {op!r:.40}")
    if op != "hello" and not _is_version(version):
        raise ProtocolError("bad_version", f"schema version {version!r:.20} not supported: {SUPPORTED_VERSIONS}")
    if op not in OPS:
        raise ProtocolError("unknown_op", f"op {op!r:.40} not in {', '.join(OPS)}")
    return op


def parse_session_id(request: dict[str, Any]) -> str | None:
    sid = request.get("session")
    return sid if isinstance(sid, str) else None


@dataclass(frozen=True, slots=True)
class Hello:
    """A robot's hello: the schema both speak, and the observation layout it declares."""

    schema: int
    robot: str
    cameras: dict[str, tuple[int, int]]
    extras: tuple[str, ...]
    state_dim: int
    instruction: str
    contract: Contract | None = None


def parse_hello(request: dict[str, Any]) -> Hello:
    offered = request.get("versions", [request.get("v")])
    if not isinstance(offered, list):
        raise ProtocolError("bad_request", f"versions: expected a list of ints, got {offered!r:.40}")
    common = sorted(set(SUPPORTED_VERSIONS) & {v for v in offered if _is_version(v)})
    if not common:
        raise ProtocolError("bad_version", f"client speaks {offered!r:.40}, server speaks {SUPPORTED_VERSIONS}")
    robot = request.get("robot", "robot")
    cameras = request.get("cameras")
    state_dim = request.get("state_dim")
    instruction = request.get("instruction")
    if not isinstance(robot, str) or not 0 < len(robot) <= 64:
        raise ProtocolError("bad_request", f"robot: expected a name of 1-64 characters, got {robot!r:.70}")
    if (
        not isinstance(cameras, dict)
        or not cameras
        or len(cameras) > 8
        or not all(
            isinstance(k, str)
            and _NAME.fullmatch(k)
            and isinstance(v, list)
            and len(v) == 2
            and all(isinstance(d, int) and 0 < d <= 4096 for d in v)
            for k, v in cameras.items()
        )
    ):
        raise ProtocolError(
            "bad_request",
            f"cameras: expected up to 8 {{name: [height, width]}} (names [A-Za-z0-9_-], 1-32 "
            f"characters), got {cameras!r:.80}",
        )
    extras = request.get("extras", [])
    if not isinstance(extras, list) or not all(isinstance(e, str) and _NAME.fullmatch(e) for e in extras):
        raise ProtocolError("bad_request", f"extras: expected a list of names, got {extras!r:.60}")
    if isinstance(state_dim, bool) or not isinstance(state_dim, int) or not 0 < state_dim <= 1024:
        raise ProtocolError("bad_request", f"state_dim: expected an int in 1..1024, got {state_dim!r:.20}")
    instruction = _instruction(instruction)
    return Hello(common[-1], robot, {k: (v[0], v[1]) for k, v in cameras.items()}, tuple(extras), state_dim,
                 instruction, parse_contract(request))


def _instruction(instruction: Any) -> str:
    if not isinstance(instruction, str) or not instruction.strip() or len(instruction) > 256:
        raise ProtocolError("bad_request", f"instruction: expected 1-256 characters, got {instruction!r:.60}")
    return instruction


def parse_reset(request: dict[str, Any]) -> int:
    """``from_seq``: the first seq of the new episode (default 0)."""
    from_seq = request.get("from_seq", 0)
    if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 0:
        raise ProtocolError("bad_request", f"from_seq: expected an int >= 0, got {from_seq!r:.20}")
    return from_seq


def parse_configure(request: dict[str, Any], current_instruction: str) -> str:
    """The new instruction (the only setting a session can change)."""
    unknown = sorted(set(request) - {"v", "op", "id", "session", "instruction"})
    if unknown:
        raise ProtocolError("bad_request", f"configure: unknown settings {unknown}; known: instruction")
    return _instruction(request.get("instruction", current_instruction))


def check_layout(spec: Any, hello: Hello) -> None:
    """ProtocolError unless the robot's declared cameras, state and extras are what the policy's observation
    ``spec`` needs."""
    for cam, size in spec.cameras.items():
        if cam not in hello.cameras or tuple(hello.cameras[cam]) != tuple(size):
            raise ProtocolError(
                "bad_shape", f"the policy needs camera {cam!r} of {list(size)}, robot declares {hello.cameras}"
            )
    if hello.state_dim != spec.state_dim:
        needs = f"the policy needs state_dim {spec.state_dim}"
        raise ProtocolError("bad_shape", f"{needs}, robot declares {hello.state_dim}")
    missing = sorted(set(spec.extras) - set(hello.extras))
    if missing:
        raise ProtocolError("bad_request", f"the policy needs extras {missing} (simulator state: a real robot "
                            f"cannot send it; serve a learned policy, e.g. `auras serve --policy tiny-dp`, or "
                            f"run `auras robot-sim --privileged`); robot declares {list(hello.extras)}")
