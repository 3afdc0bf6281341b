"""track-target-v0: keep the gripper over a red ball that moves on its own across a table.

Unlike the Meta-World tasks, the world here does not wait for the agent: the ball (a kinematic
mocap body) moves continuously with simulation time along a smooth seed-dependent path, a slow
Lissajous curve (an ellipse or a figure-eight: random centre, size, phase, direction, mean speed
0.15-0.25 m/s) plus a small fast wobble (1.5-2.5 cm at 1.5-2.5 Hz per axis). The "hand" (a mocap
body drawn as a small blue gripper) moves the way Meta-World's does: each control step adds
``clip(action[:3], -1, 1) * 0.01`` m to its position, clipped to a workspace box (x in
[-0.25, 0.25], y in [0.4, 0.8], z in [0.05, 0.10]: the task is planar but keeps the 4-d action).
``action[3]`` (gripper effort) has no effect on the world; it is only recorded as the gripper
opening ``-action[3]`` (Meta-World's convention: -1 opens), which starts at 1 (open).

One control step is 12.5 ms of simulation time (timestep 2.5 ms, 5 substeps), as in Meta-World.

Success: the hand is within ``SUCCESS_RADIUS`` = 2.5 cm (xy) of the ball centre for
``SUCCESS_STEPS`` = 15 consecutive control steps. Reward: minus the xy distance in metres.

Why this task: to stay on a moving, wobbling ball a controller must be stiff, and a stiff
controller acting on stale observations overshoots and oscillates; a soft one lags behind the
wobble. The analytic expert below succeeds on every seed tried with fresh state and with 1-2 steps
of action latency, and on almost none at 4-8 steps (docs/staleness.md), so control frequency and
staleness visibly matter. Lower-gain trackers tolerate 4 steps but not 8.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from auras.envs.base import AurasTaskEnv
from auras.envs.expert_base import Expert
from auras.envs.render import CameraPose, mujoco

__all__ = ["TrackTargetEnv", "TrackTargetExpert"]

# -- task constants (metres, seconds) ---------------------------------------------------------------
TIMESTEP = 0.0025
SUBSTEPS = 5
CONTROL_DT = TIMESTEP * SUBSTEPS  # 12.5 ms of sim time per control step
ACTION_SCALE = 0.01  # hand displacement per unit action per control step (as Meta-World)

TABLE_CENTER = np.array([0.0, 0.6])
WORKSPACE_LOW = np.array([-0.25, 0.40, 0.05])
WORKSPACE_HIGH = np.array([0.25, 0.80, 0.10])
HAND_Z0 = 0.07  # start (and expert's preferred) hand height
BALL_RADIUS = 0.02

# Ball path: centre jitter, semi-axes, frequency ratios and mean speed, sampled per episode.
CENTER_JITTER = 0.03
AMP_X = (0.10, 0.17)
AMP_Y = (0.07, 0.12)
FREQ_RATIOS = ((1, 1), (1, 2), (2, 1))
MEAN_SPEED = (0.15, 0.25)  # m/s along the path
# A small fast wobble on top of the slow path (per axis: amplitude in m, frequency in Hz): smooth, but
# it turns the ball's velocity within a few control steps, so acting on old observations misses it.
WOBBLE_AMP = (0.015, 0.025)
WOBBLE_HZ = (1.5, 2.5)

SUCCESS_RADIUS = 0.025
SUCCESS_STEPS = 15

# Privileged-state layout (float64).
PS_HAND = slice(0, 3)
PS_TARGET = slice(3, 6)
PS_TARGET_VEL = slice(6, 9)
PS_GRIPPER = 9
PS_STREAK = 10
PS_TIME = 11
PS_DIM = 12

_MJCF = f"""
<mujoco model="track_target">
  <option timestep="{TIMESTEP}" gravity="0 0 0"/>
  <visual>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
    <quality offsamples="0" shadowsize="0"/>
  </visual>
  <default>
    <geom contype="0" conaffinity="0"/>
  </default>
  <worldbody>
    <light pos="0 0.6 1.5" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.4 0.4 0.4"/>
    <geom name="table" type="plane" pos="0 0.6 0" size="1.5 1.5 0.01" rgba="0.45 0.36 0.28 1"/>
    <geom name="workspace" type="box" pos="0 0.6 0.0005" size="0.25 0.2 0.0005" rgba="0.62 0.62 0.58 1"/>
    <body name="target" mocap="true" pos="0 0.6 {BALL_RADIUS}">
      <geom name="ball" type="sphere" size="{BALL_RADIUS}" rgba="0.9 0.08 0.08 1"/>
    </body>
    <body name="hand" mocap="true" pos="0 0.6 {HAND_Z0}">
      <geom name="palm" type="box" size="0.034 0.008 0.006" rgba="0.15 0.35 0.95 1"/>
      <geom name="finger_l" type="box" pos="-0.029 0 -0.02" size="0.005 0.008 0.016" rgba="0.15 0.35 0.95 1"/>
      <geom name="finger_r" type="box" pos="0.029 0 -0.02" size="0.005 0.008 0.016" rgba="0.15 0.35 0.95 1"/>
      <geom name="wrist" type="cylinder" pos="0 0 0.03" size="0.01 0.024" rgba="0.1 0.1 0.12 1"/>
    </body>
  </worldbody>
