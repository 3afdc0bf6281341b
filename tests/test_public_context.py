"""The public context, proven by the values generation was fed (not by the labels the executor writes).

A fake perception's context is the observation's step id (``H_o`` / ``X``); fake generations record,
per batched call, the context value every row was conditioned on. In ``auras`` mode every generation
stage of every in-flight request must have read the freshest context (this frame's with
fetch_offset 0, the previous frame's with -1); in ``pipeline`` mode each request must have read its
own. Replacing the public read by the request's own context fails the auras cases; the converse
fails the pipeline cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auras.generation.base import AutoregressiveGeneration
from auras.pipeline.frames import FrameExecutor, FrameShape
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation, sequential_actions

SHAPES = [FrameShape(1, 2, 0), FrameShape(1, 2, -1), FrameShape(2, 3, 0), FrameShape(3, 4, -1), FrameShape(1, 8, 0)]


def _freshest(frame: int, shape: FrameShape) -> int:
    """Step id of the newest context generation may read in ``frame`` (observation i admitted in frame i)."""
    return frame - (shape.pp_perception - 1) + shape.fetch_offset


def _own(frame: int, stage: int, shape: FrameShape) -> int:
    """Step id of the request in generation stage ``stage`` during ``frame``."""
    return frame - shape.generation_start - stage


def _stage_of_first_step(shape: FrameShape, steps: int) -> dict[int, int]:
    from auras.partition import skewed_steps

    counts = skewed_steps(steps, shape.pp_generation, 0.0)
    return {int(k): g for g, k in enumerate(np.cumsum([0, *counts[:-1]]))}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("public", [True, False], ids=["auras", "pipeline"])
def test_every_denoising_stage_reads_the_context_its_mode_promises(shape, public):
    generation = FakeDiffusion(12)
    executor = FrameExecutor(Policy("fake-dp", FakeStagedPerception(4), generation), shape, public=public)
    frames = 30
    for frame in range(frames):
        executor.run_frame(fake_observation(frame))
    stage_of = _stage_of_first_step(shape, 12)
    assert len(generation.calls) == frames - shape.generation_start  # one batched call per frame
    for k, call in enumerate(generation.calls):
        frame = shape.generation_start + k
        for first_step, fed in zip(call["step_index"], call["h_o"], strict=True):
            stage = stage_of[first_step]
            expected = _freshest(frame, shape) if public else _own(frame, stage, shape)
            assert fed == expected, f"frame {frame}, stage {stage}: fed context of step {fed}, expected {expected}"
    if public and shape.pp_generation > 1:  # the mechanism matters: a stage's own context would be older
        assert any(
            _own(shape.generation_start + k, stage_of[s], shape) != h
            for k, c in enumerate(generation.calls)
            for s, h in zip(c["step_index"], c["h_o"], strict=True)
        )


class RecordingTokens(AutoregressiveGeneration):
    """Token i of a request = (context X + i) mod 50; records the X every merged pass and decode read."""

    def __init__(self, tokens: int = 8) -> None:
        self.tokens, self.passes, self.decodes = tokens, [], []

    @property
    def action_dim(self) -> int:
        return 2

    @property
    def num_action_tokens(self) -> int:
        return self.tokens

    def decode_classic(self, context):
        x = torch.as_tensor(context["H_o"])[:, 0].long()  # (B,)
        self.decodes.append(x.tolist())
        return (x[:, None] + torch.arange(self.tokens)[None]) % 50  # (B, l_a)

    def next_tokens(self, context, action_tokens):
        x = torch.as_tensor(context["H_o"])[:, 0].long()  # (B,)
        self.passes.append(x.tolist())
        return (x[:, None] + torch.arange(self.tokens)[None]) % 50  # (B, l_a)

    def detokenize(self, token_ids):
        return np.asarray(token_ids, np.float32).reshape(len(token_ids), -1, 2)


@pytest.mark.parametrize("shape", [FrameShape(1, 2, 0), FrameShape(2, 4, -1), FrameShape(1, 8, 0)], ids=str)
@pytest.mark.parametrize("public", [True, False], ids=["auras", "pipeline"])
def test_every_merged_pass_reads_the_context_its_mode_promises(shape, public):
    generation = RecordingTokens(8)
    executor = FrameExecutor(Policy("fake-ar", FakeStagedPerception(4), generation), shape, public=public)
    actions = {}
    for frame in range(24):
        action = executor.run_frame(fake_observation(frame))
        if action is not None:
            actions[frame] = action
    passes_per_frame = -(-8 // shape.pp_generation)  # ceil(l_a / pp_g): as many passes as the largest block
    assert len(generation.passes) == (24 - shape.generation_start) * passes_per_frame
    for k, fed in enumerate(generation.passes):
        frame = shape.generation_start + k // passes_per_frame
        if public:  # one pass over the freshest context serves every in-flight request
            assert fed == [_freshest(frame, shape)]
        else:  # one batched pass over every in-flight request's own context, oldest request first
            in_generation = [_own(frame, g, shape) for g in range(shape.pp_generation)]
            assert sorted(fed) == sorted(s for s in in_generation if s >= 0)
    for frame, action in actions.items():  # what came out was computed from those values
        tokens = action.values.reshape(-1)
        blocks = np.array_split(np.arange(8), shape.pp_generation)
        for g, block in enumerate(blocks):  # block g was filled in the frame the request was in stage g
            source = _freshest(frame - (shape.pp_generation - 1 - g), shape) if public else action.step_id
            np.testing.assert_array_equal(tokens[block], (source + block) % 50)


def _real_observation(step_id: int) -> object:
    from auras.types import Observation

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (84, 84, 3), dtype=np.uint8)
    return Observation({"front": image}, np.array([0.1, 0.6, 0.1, 0.5], np.float32), "push the puck", step_id, 0.0)


def _small(kind: str) -> Policy:
    from tests.test_frames import _small_policy

    return _small_policy(kind)


@pytest.mark.parametrize(("kind", "degrees"), [("tiny-dp", (2, 5)), ("tiny-vla", (2, 8))])
def test_auras_on_a_static_observation_acts_exactly_like_sequential(kind, degrees):
    """With nothing changing, the freshest context is every request's own, so auras must reproduce
    sequential's actions at any depth: the merged autoregressive pass (pp_generation = 8 = l_a: one pass
    per frame serving every request) included."""
    policy = _small(kind)
    policy.reset()
    sequential = sequential_actions(policy, [_real_observation(i) for i in range(6)])
    for degree in degrees:
        policy.reset()
        executor = FrameExecutor(policy, FrameShape(1, degree, 0), public=True)
        emitted = [a.values for a in (executor.run_frame(_real_observation(i)) for i in range(6 + degree)) if a]
        assert len(emitted) >= 6
        for i, (a, b) in enumerate(zip(sequential, emitted[:6], strict=True)):
            np.testing.assert_allclose(b, a, atol=1e-5, err_msg=f"{kind} degree {degree}, request {i}")
