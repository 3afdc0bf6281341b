"""Observation assembly for one robot session, with no sockets: the parts of an observation (one
``camera/<name>`` frame per camera, ``joint_states``, ``extras/<name>``) arrive as separate messages
tagged with the robot's sequence number; a seq is complete once every camera the policy needs, the
joint state and the extras it needs have arrived.

Every seq from the first seen to the highest is accounted for exactly once (``counters``):
``submitted`` (complete, handed on), ``dropped_incomplete`` (a newer seq completed first, or more than
``max_pending`` seqs were incomplete at once), ``lost`` (never arrived at all) or still pending. Parts
of a seq older than the last reset are ``before_reset``; parts of a seq already submitted or given up
are ``late_messages``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auras_client.protocol import ProtocolError

__all__ = ["ObservationAssembler", "Part", "Slot", "parse_part"]


@dataclass(frozen=True, slots=True)
class Part:
    """One decoded message: ``kind`` image / state / extra, its name and its array."""

    kind: str
    name: str
    array: np.ndarray


@dataclass
class Slot:
    """A seq being assembled."""

    stamp: float
    images: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    state: np.ndarray | None = None


def parse_part(frame: Any, cameras: dict[str, tuple[int, int]], state_dim: int) -> Part:
    """A decoded data frame as a Part, checked against the session's declared layout (ProtocolError
    with the code and what was expected otherwise)."""
    topic = frame.topic
    if topic.startswith("camera/"):
        name = topic[len("camera/") :]
        if name not in cameras:
            raise ProtocolError("unknown_topic", f"camera {name!r:.40} was not declared in hello ({list(cameras)})")
        image = _single(frame, "uint8")
        height, width = cameras[name]
        if image.shape != (height, width, 3):
            raise ProtocolError("bad_shape", f"camera/{name}: declared ({height}, {width}, 3), got {image.shape}")
        return Part("image", name, image)
    if topic == "joint_states":
        state = _single(frame, "float32")
        if state.shape != (state_dim,):
            raise ProtocolError("bad_shape", f"joint_states: declared ({state_dim},), got {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ProtocolError("bad_shape", "joint_states: values must be finite")
        return Part("state", "state", state)
    if topic.startswith("extras/"):
        return Part("extra", topic[len("extras/") :], _single(frame, "float64"))
    raise ProtocolError("unknown_topic", f"topic {topic!r:.60}: expected camera/<name>, joint_states or extras/<name>")


def _single(frame: Any, dtype: str) -> np.ndarray:
    if len(frame.arrays) != 1:
        raise ProtocolError("bad_message", f"{frame.topic}: expected one array, got {len(frame.arrays)}")
    array = frame.arrays[0]
    if array.dtype != np.dtype(dtype):
        raise ProtocolError("bad_dtype", f"{frame.topic}: expected {dtype}, got {array.dtype}")
    return np.array(array)  # own the memory: the message buffer is released after this call


class ObservationAssembler:
    """Per-session reassembly (see the module doc). ``needed_cameras`` and ``needed_extras``: what a
    seq needs to be complete; other declared cameras and extras are kept but not waited for."""

    def __init__(self, needed_cameras: tuple[str, ...], needed_extras: tuple[str, ...] = (), max_pending: int = 8,
                 max_stamps: int = 4096) -> None:
        self.needed_cameras, self.needed_extras = tuple(needed_cameras), tuple(needed_extras)
        self.max_pending, self.max_stamps = max_pending, max_stamps
        self.pending: dict[int, Slot] = {}
        self.stamps: dict[int, float] = {}  # seq -> robot capture stamp, of the last max_stamps submitted seqs
        self.counters: collections.Counter = collections.Counter()
        self.min_seq = 0
        self.last_submitted = -1
        self.max_seen = -1  # highest seq any message carried: gaps below it were lost in transport
        self.anchored = False  # a reset named where the episode starts (else it starts at the first seq seen)

    def restart(self, from_seq: int) -> None:
        """A new episode from ``from_seq``: pending seqs are dropped, older parts refused; seqs below
        ``from_seq`` of which no part had arrived are counted ``unseen_at_reset`` (lost in transport or
        still in flight: their parts, if they come, are ``before_reset`` messages)."""
        self.counters["dropped_incomplete"] += len(self.pending)
        self.pending.clear()
        if self.max_seen >= 0:  # a session's first seqs may follow another session's: nothing to count below
            self.counters["unseen_at_reset"] += max(0, from_seq - 1 - self.max_seen)
        # the episode starts at from_seq (seqs from there that never come are lost) when from_seq is ahead of all
        # seen, as a robot's counter is; a reset without from_seq (0) mid-session starts at the next seq seen
        self.anchored = from_seq > self.max_seen
        self.min_seq = from_seq
        self.last_submitted = self.max_seen = from_seq - 1

    def add(self, seq: int, stamp: float, part: Part) -> tuple[int, Slot] | None:
        """Take one part; returns (seq, slot) when that seq is complete (older pending seqs are then
        dropped: a newer observation supersedes them), else None."""
        if seq < self.min_seq:
            self.counters["before_reset"] += 1  # sent before the robot's last reset: not this episode
            return None
        if seq > self.max_seen:  # the first message of a new seq; seqs skipped never arrived at all
            self.counters["lost"] += max(0, seq - self.max_seen - 1) if self.max_seen >= 0 or self.anchored else 0
            self.max_seen = seq
        elif seq <= self.last_submitted or seq not in self.pending:
            if seq not in self.pending:
                self.counters["late_messages"] += 1  # a part of a seq already submitted or given up
            return None
        slot = self.pending.setdefault(seq, Slot(stamp))
        if part.kind == "image":
            slot.images[part.name] = part.array
        elif part.kind == "state":
            slot.state = part.array
        else:
            slot.extras[part.name] = part.array
        if (
            slot.state is not None
            and set(self.needed_cameras) <= set(slot.images)
            and set(self.needed_extras) <= set(slot.extras)
        ):
            return seq, self._complete(seq, slot)
        while len(self.pending) > self.max_pending:
            evicted = min(self.pending)
            self.pending.pop(evicted)
            self.last_submitted = max(self.last_submitted, evicted)  # its late parts are refused too
            self.counters["dropped_incomplete"] += 1
        return None

    def _complete(self, seq: int, slot: Slot) -> Slot:
        for older in [s for s in self.pending if s < seq]:
            self.pending.pop(older)
            self.counters["dropped_incomplete"] += 1
        self.pending.pop(seq, None)
        self.last_submitted = seq
        self.stamps[seq] = slot.stamp
        while len(self.stamps) > self.max_stamps:
            self.stamps.pop(next(iter(self.stamps)))
        return slot
