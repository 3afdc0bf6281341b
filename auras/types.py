"""Wire-neutral data types that cross every boundary: Observation in, Action out.

Both validate themselves on construction, so a bad observation is rejected at the API boundary
with a message that names the field, what was expected and what arrived. Arrays are plain numpy
(no torch), so these types are usable by a robot-side process that has only numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from auras.errors import InvalidInputError

__all__ = ["Action", "Observation", "ObservationSpec", "StepTimings"]


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise InvalidInputError(f"{name}: expected finite values, got {array[tuple(bad)]!r} at index {tuple(bad)}")


def _check_image(name: str, image: object) -> None:
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"{name}: expected a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInputError(f"{name}: expected shape (H, W, 3), got {tuple(image.shape)}")


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation from the robot.

    images: camera name -> (H, W, 3) uint8 RGB.
    state: (D,) float32 proprioception (hand position, gripper, joint positions...).
    instruction: the task in words; non-empty.
    step_id: the robot's sequence number for this observation (>= 0).
    capture_time: when it was captured, seconds on the monotonic clock of the process that owns the
        agent (``time.monotonic()``); staleness and latency are measured from it.
    extras: named float arrays a policy may ask for beyond the camera and proprio. Learned policies
        never read them; the ``expert`` policy reads ``extras["privileged_state"]`` (full simulator
        state), which a real robot does not have.
    """

    images: Mapping[str, np.ndarray]
    state: np.ndarray
    instruction: str
    step_id: int
    capture_time: float
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.images, Mapping) or not self.images:
            raise InvalidInputError(
                f"Observation.images: expected a non-empty mapping camera name -> (H, W, 3) uint8 image, "
                f"got {self.images!r:.80}"
            )
        for cam, image in self.images.items():
            _check_image(f"Observation.images[{cam!r}]", image)
        if not isinstance(self.state, np.ndarray):
            raise InvalidInputError(
                f"Observation.state: expected a numpy array (D,) float32, got {type(self.state).__name__}"
            )
        if self.state.dtype != np.float32:
            raise InvalidInputError(f"Observation.state: expected dtype float32, got {self.state.dtype}")
        if self.state.ndim != 1:
            raise InvalidInputError(f"Observation.state: expected shape (D,), got {tuple(self.state.shape)}")
        _check_finite("Observation.state", self.state)
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise InvalidInputError(f"Observation.instruction: expected non-empty text, got {self.instruction!r}")
        if isinstance(self.step_id, bool) or not isinstance(self.step_id, (int, np.integer)) or self.step_id < 0:
            raise InvalidInputError(f"Observation.step_id: expected an integer >= 0, got {self.step_id!r}")
        if not isinstance(self.capture_time, (int, float)) or not math.isfinite(self.capture_time):
            raise InvalidInputError(
                f"Observation.capture_time: expected finite seconds (time.monotonic()), got {self.capture_time!r}"
            )
        for key, value in self.extras.items():
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise InvalidInputError(
                    f"Observation.extras[{key!r}]: expected a float numpy array, got {type(value).__name__}"
                    + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
                )
            _check_finite(f"Observation.extras[{key!r}]", value)


@dataclass(frozen=True, slots=True)
class ObservationSpec:
    """What a policy needs from an observation: camera names and sizes, proprio size, extras.

    Cameras the robot sends beyond ``cameras`` are ignored, so a robot with an extra camera still works.
    ``max_instruction_bytes``: the longest instruction (UTF-8 bytes) the policy reads; None when any length
    is accepted (a tokenizer that truncates, or a policy without language).
    """

    cameras: Mapping[str, tuple[int, int]]
    state_dim: int
    extras: tuple[str, ...] = ()
    max_instruction_bytes: int | None = None

    def check_instruction(self, instruction: str) -> None:
        """Raise InvalidInputError if the policy cannot read ``instruction`` (longer than it accepts)."""
        if self.max_instruction_bytes is None:
            return
        size = len(instruction.encode("utf-8"))
        if size > self.max_instruction_bytes:
            raise InvalidInputError(
                f"instruction: expected at most {self.max_instruction_bytes} UTF-8 bytes for this policy, "
                f"got {size}: {instruction[:60]!r}{'...' if len(instruction) > 60 else ''}"
            )

    def check(self, obs: Observation) -> None:
        """Raise InvalidInputError if ``obs`` does not fit this spec."""
        for cam, (height, width) in self.cameras.items():
            if cam not in obs.images:
                raise InvalidInputError(
                    f"Observation.images: expected camera {cam!r} (policy needs {sorted(self.cameras)}), "
                    f"got cameras {sorted(obs.images)}"
                )
            shape = obs.images[cam].shape
            if shape[:2] != (height, width):
                raise InvalidInputError(
                    f"Observation.images[{cam!r}]: expected shape ({height}, {width}, 3), got {tuple(shape)}"
                )
        if obs.state.shape != (self.state_dim,):
            raise InvalidInputError(
                f"Observation.state: expected shape ({self.state_dim},), got {tuple(obs.state.shape)}"
            )
        self.check_instruction(obs.instruction)
        for key in self.extras:
            if key not in obs.extras:
                raise InvalidInputError(
                    f"Observation.extras: expected key {key!r} (this policy is privileged and needs the "
                    f"simulator state), got keys {sorted(obs.extras)}"
                )


@dataclass(frozen=True, slots=True)
class StepTimings:
    """Where the time of one action went.

    stages_ms: stage name -> milliseconds spent computing it for this action (e.g. perception,
        generation).
    latency_ms: observation admitted -> action out, milliseconds.
    """

    stages_ms: Mapping[str, float]
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Action:
    """One action (shape (A,)) or action chunk (shape (H, A)), float32, finite.

    step_id and capture_time are those of the observation the action was computed from (the
    request's own), so every action can be traced to its input. In pipelined modes generation may
    read fresher contexts than its own observation: ``context_step_id`` is the newest observation
    that influenced the action, ``staleness_frames`` how many frames old that observation's
    admission was when the action came out (None outside frame-based modes), and ``staleness_ms``
    how old it was then: emission time minus its capture_time (same monotonic clock on one host).
    """

    values: np.ndarray
    step_id: int
    capture_time: float
    timings: StepTimings
    context_step_id: int | None = None
    staleness_frames: int | None = None
    frame: int | None = None
    staleness_ms: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.values, np.ndarray) or self.values.dtype != np.float32:
            got = self.values.dtype if isinstance(self.values, np.ndarray) else type(self.values).__name__
            raise InvalidInputError(f"Action.values: expected float32 numpy array, got {got}")
        if self.values.ndim not in (1, 2) or self.values.size == 0:
            raise InvalidInputError(f"Action.values: expected shape (A,) or (H, A), got {tuple(self.values.shape)}")
        _check_finite("Action.values", self.values)

    @property
    def is_chunk(self) -> bool:
        return self.values.ndim == 2

    @property
    def chunk(self) -> np.ndarray:
        """The actions as (H, A); a single action is a chunk of one."""
        return self.values if self.is_chunk else self.values[None]