</mujoco>
"""


class _BallPath:
    """Per axis: c + A sin(n w t + phi) (a Lissajous curve) + B sin(w_b t + psi) (the wobble); exact velocity."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.center = TABLE_CENTER + rng.uniform(-CENTER_JITTER, CENTER_JITTER, 2)
        self.amp = np.array([rng.uniform(*AMP_X), rng.uniform(*AMP_Y)])
        self.ratio = np.array(FREQ_RATIOS[rng.integers(len(FREQ_RATIOS))], dtype=np.float64)
        phi_x = rng.uniform(0.0, 2.0 * np.pi)
        # An ellipse (1:1) degenerates to a line when the phases agree; keep it round enough.
        offset = rng.uniform(np.pi / 4, 3 * np.pi / 4) if self.ratio[0] == self.ratio[1] else 0.0
        phi_y = phi_x + offset if offset else rng.uniform(0.0, 2.0 * np.pi)
        self.phase = np.array([phi_x, phi_y])
        # Angular rate such that the mean speed over one period equals the sampled speed.
        s = np.linspace(0.0, 2.0 * np.pi, 512, endpoint=False)
        unit_speed = np.hypot(*(self.amp[:, None] * self.ratio[:, None] * np.cos(self.ratio[:, None] * s)))
        direction = 1.0 if rng.random() < 0.5 else -1.0
        self.omega = direction * rng.uniform(*MEAN_SPEED) / float(unit_speed.mean())
        self.wobble_amp = rng.uniform(*WOBBLE_AMP, 2)
        self.wobble_omega = 2.0 * np.pi * rng.uniform(*WOBBLE_HZ, 2)
        self.wobble_phase = rng.uniform(0.0, 2.0 * np.pi, 2)

    def position(self, t: float) -> np.ndarray:
        xy = self.center + self.amp * np.sin(self.ratio * self.omega * t + self.phase)
        xy += self.wobble_amp * np.sin(self.wobble_omega * t + self.wobble_phase)
        return np.array([xy[0], xy[1], BALL_RADIUS])

    def velocity(self, t: float) -> np.ndarray:
        w = self.ratio * self.omega
        vxy = self.amp * w * np.cos(w * t + self.phase)
        vxy += self.wobble_amp * self.wobble_omega * np.cos(self.wobble_omega * t + self.wobble_phase)
        return np.array([vxy[0], vxy[1], 0.0])


