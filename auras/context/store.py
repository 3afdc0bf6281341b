"""The public context store: versioned, double-buffered, one writer per key.

Perception writes the observation context of frame f under its key (``H_o`` or ``X_V``/``X_L``);
autoregressive generation writes the public action tokens. Readers ask for the newest version at
or before a frame (``frame + fetch_offset``) and get the value together with the frame it was
written for and when, so every action can report how stale its inputs were.

Double buffering: each key keeps the last ``slots`` versions (2 by default: the one being read
this frame and the one being written), so a reader never sees a half-written value and a write
never waits for a reader. Writes replace a whole slot; values are never mutated in place.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from auras.errors import InvalidInputError

__all__ = ["ContextSnapshot", "PublicContextStore"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ContextSnapshot(Generic[T]):
    """A value read from the store, with the frame it belongs to, its write time (monotonic s) and
    ``source``: the id of the input that produced it (an observation step id or a pipeline request id)."""

    key: str
    value: T
    frame: int
    written_at: float
    source: int | None = None


class PublicContextStore:
    """In-process store. ``write`` is called by the key's single owner; ``read`` by anyone."""

    def __init__(self, slots: int = 2) -> None:
        if slots < 2:
            raise InvalidInputError(f"PublicContextStore slots: expected >= 2 (double buffering), got {slots}")
        self._slots = slots
        self._versions: dict[str, deque[ContextSnapshot[Any]]] = {}
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()  # guards the dict of keys only; snapshots are immutable

    def claim(self, key: str, owner: str) -> None:
        """Make ``owner`` the only writer of ``key``; a second owner is refused."""
        with self._lock:
            current = self._owners.setdefault(key, owner)
        if current != owner:
            raise InvalidInputError(f"context key {key!r}: expected writes from its owner {current!r}, got {owner!r}")

    def write(self, key: str, value: Any, frame: int, owner: str, source: int | None = None) -> None:
        """Publish ``value`` as the context of ``frame`` (frames of one key only move forward)."""
        if self._owners.get(key) != owner:
            raise InvalidInputError(
                f"context key {key!r}: expected writes from its owner {self._owners.get(key)!r}, got {owner!r}"
            )
        versions = self._versions.get(key)
        if versions is None:
            with self._lock:
                versions = self._versions.setdefault(key, deque(maxlen=self._slots))
        if versions and frame < versions[-1].frame:
            raise InvalidInputError(
                f"context key {key!r}: expected frame >= {versions[-1].frame} (frames move forward), got {frame}"
            )
        versions.append(ContextSnapshot(key, value, frame, time.monotonic(), source))

    def read(self, key: str, frame: int | None = None) -> ContextSnapshot[Any]:
        """The newest version of ``key`` written for a frame <= ``frame`` (newest of all if None)."""
        versions = self._versions.get(key)
        if not versions:
            raise KeyError(f"context key {key!r} has not been written yet")
        for snapshot in reversed(tuple(versions)):  # copy: a concurrent append must not disturb us
            if frame is None or snapshot.frame <= frame:
                return snapshot
        oldest = versions[0].frame
        raise KeyError(f"context key {key!r}: no version at or before frame {frame} (oldest kept: {oldest})")

    def keys(self) -> list[str]:
        return list(self._versions)

    def clear(self) -> None:
        """Forget every version (new episode); owners stay."""
        with self._lock:
            self._versions.clear()
