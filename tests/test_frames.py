"""Frame executor invariants with fakes, and exactness against sequential with real small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auras.partition import skewed_steps
from auras.pipeline.frames import FrameExecutor, FrameShape
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation, sequential_actions

SHAPES = [FrameShape(1, 1, 0), FrameShape(1, 1, -1), FrameShape(2, 3, 0), FrameShape(2, 4, -1), FrameShape(3, 2, 0)]


def _executor(shape: FrameShape, public: bool = True, alpha: float = 0.0) -> FrameExecutor:
    policy = Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12))
    return FrameExecutor(policy, shape, public=public, alpha=alpha)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("public", [True, False], ids=["auras", "pipeline"])
def test_inflight_bound_order_tracing_and_one_action_per_frame(shape, public):
    ex = _executor(shape, public)
    actions = {}
    for frame in range(30):
        action = ex.run_frame(fake_observation(frame))
        assert ex.inflight <= shape.depth
        if action is not None:
            actions[frame] = action
    assert ex.max_inflight == shape.lifetime <= shape.depth
    first = shape.lifetime - 1
    assert sorted(actions) == list(range(first, 30))  # one action every frame once full
    for frame, action in actions.items():
        assert action.frame == frame
        assert action.step_id == frame - first  # FIFO: traces to the observation admitted L-1 frames ago
    assert ex.admitted == 30 and ex.emitted == len(actions)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_public_context_is_fresher_than_private(shape):
    """auras reads the newest context; pipeline acts on its own observation, lifetime - 1 frames old."""
    fresh, stale = _executor(shape, public=True), _executor(shape, public=False)
    for frame in range(20):
        a, b = fresh.run_frame(fake_observation(frame)), stale.run_frame(fake_observation(frame))
        if a is None:
            continue
        newest = frame - (shape.pp_perception - 1) + shape.fetch_offset  # written this frame, or the previous
        assert a.context_step_id == newest and a.staleness_frames == frame - newest
        assert b.context_step_id == b.step_id and b.staleness_frames == shape.lifetime - 1
        assert a.staleness_frames <= b.staleness_frames


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_generation_is_one_batched_call_per_frame_with_skewed_steps(alpha):
    shape = FrameShape(1, 4, -1)
    ex = _executor(shape, alpha=alpha)
    for frame in range(12):
        ex.run_frame(fake_observation(frame))
    calls = ex.hosted_policy.generation.calls
    assert len(calls) == 12 - 1  # every frame but the first (nothing in generation yet)
    steady = calls[-1]
    assert steady["batch"] == 4  # the four in-flight generation stages run as one call
    expected = skewed_steps(12, 4, alpha)
    by_stage = sorted(zip(steady["step_index"], steady["num_steps"], strict=True))
    assert [n for _, n in by_stage] == expected
    assert [k for k, _ in by_stage] == list(np.cumsum([0, *expected[:-1]]))


def test_step_fills_the_pipeline_during_startup_then_emits_every_step():
    shape = FrameShape(2, 3, -1)
    ex = _executor(shape)
    first = ex.step(fake_observation(0))
    assert first.step_id == 0 and ex.frame == shape.lifetime  # startup: fill frames re-admit observation 0
    assert ex.admitted == shape.lifetime and ex.inflight == shape.lifetime - 1
    emitted = [ex.step(fake_observation(i)).step_id for i in range(1, 12)]
    assert emitted[: shape.lifetime - 1] == [0] * (shape.lifetime - 1)  # the fill copies drain first
    assert emitted[shape.lifetime - 1 :] == list(range(1, 12 - shape.lifetime + 1))
    assert ex.emitted == 12


def test_bad_shapes_are_rejected():
    from auras.errors import ConfigError

    with pytest.raises(ConfigError, match="expected pp_perception >= 1"):
        FrameShape(0, 1)
    with pytest.raises(ConfigError, match="fetch_offset: expected 0 or -1, got 1"):
        FrameShape(1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"pp_perception: expected 1..4 \(policy 'fake-dp' has 4 perception stage"):
        _executor(FrameShape(5, 1))
    with pytest.raises(ConfigError, match=r"pp_generation: expected 1..12 \(the denoising generation's iterations"):
        _executor(FrameShape(1, 13))


def _real_observations(n: int):
    rng = np.random.default_rng(0)
    from auras.types import Observation

    images = [rng.integers(0, 255, (84, 84, 3), dtype=np.uint8) for _ in range(n)]
    states = [rng.uniform(0, 1, 4).astype(np.float32) for _ in range(n)]
    return [Observation({"front": images[i]}, states[i], "push the puck", i, 0.0) for i in range(n)]


def _small_policy(kind: str) -> Policy:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    actions, states = rng.uniform(-1, 1, (50, 4)).astype(np.float32), rng.uniform(0, 1, (50, 4)).astype(np.float32)
    if kind.startswith("tiny-vla"):
        from auras.policies.tiny_vla.modeling import TinyVLA
        from tests.test_tiny_vla import SMALL

        sigma = 4.0 if kind == "tiny-vla-smoothed" else 0.0  # greedy over smoothed bins (decode_sigma)
        return (
            TinyVLA.from_samples(actions, states, ["x"], **SMALL, chunk_horizon=2, decode_sigma=sigma)
            .eval()
            .as_policy()
        )
    from auras.policies.tiny_dp.modeling import TinyDP

    return TinyDP.from_samples(actions, states, ["x"], num_inference_steps=5).eval().as_policy()


@pytest.mark.parametrize("kind", ["tiny-vla", "tiny-vla-smoothed", "tiny-dp"])
@pytest.mark.parametrize("public", [True, False], ids=["auras", "pipeline"])
def test_degree_one_reproduces_sequential_actions(kind, public):
    policy = _small_policy(kind)
    observations = _real_observations(4)
    policy.reset()
    sequential = sequential_actions(policy, observations)
    policy.reset()
    frames = FrameExecutor(policy, FrameShape(1, 1, 0), public=public)
    pipelined = [frames.run_frame(o).values for o in observations]
    for a, b in zip(sequential, pipelined, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_agent_runs_auras_mode_from_config_and_refuses_more_stages_than_iterations():
    from auras import AurasAgent, load_config
    from auras.errors import ConfigError

    config = load_config(overrides=["pipeline.mode=auras", "pipeline.pp_generation=3", "pipeline.fetch_offset=-1"])
    policy = Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12))
    with AurasAgent(config, policy=policy) as agent:
        actions = [agent.step(fake_observation(i)) for i in range(8)]
    assert all(a.staleness_frames is not None and a.frame is not None for a in actions)
    assert [a.frame for a in actions] == sorted({a.frame for a in actions})
    with pytest.raises(ConfigError, match=r"pp_generation: expected 1..1 \(the oneshot generation's iterations"):
        AurasAgent(load_config(overrides=["pipeline.mode=pipeline", "pipeline.pp_generation=2"]))  # the expert


def test_emit_public_means_each_requests_own_tokens_with_private_contexts():
    """mode `pipeline` has no public snapshot; the tiny-vla preset's emit: public once made it emit the
    startup decode's tokens every frame (a frozen chunk: 0% success in every pipeline cell)."""
    policy = _small_policy("tiny-vla")
    observations = _real_observations(10)
    actions = {}
    for emit in ("own", "public"):
        ex = FrameExecutor(policy, FrameShape(1, 4, 0), public=False, emit=emit)
        actions[emit] = [a.values for a in map(ex.run_frame, observations) if a is not None]
    assert len(actions["public"]) == len(actions["own"]) > 1
    for own, public in zip(actions["own"], actions["public"], strict=True):
        np.testing.assert_array_equal(public, own)
    assert any(not np.array_equal(a, actions["public"][0]) for a in actions["public"][1:])  # not one frozen chunk