class TrackTargetEnv(AurasTaskEnv):
    """Keep the gripper over a moving red ball (see the module docstring for the rules)."""

    camera_pose: ClassVar[CameraPose] = CameraPose(
        azimuth=-90.0, elevation=-72.0, distance=0.88, lookat=(0.0, 0.6, 0.0)
    )

    def __init__(
        self,
        horizon: int = 200,
        image_size: int = 84,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            "track-target-v0",
            horizon=horizon,
            image_size=image_size,
            terminate_on_success=terminate_on_success,
            render_mode=render_mode,
        )
        self._model = mujoco.MjModel.from_xml_string(_MJCF)
        self._data = mujoco.MjData(self._model)
        self._hand_mocap = int(self._model.body("hand").mocapid[0])
        self._target_mocap = int(self._model.body("target").mocapid[0])
        self._path: _BallPath | None = None
        self._hand = np.array([TABLE_CENTER[0], TABLE_CENTER[1], HAND_Z0])
        self._gripper = 1.0
        self._streak = 0

    @property
    def hand(self) -> np.ndarray:
        """The hand's position (x, y, z); assign one to place the hand (a scripted start, a test). It takes
        effect with the next step."""
        return self._hand.copy()

    @hand.setter
    def hand(self, xyz: Any) -> None:
        self._hand = np.clip(np.asarray(xyz, np.float64).reshape(3), WORKSPACE_LOW, WORKSPACE_HIGH)

    @property
    def _mj(self) -> tuple[Any, Any]:
        return self._model, self._data

    # -- simulation ----------------------------------------------------------------------------
    def _sim_reset(self, seed: int | None) -> None:
        # super().reset(seed=seed) has (re)seeded self.np_random; without a seed it continues.
        rng = self.np_random
        self._path = _BallPath(rng)
        self._hand = np.array(
            [rng.uniform(-0.15, 0.15) + TABLE_CENTER[0], rng.uniform(-0.1, 0.1) + TABLE_CENTER[1], HAND_Z0]
        )
        self._gripper = 1.0
        self._streak = 0
        mujoco.mj_resetData(self._model, self._data)
        self._sync()

    def _sim_step(self, action: np.ndarray) -> tuple[float, bool]:
        if self._path is None:
            raise RuntimeError("TrackTargetEnv.step() called before reset()")
        self._hand = np.clip(self._hand + action[:3].astype(np.float64) * ACTION_SCALE, WORKSPACE_LOW, WORKSPACE_HIGH)
        self._gripper = float(-action[3])
        self._data.mocap_pos[self._hand_mocap] = self._hand
        for _ in range(SUBSTEPS):
            self._data.mocap_pos[self._target_mocap] = self._path.position(self._data.time)
            mujoco.mj_step(self._model, self._data)
        self._sync()
        dist = self._distance()
        self._streak = self._streak + 1 if dist < SUCCESS_RADIUS else 0
        return -dist, self._streak >= SUCCESS_STEPS

    def _sync(self) -> None:
        """Put both mocap bodies where they are at the current sim time; update kinematics and lights."""
        assert self._path is not None
        self._data.mocap_pos[self._hand_mocap] = self._hand
        self._data.mocap_pos[self._target_mocap] = self._path.position(self._data.time)
        mujoco.mj_forward(self._model, self._data)

    def _distance(self) -> float:
        assert self._path is not None
        return float(np.linalg.norm(self._hand[:2] - self._path.position(self._data.time)[:2]))

    # -- observation contract ------------------------------------------------------------------
    def _proprio(self) -> np.ndarray:
        return np.array([*self._hand, self._gripper], dtype=np.float32)

    def privileged_state(self) -> np.ndarray:
        """(12,) float64: hand xyz [0:3], ball xyz [3:6], ball velocity xyz [6:9] (m/s),
        gripper opening [9], consecutive in-radius steps so far [10], sim time in seconds [11]."""
        if self._path is None:
            return np.zeros(PS_DIM)
        t = float(self._data.time)
        return np.concatenate(
            [self._hand, self._path.position(t), self._path.velocity(t), [self._gripper, self._streak, t]]
        ).astype(np.float64)


class TrackTargetExpert(Expert):
    """Proportional tracking with velocity feed-forward, computed from the privileged state.

    Aims at where the ball will be after this control step (position + velocity * dt) and closes
    ``gain`` of the remaining gap per step; keeps the hand at its start height and the gripper open.
    A stiff gain is what tracking a moving ball needs, and it is also what makes the expert (and any
    policy cloned from it) sensitive to acting on stale state.
    """

    def __init__(self, gain: float = 0.5) -> None:
        self.gain = gain

    def act(self, privileged_state: np.ndarray) -> np.ndarray:
        s = np.asarray(privileged_state, dtype=np.float64)
        hand, target, vel = s[PS_HAND], s[PS_TARGET], s[PS_TARGET_VEL]
        step = vel * CONTROL_DT
        move = step + self.gain * (target + step - hand)
        move[2] = self.gain * (HAND_Z0 - hand[2])
        action = np.empty(4, dtype=np.float32)
        action[:3] = np.clip(move / ACTION_SCALE, -1.0, 1.0)
        action[3] = -1.0  # keep the gripper open
        return action
