"""What a robot asks of the server (its contract), what it gets (its performance), and admission.

A robot may declare in its hello a ``contract``: ``rate_hz``, the action rate it needs; ``staleness_ms``,
the oldest newest-input it accepts when an action reaches the server's outbox; ``accept_lower_rate``,
whether it would rather be admitted at the rate that is left than refused; ``deadline_ms`` and
``control_hz``, its deadline contract (the longest it runs without a fresh row before its fallback, at
that control rate; ``auras_client.runtime``). Every session keeps a rolling :class:`Performance` of its
actions: rate, latency and staleness percentiles and deadline misses (actions staler than its bound),
reported in its ``stats``; with a deadline also the robot's deadline misses as the server sees them: an
action's H rows cover the robot from its newest input's arrival here for H control steps; a next action
sent more than ``deadline_ms`` after that cover ended is a miss (server clock; the network's delay to the
robot is not in it, so the robot's own count is the authority).

Admission (a server whose robots share one frame engine): every robot waiting takes part in every
frame, so each robot's rate is at most one action per engine frame, and a frame costs more with more
robots in it. The engine measures what its frames cost for each size it ran
(:meth:`~auras.pipeline.engine.FrameEngine.predicted_rate_hz`); a new robot is admitted only if, with it,
the predicted per-robot rate still meets the highest rate any contract (its own included) asks for.
Otherwise its hello is refused with ``over_capacity``, saying what rate is left, or, where the robot
allows it, admitted with ``granted_rate_hz``: the rate it can count on. Nothing slows the robots already
served without telling the new one. With nothing measured yet (no frame ran) a robot is admitted.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from auras_client.protocol import ProtocolError

__all__ = ["Contract", "Performance", "admit", "hold_contract", "parse_contract"]

WINDOW = 512  # actions a session's performance is computed over


CONTRACT_KEYS = ("rate_hz", "staleness_ms", "accept_lower_rate", "deadline_ms", "control_hz")


@dataclass(frozen=True, slots=True)
class Contract:
    rate_hz: float | None = None
    staleness_ms: float | None = None
    accept_lower_rate: bool = False
    deadline_ms: float | None = None
    control_hz: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in CONTRACT_KEYS}


def parse_contract(request: dict[str, Any]) -> Contract | None:
    """The hello's ``contract`` (None when it has none); ProtocolError ``bad_request`` for a malformed one."""
    raw = request.get("contract")
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - set(CONTRACT_KEYS):
        raise ProtocolError("bad_request", f"contract: expected a map of some of {{{', '.join(CONTRACT_KEYS)}}}, "
                            f"got {raw!r:.80}")
    values = {}
    for key in ("rate_hz", "staleness_ms", "deadline_ms", "control_hz"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value <= 0):
            raise ProtocolError("bad_request", f"contract.{key}: expected a positive number, got {value!r:.20}")
        values[key] = float(value) if value is not None else None
    lower = raw.get("accept_lower_rate", False)
    if not isinstance(lower, bool):
        raise ProtocolError("bad_request", f"contract.accept_lower_rate: expected true or false, got {lower!r:.20}")
    if (values["deadline_ms"] is None) != (values["control_hz"] is None):
        raise ProtocolError("bad_request", "contract: deadline_ms and control_hz come together (a deadline is "
                            f"judged against the robot's control rate), got {raw!r:.80}")
    return Contract(values["rate_hz"], values["staleness_ms"], lower, values["deadline_ms"], values["control_hz"])


def admit(predicted_rate_hz: float | None, contracts: list[Contract], new: Contract | None,
          sessions: int) -> float | None:
    """Whether a robot with contract ``new`` may join ``sessions`` robots whose contracts are ``contracts``,
    given ``predicted_rate_hz``: the per-robot rate the engine predicts with one more robot (None: nothing
    measured). Returns the rate granted to a robot admitted below its ask (``accept_lower_rate``), else
    None; raises ProtocolError ``over_capacity`` saying what is left."""
    if predicted_rate_hz is None:
        return None
    served = [c.rate_hz for c in contracts if c.rate_hz is not None]
    if served and predicted_rate_hz < max(served):
        raise ProtocolError(
            "over_capacity",
            f"with one more robot the engine would serve each of its {sessions + 1} robots at about "
            f"{predicted_rate_hz:.1f} Hz, below the {max(served):.1f} Hz a robot already served was promised; "
            f"capacity left: none at that rate (try another server, or later)",
        )
    if new is None or new.rate_hz is None or predicted_rate_hz >= new.rate_hz:
        return None
    if new.accept_lower_rate:
        return predicted_rate_hz
    raise ProtocolError(
        "over_capacity",
        f"this robot asks for {new.rate_hz:.1f} Hz; with it the engine would serve each of its {sessions + 1} "
        f"robots at about {predicted_rate_hz:.1f} Hz (capacity left per robot); send accept_lower_rate to be "
        "admitted at that rate",
    )


