"""What `auras serve` refuses, on every protocol it speaks, and how it words a refusal (docs/bridge.md, "Limits").

One :class:`ServeLimits` holds the admission policy (a session cap), the idle timeouts and the size and shape
limits of a message; both servers (ZeroMQ and openpi) enforce them. A client's text never reaches a log or an
error reply whole (:func:`auras.errors.clip`), and a server reachable from other machines without credentials says so
(:func:`exposure_warning`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from auras_client.protocol import MAX_MESSAGE_BYTES

__all__ = ["ServeLimits", "exposure_warning", "is_loopback", "policy_limits"]

@dataclass(frozen=True, slots=True)
class ServeLimits:
    """max_sessions: sessions at once (one more is refused at once, before any agent is built).
    session_timeout_s: a ZeroMQ session silent this long is closed (its client sends heartbeats).
    openpi_idle_timeout_s: an openpi connection that sent nothing this long is closed.
    max_message_bytes: the largest message read. max_map_keys / max_array_len / max_depth: the most keys of
    one map, items of one list, and levels of nesting a decoded message may have (so one message cannot
    stall the server for other robots)."""

    max_sessions: int = 16
    session_timeout_s: float = 10.0
    openpi_idle_timeout_s: float = 300.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_map_keys: int = 256
    max_array_len: int = 4096
    max_depth: int = 8

    @classmethod
    def from_config(cls, serve: Any) -> ServeLimits:
        """The limits ``config.serve`` sets."""
        return cls(
            max_sessions=serve.max_sessions, session_timeout_s=serve.session_timeout_s,
            openpi_idle_timeout_s=serve.openpi_idle_timeout_s, max_message_bytes=int(serve.max_message_mb * 2**20),
        )


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or a wildcard such as '*': assume other machines reach it


def exposure_warning(address: str, host: str, secured: bool, remedy: str) -> str | None:
    """A warning for a server bound where other machines reach it without credentials, else None."""
    if secured or is_loopback(host):
        return None
    return (f"{address} is reachable from other machines and nothing authenticates the robots: anyone who "
            f"reaches it can drive the policy; {remedy}")


def policy_limits(policy_spec: Any) -> dict[str, Any]:
    """What a robot's observations must respect, as the hello reply and the openpi metadata state it."""
    observation = policy_spec.observation
    return {
        "instruction_bytes": observation.max_instruction_bytes,  # None: any length (truncated by the tokenizer)
        "state_dim": observation.state_dim,
        "cameras": {name: list(size) for name, size in observation.cameras.items()},
    }
