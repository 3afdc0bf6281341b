"""What every auras task env shares: observation layout, rendering, success info, close.

Observation (a gymnasium Dict):
    image:       (S, S, 3) uint8 RGB from the front free camera (S = image_size, default 84)
    state:       (4,) float32 proprio: hand x, y, z (metres) and gripper opening (~[-1, 1])
    instruction: the task in words (constant per task)
Action: (4,) float32 in [-1, 1]: hand x, y, z displacement (scaled by the task) and gripper effort.
info: ``success`` (bool), ``privileged_state`` (float64 simulator state for scripted experts only),
      ``task``.
Episodes are deterministic under ``reset(seed=...)``.
"""

from __future__ import annotations

import string
from abc import abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from auras.envs.render import CameraPose, FastCamera
from auras.tasks import TASKS
from auras.types import Observation

__all__ = ["STATE_DIM", "AurasTaskEnv", "to_observation"]

STATE_DIM = 4
# Hand positions stay within a metre or two of the origin; the gripper opening is in [-1, 1].
_STATE_LOW = np.array([-2.0, -2.0, -2.0, -1.0], dtype=np.float32)
_STATE_HIGH = np.array([2.0, 2.0, 2.0, 1.0], dtype=np.float32)
_CHARSET = string.ascii_letters + string.digits + " -_,.'"


class AurasTaskEnv(gym.Env[dict[str, Any], np.ndarray]):
    """Base class: subclasses provide the simulation; this class provides the observation contract."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 80}
    camera_pose: ClassVar[CameraPose] = CameraPose()

    def __init__(
        self,
        task: str,
        horizon: int = 200,
        image_size: int = 84,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.task = task
        self.instruction = TASKS[task].instruction
        self.horizon = horizon
        self.image_size = image_size
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "state": spaces.Box(_STATE_LOW, _STATE_HIGH, (STATE_DIM,), np.float32),
                "instruction": spaces.Text(max_length=256, min_length=1, charset=_CHARSET),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._camera: FastCamera | None = None
        self._last_image: np.ndarray | None = None
        self._steps = 0

    @property
    def control_dt(self) -> float:
        """Simulated seconds per control step (12.5 ms: 80 Hz, as in Meta-World)."""
        return 1.0 / self.metadata["render_fps"]

    # -- subclass hooks -------------------------------------------------------------------------
    @abstractmethod
    def _sim_reset(self, seed: int | None) -> None:
        """Reset the simulation; with a seed, deterministically."""

    @abstractmethod
    def _sim_step(self, action: np.ndarray) -> tuple[float, bool]:
        """Apply one control step; return (reward, success)."""

    @abstractmethod
    def _proprio(self) -> np.ndarray:
        """(4,) hand x, y, z and gripper opening."""

    @abstractmethod
    def privileged_state(self) -> np.ndarray:
        """Full simulator state for scripted experts (float64)."""

    @property
    @abstractmethod
    def _mj(self) -> tuple[Any, Any]:
        """(mujoco.MjModel, mujoco.MjData) to render."""

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._steps = 0
        self._sim_reset(seed)
        return self._observe(), self._info(success=False)

    def step(self, action: np.ndarray):
        reward, terminated, truncated, info = self.advance(action)
        return self._observe(), reward, terminated, truncated, info

    def advance(self, action: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """One control step without a camera frame (a robot whose camera runs slower than its
        control loop): (reward, terminated, truncated, info). Take frames with :meth:`observe`."""
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action: expected 4 finite floats in [-1, 1], got {action!r}")
        reward, success = self._sim_step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        terminated = bool(success and self.terminate_on_success)
        truncated = self._steps >= self.horizon and not terminated
        return float(reward), terminated, truncated, self._info(success)

    def observe(self) -> dict[str, Any]:
        """The observation now (renders a camera frame): image, state, instruction."""
        return self._observe()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._last_image.copy() if self._last_image is not None else self._render_image()

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None

    # -- helpers --------------------------------------------------------------------------------
    def _render_image(self) -> np.ndarray:
        if self._camera is None:
            self._camera = FastCamera(self._mj[0], self.image_size, self.camera_pose)
        return self._camera.render(self._mj[1])

    def _observe(self) -> dict[str, Any]:
        self._last_image = self._render_image()
        return {
            "image": self._last_image,
            "state": self._proprio().astype(np.float32),
            "instruction": self.instruction,
        }

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": bool(success), "privileged_state": self.privileged_state(), "task": self.task}


def to_observation(
    env_obs: dict[str, Any],
    info: dict[str, Any],
    step_id: int,
    capture_time: float,
    privileged: bool = False,
    camera: str = "front",
):
    """An auras Observation from an env observation; ``privileged`` adds the simulator state."""
    extras = {"privileged_state": np.asarray(info["privileged_state"], dtype=np.float64)} if privileged else {}
    return Observation(
        images={camera: env_obs["image"]},
        state=env_obs["state"],
        instruction=env_obs["instruction"],
        step_id=step_id,
        capture_time=capture_time,
        extras=extras,
    )
