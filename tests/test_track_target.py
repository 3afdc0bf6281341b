"""track-target-v0: gymnasium API, determinism, success definition, analytic expert."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

pytestmark = pytest.mark.mujoco


@pytest.fixture
def env():
    from auras.envs.track_target import TrackTargetEnv

    env = TrackTargetEnv(horizon=200)
    yield env
    env.close()


def _rollout(env, expert, seed: int, steps: int, delay: int = 0):
    from collections import deque

    obs, info = env.reset(seed=seed)
    expert.reset()
    states = deque([info["privileged_state"]], maxlen=delay + 1)
    trace = [(obs, info)]
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(expert.act(states[0]))
        states.append(info["privileged_state"])
        trace.append((obs, info))
        if terminated or truncated:
            break
    return trace


def test_check_env_passes_without_warnings():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import auras.envs  # noqa: F401  (registers auras/track-target-v0)

    env = gym.make("auras/track-target-v0").unwrapped  # unwrapped, but with a spec for the render checks
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env)
        assert [str(w.message) for w in caught] == []
    finally:
        env.close()


def test_same_seed_same_episode(env):
    from auras.envs.track_target import TrackTargetExpert

    a = _rollout(env, TrackTargetExpert(), seed=7, steps=20)
    b = _rollout(env, TrackTargetExpert(), seed=7, steps=20)
    assert len(a) == len(b)
    for (obs_a, info_a), (obs_b, info_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
        np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
        np.testing.assert_array_equal(info_a["privileged_state"], info_b["privileged_state"])
    c = _rollout(env, TrackTargetExpert(), seed=8, steps=0)
    assert not np.array_equal(a[0][1]["privileged_state"], c[0][1]["privileged_state"])


def test_observation_and_privileged_state_layout(env):
    from auras.envs.track_target import CONTROL_DT, PS_DIM

    obs, info = env.reset(seed=3)
    assert obs in env.observation_space
    assert obs["image"].shape == (84, 84, 3) and obs["image"].dtype == np.uint8
    ps = info["privileged_state"]
    assert ps.shape == (PS_DIM,) and ps.dtype == np.float64
    np.testing.assert_allclose(obs["state"][:3], ps[0:3], atol=1e-6)  # proprio = hand position
    # The ball moves by itself: with a zero action its position changes by about velocity * dt.
    _, _, _, _, info2 = env.step(np.zeros(4, dtype=np.float32))
    ps2 = info2["privileged_state"]
    np.testing.assert_allclose(ps2[0:3], ps[0:3])  # hand did not move
    np.testing.assert_allclose(ps2[3:5], ps[3:5] + ps[6:8] * CONTROL_DT, atol=2e-3)
    assert ps2[11] == pytest.approx(CONTROL_DT)
    # The image shows red (the ball) and blue (the hand).
    img = obs["image"].astype(int)
    assert ((img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)).any()
    assert ((img[..., 2] > 150) & (img[..., 0] < 80)).any()


def test_action_moves_hand_like_metaworld(env):
    from auras.envs.track_target import ACTION_SCALE

    obs, _ = env.reset(seed=5)
    obs2, *_ = env.step(np.array([1.0, -1.0, 0.0, 0.3], dtype=np.float32))
    np.testing.assert_allclose(obs2["state"][:3] - obs["state"][:3], [ACTION_SCALE, -ACTION_SCALE, 0.0], atol=1e-6)
    assert obs2["state"][3] == pytest.approx(-0.3)  # gripper opening recorded, no effect


def test_expert_succeeds_at_zero_delay(env):
    from auras.envs.track_target import TrackTargetExpert

    successes = sum(_rollout(env, TrackTargetExpert(), seed=s, steps=200)[-1][1]["success"] for s in range(5))
    assert successes >= 4


def test_expert_fails_with_stale_state(env):
    from auras.envs.track_target import TrackTargetExpert

    successes = sum(_rollout(env, TrackTargetExpert(), seed=s, steps=200, delay=8)[-1][1]["success"] for s in range(3))
    assert successes <= 1


def test_hand_far_from_target_never_succeeds(env):
    from auras.envs.track_target import SUCCESS_RADIUS

    env.reset(seed=11)
    for step in range(200):
        # Drive to a workspace corner (reached within 30 steps) while the ball circles the centre.
        _, reward, terminated, truncated, info = env.step(np.array([-1.0, -1.0, 0.0, 0.0], dtype=np.float32))
        assert not info["success"] and not terminated
        assert info["privileged_state"][10] == 0  # no step counted as in radius
        if step >= 30:
            assert -reward > 2 * SUCCESS_RADIUS
    assert truncated


def test_success_needs_consecutive_steps_in_radius(env):
    from auras.envs.track_target import SUCCESS_STEPS

    env.reset(seed=2)
    streaks, successes = [], []
    for _ in range(SUCCESS_STEPS):
        env.hand = [*env.privileged_state()[3:5], env.hand[2]]  # teleport onto the ball, then take a zero step
        _, _, terminated, _, info = env.step(np.zeros(4, dtype=np.float32))
        streaks.append(info["privileged_state"][10])
        successes.append(info["success"])
    assert streaks == list(range(1, SUCCESS_STEPS + 1))
    assert successes == [False] * (SUCCESS_STEPS - 1) + [True]
    assert terminated


def test_close_is_idempotent():
    from auras.envs.track_target import TrackTargetEnv

    env = TrackTargetEnv()
    env.reset(seed=0)
    env.close()
    env.close()
    fresh = TrackTargetEnv()
    fresh.close()  # never rendered


def test_make_env_and_make_expert():
    from auras.envs import make_env
    from auras.envs.experts import make_expert
    from auras.envs.track_target import TrackTargetEnv, TrackTargetExpert

    env = make_env("track-target-v0", horizon=10, image_size=32)
    try:
        assert isinstance(env, TrackTargetEnv)
        obs, _ = env.reset(seed=0)
        assert obs["image"].shape == (32, 32, 3)
        assert obs["instruction"] == "track the moving red ball with the gripper"
    finally:
        env.close()
    assert isinstance(make_expert("track-target-v0"), TrackTargetExpert)