def test_emit_public_returns_the_public_token_snapshot_refreshed_every_frame():
    policy = _small_policy("tiny-vla")
    ex = FrameExecutor(policy, FrameShape(1, 4, 0), public=True, emit="public")
    for obs in _real_observations(10):
        action = ex.run_frame(obs)
        if action is None:
            continue
        store = ex.group.instances[1].sessions[ex.session].store  # X_A: in the session's public context store
        expected = policy.generation.detokenize(store.read("X_A").value[None])[0]
        np.testing.assert_allclose(action.values, expected)
        assert action.context_step_id == obs.step_id  # the snapshot was refreshed from this frame's context


@pytest.mark.parametrize("shape", [FrameShape(1, 1, 0), FrameShape(2, 3, 0)], ids=["sequential", "auras 2x3"])
def test_a_frame_that_fails_in_a_worker_admits_nothing(shape):
    """The policy raises on one observation: that step fails and the frame's in-flight requests are dropped
    (a frame is not a transaction: other requests' stages may have run), so no batch grows past the depth,
    the failed observation never gets an action and the pipeline refills from the next observations."""
    generation = FakeDiffusion(12)
    policy = Policy("fake-dp", _FailingOn(7), generation)
    executor = FrameExecutor(policy, shape)
    for i in range(6):
        executor.step(fake_observation(i))
    inflight = executor.inflight
    with pytest.raises(RuntimeError, match="camera fault"):
        executor.step(fake_observation(7))
    assert executor.inflight == 0
    calls = len(generation.calls)
    actions = [executor.step(fake_observation(i)) for i in range(8, 14)]
    assert all(c["batch"] <= shape.pp_generation for c in generation.calls[calls:])
    assert executor.inflight == inflight and 7 not in {a.step_id for a in actions}
    assert [a.step_id for a in actions] == sorted(a.step_id for a in actions) and actions[-1].step_id >= 13 - inflight


class _FailingOn(FakeStagedPerception):
    """Perception that raises on the observation of step id ``fail_at``."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(2)
        self.fail_at = fail_at

    def stages(self):
        first, *rest = super().stages()

        def failing(observations):
            if any(o.step_id == self.fail_at for o in observations):
                raise RuntimeError("camera fault")
            return first(observations)

        return [failing, *rest]
