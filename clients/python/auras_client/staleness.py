"""Staleness strategies, the robot side (numpy only): what the robot does about acting on observations
that are old by the time their action arrives.

A request computed from the observation of control step ``s`` lands ``d`` control steps later (its
latency, or a pipeline's depth); meanwhile the robot keeps executing the chunk it has. Each
strategy answers that differently, and they compose (``"public_context+rtc"``):

- ``none``: the new chunk takes over from its first row when it lands.
- ``public_context``: the Auras mechanism, in the pipeline itself (mode ``auras``): every in-flight
  request's generation reads the freshest context, so the chunk that lands was conditioned on a
  fresher observation. Execution as ``none``.
- ``rtc``: real-time chunking (Black et al. 2025) for the denoising families. The observation
  carries the rows of the current chunk that will run while the request computes (its next ``d``
  rows, ``d`` the measured landing delay) and a soft mask; generation pulls the predicted clean
  chunk towards them at every denoising step, so the new chunk's first ``d`` rows equal what
  actually ran and the rest joins smoothly (:mod:`auras.generation.guidance`). The chunk runs
  time-aligned: row ``i`` at control step ``s + i`` (a chunk that lands more than H - execute_steps
  steps late starts at row H - execute_steps, and that many rows at most are frozen). With an
  ``execution_horizon`` k the robot sends an observation only once k rows of the current chunk
  have run (the RTC paper's execution horizon: one plan per k steps) and the mask leaves the last k
  rows free; 0 sends one whenever the agent can take it.
- ``roll_forward``: as VLASH, the observation's proprio state is advanced by the actions still
  pending before the chunk lands (``state[:dims] += action_scale * sum(clip(rows[:, :dims]))``,
  the delta-position control of Meta-World and auras' tasks), so the policy plans from where the
  robot will be. Execution as ``none``.
- ``chunk_blend``: LeRobot's async client: pending actions form a queue; a new request is sent only
  when the queue falls to ``queue_threshold`` of a chunk; rows of the new chunk whose control step
  has passed are dropped, overlapping ones are blended ``blend_old * old + (1 - blend_old) * new``.

:class:`ChunkExecutor` is the robot side of all of them: ``prepare_inputs`` for an observation before
it goes to the agent, ``accept_chunk`` when an action lands, ``row`` the action to apply at a control
step, ``wants_request`` whether to send an observation at all. Delays are counted in control steps the
robot itself ran (a chunk answering the observation of step ``s`` that lands at step ``t`` was ``t - s``
steps late): no clock is shared with the server. The server's part (resolving a strategy against a
pipeline mode, guided denoising) lives in ``auras.staleness`` and ``auras.generation.guidance``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "EXECUTOR_SETTINGS",
    "GUIDE_ACTIONS",
    "GUIDE_WEIGHTS",
    "RTC_SCHEDULES",
    "STRATEGIES",
    "ChunkExecutor",
    "Strategy",
    "StrategyError",
    "soft_mask",
]



class StrategyError(ValueError):
    """A staleness strategy or one of its settings is malformed or out of range (what was expected, what
    arrived)."""


STRATEGIES = ("none", "public_context", "rtc", "roll_forward", "chunk_blend")
EXECUTOR_SETTINGS = ("blend_old", "queue_threshold", "action_scale", "rolled_dims", "execution_horizon", "rtc_schedule")
"""The ``staleness`` settings the robot side reads (:meth:`ChunkExecutor.from_config`, the bridge's hello)."""
RTC_SCHEDULES = ("exp", "linear")
"""How rtc's weights fall from 1 to 0 (LeRobot's prefix_attention_schedule EXP and LINEAR)."""
GUIDE_ACTIONS = "guide_actions"
"""Observation extra (H, A) float32, env units: the rows rtc asks the new chunk to reproduce."""
GUIDE_WEIGHTS = "guide_weights"
"""Observation extra (H,) float32 in [0, 1]: how strongly each row is pulled (rtc's soft mask)."""


@dataclass(frozen=True, slots=True)
class Strategy:
    """A set of composable staleness fixes; ``Strategy.parse("public_context+rtc")``."""

    public_context: bool = False
    rtc: bool = False
    roll_forward: bool = False
    chunk_blend: bool = False

    @classmethod
    def parse(cls, text: str) -> Strategy:
        parts = [p.strip() for p in str(text).split("+") if p.strip()]
        unknown = [p for p in parts if p not in STRATEGIES]
        if not parts or unknown:
            raise StrategyError(
                f"staleness.strategy: expected 'none' or a '+'-joined set of {', '.join(STRATEGIES[1:])}, got {text!r}"
            )
        if "none" in parts and len(parts) > 1:
            raise StrategyError(f"staleness.strategy: 'none' combines with nothing, got {text!r}")
        if "rtc" in parts and "chunk_blend" in parts:
            raise StrategyError("staleness.strategy: rtc and chunk_blend both decide overlapping rows; pick one")
        return cls(**{name: name in parts for name in STRATEGIES[1:]})

    @property
    def name(self) -> str:
        chosen = [name for name in STRATEGIES[1:] if getattr(self, name)]
        return "+".join(chosen) if chosen else "none"

    @property
    def robot_side(self) -> Strategy:
        """The fixes the robot carries out (everything but the public context, which is the pipeline's)."""
        return replace(self, public_context=False)

    @property
    def time_aligned(self) -> bool:
        """Row i of a chunk from step s runs at step s + i (else the chunk starts when it lands)."""
        return self.rtc or self.chunk_blend


def soft_mask(horizon: int, delay: int, execute: int, schedule: str = "exp") -> np.ndarray:
    """RTC's guidance weights (H,): 1 for the ``delay`` rows that run before the chunk lands, a decay to 0 over
    the rows up to ``horizon - execute``, 0 for the last ``execute`` rows (the chunk always keeps those free; a
    longer delay freezes only ``horizon - execute`` rows). The decay is c = (end - i) / (end - delay + 1) at row i
    (``linear``) or c (e^c - 1) / (e - 1) (``exp``): LeRobot's ``get_prefix_weights(delay, horizon - execute,
    horizon)`` with ``prefix_attention_schedule`` LINEAR or EXP."""
    if schedule not in RTC_SCHEDULES:
        raise StrategyError(f"staleness.rtc_schedule: expected one of {', '.join(RTC_SCHEDULES)}, got {schedule!r}")
    end = max(0, horizon - execute)
    delay = max(0, min(int(delay), end))
    weights = np.zeros(horizon, np.float32)
    weights[:delay] = 1.0
    for i in range(delay, end):
        c = (end - i) / (end - delay + 1)
        weights[i] = c if schedule == "linear" else c * (math.exp(c) - 1) / (math.e - 1)
    return weights


class ChunkExecutor:
    """The robot side of a staleness strategy over one episode (see the module doc).

    ``execute_steps``: rows a chunk runs before the next is due (rtc's mask keeps the last ones
    free); ``chunk_shape``: (H, A) of the policy's chunks. Between ``reset`` calls the executor
    remembers the current chunk, where it started and the landing delays it has seen (rtc and
    roll_forward use the largest of the last few).
    """

    def __init__(
        self,
        strategy: Strategy | str = "none",
        execute_steps: int = 1,
        chunk_shape: tuple[int, int] = (1, 1),
        *,
        blend_old: float = 0.3,
        queue_threshold: float = 0.5,
        action_scale: float = 0.01,
        rolled_dims: int = 3,
        execution_horizon: int = 0,
        rtc_schedule: str = "exp",
    ) -> None:
        self.strategy = strategy if isinstance(strategy, Strategy) else Strategy.parse(strategy)
        if not 0.0 <= blend_old <= 1.0:
            raise StrategyError(f"staleness.blend_old: expected 0..1, got {blend_old}")
        if not 0.0 <= queue_threshold <= 1.0:
            raise StrategyError(f"staleness.queue_threshold: expected 0..1, got {queue_threshold}")
        if execute_steps < 1:
            raise StrategyError(f"execute_steps: expected >= 1, got {execute_steps}")
        if not 0 <= execution_horizon <= chunk_shape[0]:
            raise StrategyError(
                f"staleness.execution_horizon: expected 0..{chunk_shape[0]} (the chunk's rows), got {execution_horizon}"
            )
        if rtc_schedule not in RTC_SCHEDULES:
            raise StrategyError(
                f"staleness.rtc_schedule: expected one of {', '.join(RTC_SCHEDULES)}, got {rtc_schedule!r}"
            )
        self.execution_horizon, self.rtc_schedule = int(execution_horizon), rtc_schedule
        self.execute_steps, self.blend_old, self.queue_threshold = int(execute_steps), blend_old, queue_threshold
        self.horizon, self.action_dim = (int(n) for n in chunk_shape)
        self.action_scale, self.rolled_dims = float(action_scale), int(rolled_dims)
        self.reset()

    @classmethod
    def from_server(cls, info: dict, strategy: str | None = None) -> ChunkExecutor:
        """The executor of a session, from the server's hello reply ``info``: the policy's chunk shape and
        execute steps, the server's staleness settings (blend weight, queue threshold, execution horizon,
        ...) and ``strategy`` (default: the server's; public_context is the server's own part)."""
        shape = info.get("action_shape", [1, 1])
        chunk_shape = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
        name = strategy if strategy is not None else info.get("staleness_strategy", "none")
        settings = {key: value for key, value in info.get("staleness_settings", {}).items() if key in EXECUTOR_SETTINGS}
        return cls(Strategy.parse(name).robot_side, int(info.get("execute_steps", 1)), chunk_shape, **settings)

    def reset(self) -> None:
        self.chunk: np.ndarray | None = None  # (H, A)
        self.origin = 0  # the control step row 0 belongs to
        self.landed = 0  # the control step the current chunk took over
        self._delays: deque[int] = deque(maxlen=5)

    # -- what the robot asks ------------------------------------------------------------------------
    @property
    def delay_steps(self) -> int:
        """Expected control steps from an observation to its action landing (0 before any landed)."""
        return max(self._delays, default=0)

    def row(self, t: int) -> np.ndarray | None:
        """The action to apply at control step ``t``: the current chunk's row for ``t``, its last row
        past its end; None before any action landed (stand still)."""
        if self.chunk is None:
            return None
        return self.chunk[min(max(t - self.origin, 0), len(self.chunk) - 1)]

    def covers(self, t: int) -> bool:
        """The current chunk has a row of its own for control step ``t`` (not its last row held past its
        end)."""
        return self.chunk is not None and self.origin <= t < self.origin + len(self.chunk)

    def pending(self, t: int, count: int) -> np.ndarray | None:
        """The rows of control steps ``t .. t + count - 1`` (count, A), or None before any action."""
        if self.chunk is None:
            return None
        return np.stack([self.row(t + i) for i in range(count)]) if count > 0 else self.chunk[:0]

    def wants_request(self, t: int) -> bool:
        """chunk_blend: only when the queue of pending rows is at or below its threshold; rtc with an
        execution horizon k: only once k rows of the current chunk have run; otherwise always."""
        if self.chunk is None:
            return True
        if self.strategy.chunk_blend:
            remaining = self.origin + len(self.chunk) - t
            return remaining <= self.queue_threshold * len(self.chunk)
        if self.strategy.rtc and self.execution_horizon:
            return t - self.landed >= self.execution_horizon
        return True

    # -- observation out, action in ---------------------------------------------------------------
    def prepare_inputs(
        self, t: int, state: np.ndarray, planned: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The state to send with the observation of control step ``t`` (the same array when nothing
        changes) and the extras to add: rtc's guide rows and mask, roll_forward's advanced state.
        ``planned``: the rows the robot will apply from ``t`` on if no chunk lands (at least ``horizon``
        rows; a robot in its deadline fallback applies other rows than the chunk's); default
        :meth:`pending`."""
        delay, horizon = self.delay_steps, self.horizon
        extras: dict[str, np.ndarray] = {}
        if planned is not None and len(planned) < max(horizon, delay):
            raise StrategyError(f"planned: expected at least {max(horizon, delay)} rows, got {len(planned)}")
        if self.strategy.rtc:
            rows = self.pending(t, horizon) if planned is None or self.chunk is None else planned[:horizon]
            if rows is None:  # nothing runs yet: no constraint
                extras[GUIDE_ACTIONS] = np.zeros((horizon, self.action_dim), np.float32)
                extras[GUIDE_WEIGHTS] = np.zeros(horizon, np.float32)
            else:
                extras[GUIDE_ACTIONS] = rows.astype(np.float32)
                free = self.execution_horizon or self.execute_steps  # the rows this chunk leaves to the next
                extras[GUIDE_WEIGHTS] = soft_mask(horizon, delay, free, self.rtc_schedule)
        if self.strategy.roll_forward and delay > 0:
            rows = self.pending(t, delay) if planned is None else planned[:delay]
            if rows is not None:
                dims = min(self.rolled_dims, state.shape[0], rows.shape[1])
                state = np.array(state, np.float32)
                state[:dims] += self.action_scale * np.clip(rows[:, :dims], -1.0, 1.0).sum(0)
        return state, extras

    def accept_chunk(self, values: np.ndarray, source: int, t: int) -> None:
        """A chunk (H, A) or single action (A,) whose newest input is the observation of control step
        ``source`` lands at control step ``t``."""
        chunk = np.asarray(values, np.float32)
        chunk = chunk[None] if chunk.ndim == 1 else chunk
        self._delays.append(max(0, t - source))
        # time-aligned: row i belongs to step source + i, but a chunk that lands later than H - execute_steps
        # steps still runs its last execute_steps rows (rather than only holding its last row)
        origin = max(source, t - max(0, len(chunk) - self.execute_steps)) if self.strategy.time_aligned else t
        if self.strategy.chunk_blend and self.chunk is not None:
            chunk = chunk.copy()
            for i in range(max(0, t - origin), len(chunk)):  # rows still ahead that the old chunk covers too
                old = origin + i - self.origin
                if 0 <= old < len(self.chunk):
                    chunk[i] = self.blend_old * self.chunk[old] + (1 - self.blend_old) * chunk[i]
        self.chunk, self.origin, self.landed = chunk, origin, t