def hold_contract(agent: Any, contract: Contract | None, granted_rate_hz: float | None) -> None:
    """An adaptive robot's pipeline (``pipeline.controller: adaptive``) holds its contract: it re-plans its
    depth for the rate it was granted (or asked for) within its staleness bound. Others are unchanged."""
    hold = getattr(getattr(agent, "executor", None), "hold", None)
    if contract is None or hold is None:
        return
    hold(granted_rate_hz if granted_rate_hz is not None else contract.rate_hz, contract.staleness_ms)


class Performance:
    """A session's rolling record of its last :data:`WINDOW` actions (thread-safe)."""

    def __init__(self, contract: Contract | None = None, granted_rate_hz: float | None = None,
                 chunk_rows: int = 1) -> None:
        self.contract, self.granted_rate_hz = contract, granted_rate_hz
        self._actions: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=WINDOW)
        self._misses = 0
        deadline = contract is not None and contract.deadline_ms is not None and contract.control_hz is not None
        self._deadline_s = contract.deadline_ms / 1e3 if deadline else None
        self._cover_s = chunk_rows / contract.control_hz if deadline else 0.0  # what one chunk's rows last
        self._covered_until: float | None = None  # when the newest chunk sent runs out on the robot
        self._gap_misses, self._longest_gap_s = 0, 0.0
        self._lock = threading.Lock()

    def promised(self) -> Contract:
        """The contract as admitted: the granted rate where the robot took less than it asked for."""
        assert self.contract is not None
        if self.granted_rate_hz is None:
            return self.contract
        return replace(self.contract, rate_hz=self.granted_rate_hz)

    def episode_start(self) -> None:
        """The robot reset: until its next action it rests (as its runtime does, before an episode's first
        action), so the time up to then is no gap."""
        with self._lock:
            self._covered_until = None

    def record(self, latency_ms: float, staleness_ms: float | None, now: float | None = None) -> None:
        """An action went out ``staleness_ms`` after its newest input arrived (``now``: server monotonic)."""
        now = time.monotonic() if now is None else now
        stale = float(staleness_ms) if staleness_ms is not None else float("nan")
        with self._lock:
            self._actions.append((now, float(latency_ms), stale))
            bound = self.contract.staleness_ms if self.contract is not None else None
            if bound is not None and stale > bound:
                self._misses += 1
            if self._deadline_s is not None:
                if self._covered_until is not None and now - self._covered_until > self._deadline_s:
                    self._gap_misses += 1
                if self._covered_until is not None:
                    self._longest_gap_s = max(self._longest_gap_s, now - self._covered_until)
                arrived = now - (stale / 1e3 if math.isfinite(stale) else 0.0)
                self._covered_until = max(self._covered_until or arrived, arrived + self._cover_s)

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """``rate_hz`` (actions per second over the window), ``latency_ms`` and ``staleness_ms`` p50 / p99,
        ``deadline_misses`` (actions staler than the contract's bound, since the session began), the
        contract, the granted rate, and ``robot_deadline`` (with a deadline contract: the robot's deadline
        misses as the server sees them, a gap still open counted, and the longest gap, in ms)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            actions = list(self._actions)
            misses = self._misses
            robot = None
            if self._deadline_s is not None:
                gap = max(0.0, now - self._covered_until) if self._covered_until is not None else 0.0
                robot = {"misses": self._gap_misses + (gap > self._deadline_s),
                         "longest_gap_ms": 1e3 * max(self._longest_gap_s, gap)}
        out: dict[str, Any] = {"actions": len(actions), "deadline_misses": misses,
                               "contract": self.contract.as_dict() if self.contract is not None else None,
                               "granted_rate_hz": self.granted_rate_hz, "robot_deadline": robot}
        if len(actions) >= 2:
            span = actions[-1][0] - actions[0][0]
            out["rate_hz"] = (len(actions) - 1) / span if span > 0 else None
        for index, name in ((1, "latency_ms"), (2, "staleness_ms")):
            values = np.array([a[index] for a in actions], dtype=np.float64)
            values = values[np.isfinite(values)]
            out[name] = ({"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}
                         if len(values) else None)
        return out
