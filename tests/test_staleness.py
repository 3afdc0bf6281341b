"""Staleness strategies: the robot-side executor, rtc's guidance in the denoising policies, the config."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from auras import AurasAgent, load_config
from auras.errors import ConfigError, InvalidInputError
from auras.generation.guidance import guide_epsilon, guide_velocity
from auras.staleness import (
    GUIDE_ACTIONS,
    GUIDE_WEIGHTS,
    ChunkExecutor,
    Strategy,
    StrategyError,
    accept_action,
    parse_strategy,
    prepare_observation,
    resolve_strategy,
    soft_mask,
)
from auras.types import Action, Observation, StepTimings


def _obs(step: int, state=(0.1, 0.2, 0.3, 0.5), extras=None, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(
        images={"front": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
        state=np.asarray(state, np.float32),
        instruction="push the puck",
        step_id=step,
        capture_time=time.monotonic(),
        extras=extras or {},
    )


def _action(values: np.ndarray, step: int, context_step: int | None = None) -> Action:
    return Action(np.asarray(values, np.float32), step, 0.0, StepTimings({}, 0.0), context_step_id=context_step)


def _chunk(base: float, horizon: int = 8, dim: int = 4) -> np.ndarray:
    return (base + np.arange(horizon)[:, None] * 0.01 + np.zeros((1, dim))).astype(np.float32)


# -- strategies and config ------------------------------------------------------------------------------
def test_strategies_parse_compose_and_must_fit_the_mode():
    assert Strategy.parse("public_context+rtc") == Strategy(public_context=True, rtc=True)
    assert Strategy.parse("none").name == "none" and Strategy.parse("roll_forward+chunk_blend").time_aligned
    for bad in ("", "fast", "none+rtc", "rtc+chunk_blend"):
        with pytest.raises(StrategyError, match=r"staleness\.strategy"):  # the robot client's error
            Strategy.parse(bad)
        with pytest.raises(ConfigError, match=r"staleness\.strategy"):  # auras' own
            parse_strategy(bad)
    assert resolve_strategy("auto", "auras").public_context and not resolve_strategy("auto", "pipeline").public_context
    with pytest.raises(ConfigError, match="public_context is mode auras"):
        resolve_strategy("public_context", "pipeline")
    # mode auras always reads the public context: the same setting gives every mode the same robot-side fixes
    assert resolve_strategy("rtc", "auras") == Strategy(public_context=True, rtc=True)
    assert resolve_strategy("none", "auras").name == "public_context" and resolve_strategy("rtc", "sequential").rtc
    with pytest.raises(ConfigError, match=r"staleness.strategy: got 'rtc\+x'"):
        load_config(None, ["staleness.strategy=rtc+x"])
    assert load_config(None, ["pipeline.mode=auras", "staleness.strategy=public_context+rtc"]).staleness.strategy


def test_soft_mask_freezes_the_delay_rows_decays_and_frees_the_last_executed_rows():
    weights = soft_mask(16, 3, 8)
    assert np.all(weights[:3] == 1.0) and np.all(weights[8:] == 0.0)
    assert np.all(np.diff(weights[3:9]) < 0) and 0 < weights[3] < 1
    assert np.all(soft_mask(16, 0, 8)[:1] < 1)
    assert np.all(soft_mask(16, 20, 8) == np.r_[np.ones(8), np.zeros(8)])  # the last 8 rows always stay free


# -- the robot-side executor ----------------------------------------------------------------------------
def test_none_starts_a_landed_chunk_at_its_first_row_and_holds_the_last():
    ex = ChunkExecutor("none", 4, (8, 4))
    assert ex.row(0) is None
    accept_action(ex, _action(_chunk(0.0), step=0), t=5)  # computed from step 0, lands at step 5
    assert np.allclose(ex.row(5), _chunk(0.0)[0]) and np.allclose(ex.row(6), _chunk(0.0)[1])
    assert np.allclose(ex.row(40), _chunk(0.0)[-1]) and ex.delay_steps == 5


def test_time_aligned_strategies_skip_rows_whose_step_has_passed_and_use_the_newest_input():
    ex = ChunkExecutor("rtc", 4, (8, 4))
    accept_action(ex, _action(_chunk(0.0), step=0, context_step=2), t=5)  # pipelined: its newest input is step 2
    assert np.allclose(ex.row(5), _chunk(0.0)[3]) and ex.delay_steps == 3
    accept_action(ex, _action(_chunk(1.0), step=10), t=30)  # 20 steps late: it still runs its last 4 rows
    assert np.allclose(ex.row(30), _chunk(1.0)[4]) and np.allclose(ex.row(33), _chunk(1.0)[7])


def test_chunk_blend_blends_overlapping_rows_and_waits_for_the_queue_to_drain():
    ex = ChunkExecutor("chunk_blend", 4, (8, 4), blend_old=0.3, queue_threshold=0.5)
    old, new = _chunk(0.0), _chunk(1.0)
    accept_action(ex, _action(old, step=0), t=0)
    assert not ex.wants_request(3) and ex.wants_request(4)  # 8 pending at 0; <= 4 pending from step 4
    accept_action(ex, _action(new, step=4), t=6)  # rows 0, 1 of the new chunk (steps 4, 5) have passed
    assert np.allclose(ex.row(6), 0.3 * old[6] + 0.7 * new[2])
    assert np.allclose(ex.row(7), 0.3 * old[7] + 0.7 * new[3])
    assert np.allclose(ex.row(8), new[4])  # beyond the old chunk: the new rows alone


def test_roll_forward_advances_the_state_by_the_actions_pending_before_landing():
    ex = ChunkExecutor("roll_forward", 4, (8, 4), action_scale=0.01, rolled_dims=3)
    obs = _obs(10)
    assert prepare_observation(ex, obs) is obs  # no delay seen yet: nothing to roll
    chunk = np.tile(np.array([[1.0, -0.5, 2.0, 0.7]], np.float32), (8, 1))  # 2.0 clips to 1 as the env does
    accept_action(ex, _action(chunk, step=7), t=10)  # a 3-step landing delay
    rolled = prepare_observation(ex, obs)
    assert np.allclose(rolled.state, [0.1 + 0.03, 0.2 - 0.015, 0.3 + 0.03, 0.5])
    assert np.allclose(obs.state, [0.1, 0.2, 0.3, 0.5])  # the robot's own observation is left alone


def test_rtc_sends_the_rows_that_will_run_and_its_soft_mask():
    ex = ChunkExecutor("rtc", 4, (8, 4))
    first = prepare_observation(ex, _obs(0))
    assert first.extras[GUIDE_WEIGHTS].shape == (8,) and not first.extras[GUIDE_WEIGHTS].any()
    accept_action(ex, _action(_chunk(0.0), step=0), t=2)
    sent = prepare_observation(ex, _obs(3))
    assert np.allclose(sent.extras[GUIDE_ACTIONS][:5], _chunk(0.0)[3:8])  # steps 3..7 of the running chunk
    assert np.allclose(sent.extras[GUIDE_ACTIONS][5:], _chunk(0.0)[-1])  # then its held last row
    assert np.allclose(sent.extras[GUIDE_WEIGHTS], soft_mask(8, 2, 4))


def test_rtc_with_an_execution_horizon_plans_once_per_horizon_and_leaves_that_many_rows_free():
    ex = ChunkExecutor("rtc", 2, (8, 4), execution_horizon=4)
    assert ex.wants_request(0)  # nothing runs yet
    accept_action(ex, _action(_chunk(0.0), step=0), t=2)  # lands at step 2, two steps late
    assert [ex.wants_request(t) for t in range(2, 8)] == [False, False, False, False, True, True]
    sent = prepare_observation(ex, _obs(6))
    assert np.allclose(sent.extras[GUIDE_WEIGHTS], soft_mask(8, 2, 4))  # the last 4 rows free, not execute_steps' 2
    assert ChunkExecutor("rtc", 2, (8, 4)).wants_request(3)  # no horizon: whenever the agent is free
    with pytest.raises(StrategyError, match=r"execution_horizon: expected 0\.\.8 .*got 9"):
        ChunkExecutor("rtc", 2, (8, 4), execution_horizon=9)
    config = load_config(None, ["staleness.strategy=rtc", "staleness.execution_horizon=3"])
    assert config.staleness.execution_horizon == 3


# -- guidance math ----------------------------------------------------------------------------------------
def test_guided_flow_steps_land_exactly_on_the_frozen_rows():
    torch.manual_seed(0)
    target = torch.randn(1, 8, 4)
    weights = torch.tensor(soft_mask(8, 3, 4))[None, :, None]
    x, n = torch.randn(1, 8, 4), 10
    for k in range(n):
        t = torch.tensor([1.0 - k / n])
        velocity = torch.randn(1, 8, 4)  # any network
        x = x - (1.0 / n) * guide_velocity(velocity, x, t, (target, weights))
    assert torch.allclose(x[:, :3], target[:, :3], atol=1e-5)
    assert not torch.allclose(x[:, 4:], target[:, 4:], atol=0.1)  # the free rows stay the model's


def test_guided_epsilon_predicts_the_pulled_clean_chunk():
    torch.manual_seed(0)
    x, eps, target = torch.randn(2, 8, 4), torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    weights = torch.tensor(soft_mask(8, 2, 4)).expand(2, 8)[..., None]
    a = torch.tensor([0.3, 0.9])
    guided = guide_epsilon(eps, x, a, (target, weights))
    clean = (x - (1 - a[:, None, None]).sqrt() * guided) / a[:, None, None].sqrt()
    assert torch.allclose(clean[:, :2], target[:, :2], atol=1e-5)
    original = (x - (1 - a[:, None, None]).sqrt() * eps) / a[:, None, None].sqrt()
    assert torch.allclose(clean[:, 4:], original[:, 4:], atol=1e-5)


# -- rtc end to end on the shipped diffusion policy ----------------------------------------------------------
def _guided(step: int, rows: np.ndarray, delay: int) -> Observation:
    return _obs(step, seed=step, extras={GUIDE_ACTIONS: rows, GUIDE_WEIGHTS: soft_mask(len(rows), delay, 8)})


@pytest.fixture(scope="module")
def reference_chunks():
    """Chunks tiny-dp computes unguided: realistic guide rows, inside its action range."""
    with AurasAgent(load_config(None, ["policy.type=tiny-dp", "pipeline.mode=sequential"])) as agent:
        return [agent.step(_obs(i, seed=100 + i)).chunk for i in range(8)]


def test_rtc_chunks_reproduce_the_rows_that_run_and_differ_without_the_guide(reference_chunks):
    config = load_config(None, ["policy.type=tiny-dp", "pipeline.mode=sequential", "staleness.strategy=rtc"])
    with AurasAgent(config) as agent:
        guide = reference_chunks[0]
        guided = agent.step(_guided(5, guide, delay=3)).chunk
        agent.reset()
        free = agent.step(_obs(5, seed=5)).chunk  # no guide sent: no constraint
    assert np.allclose(guided[:3], guide[:3], atol=1e-4)
    assert not np.allclose(free[:3], guide[:3], atol=1e-2)
    assert np.abs(guided[8:] - free[8:]).max() < np.abs(guided[:3] - free[:3]).max()  # later rows move less


@pytest.mark.parametrize("mode", ["pipeline", "auras"])
def test_rtc_in_a_pipeline_follows_the_guide_of_the_context_generation_reads(reference_chunks, mode):
    """auras: every in-flight request reads the freshest context, so its chunk joins the freshest guide;
    pipeline: each request keeps its own. Fails if the guide bypasses the public context."""
    strategy = "public_context+rtc" if mode == "auras" else "rtc"
    overrides = ["policy.type=tiny-dp", f"pipeline.mode={mode}", "pipeline.pp_generation=2",
                 f"staleness.strategy={strategy}"]
    with AurasAgent(load_config(None, overrides)) as agent:
        actions = [agent.step(_guided(i, reference_chunks[i], delay=2)) for i in range(6)]
    for action in actions[1:]:
        assert action.step_id == action.context_step_id - (1 if mode == "auras" else 0)
        followed = reference_chunks[action.context_step_id if mode == "auras" else action.step_id]
        assert np.allclose(action.chunk[:2], followed[:2], atol=1e-4)


def test_rtc_needs_a_denoising_chunk_policy_and_a_well_formed_guide():
    with pytest.raises(ConfigError, match="rtc: needs a denoising policy"):
        AurasAgent(load_config(None, ["policy.type=tiny-vla", "pipeline.mode=sequential", "staleness.strategy=rtc"]))
    config = load_config(None, ["policy.type=tiny-dp", "pipeline.mode=sequential", "staleness.strategy=rtc"])
    with AurasAgent(config) as agent:
        with pytest.raises(InvalidInputError, match="rtc guide must be finite with weights in"):
            agent.step(_obs(0, extras={GUIDE_ACTIONS: np.zeros((16, 4), np.float32),
                                        GUIDE_WEIGHTS: np.full(16, 2.0, np.float32)}))
        with pytest.raises(InvalidInputError, match=r"expected 'guide_actions' \(16, 4\)"):
            agent.step(_obs(0, extras={GUIDE_ACTIONS: np.zeros((3, 4), np.float32), GUIDE_WEIGHTS: np.ones(16)}))
        assert agent.step(_obs(1)).chunk.shape == (16, 4)  # still usable
