"""LeRobot's real-time chunking (RTC) and auras' rtc strategy compute the same guided chunk for the same inputs.

LeRobot 0.4.4 steers π0's and π0.5's flow with ``inference_delay``, ``prev_chunk_left_over`` and
``execution_horizon`` (``RTCProcessor.denoise_step``); the fixtures hold its guided chunk for fresh noise, the chunk
the same noise gives unguided, and its prefix weights (scripts/pi0_reference.py: LINEAR for π0, EXP for π0.5). In
auras the robot sends the rows that will still run as the guide (``prev_chunk_left_over``, in env units) and the
weights of ``soft_mask(horizon, delay, horizon - execution_horizon, rtc_schedule)``; with ``staleness.rtc_guidance
lerobot`` the flow steps follow LeRobot's rule, and the chunk is LeRobot's within 1e-5.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from auras import load_config
from auras.errors import ConfigError
from auras.generation.guidance import PULL, GuidanceRule
from auras.policies.build import build_policy
from auras.policies.pi0 import Pi0, Pi05
from auras.staleness import GUIDE_ACTIONS, GUIDE_WEIGHTS, executor_from_config, soft_mask
from tests.test_pi0_policy import CAMERAS, FIXTURES, TOLERANCE, _context, _fixture

KINDS = {"pi0": Pi0, "pi05": Pi05}


def _case(kind: str):
    checkpoint, ref, tasks = _fixture(kind)
    rtc = json.loads((FIXTURES / f"{kind}-tiny" / "info.json").read_text())["rtc"]
    model = KINDS[kind].from_lerobot(checkpoint)
    with torch.no_grad():
        inputs = model.prepare_tensors({c: ref[f"input.image.{c}"] for c in CAMERAS}, ref["input.state"], tasks)
        context = _context(model, inputs)
    return model, ref, rtc, context


def _guide(model, ref, rtc) -> tuple[torch.Tensor, torch.Tensor]:
    """What the robot sends: the left-over rows in env units (zeros past them) and auras' soft mask."""
    left = ref["rtc.prev_chunk_left_over"]  # (B, T_prev, A), normalised, as LeRobot takes it
    horizon = int(model.config["chunk_size"])
    rows = torch.zeros(left.shape[0], horizon, left.shape[2])
    rows[:, : left.shape[1]] = model.unnormalize_actions(left)
    reach = min(rtc["execution_horizon"], left.shape[1])  # LeRobot caps the horizon at the left-over rows
    mask = soft_mask(horizon, rtc["inference_delay"], horizon - reach, rtc["schedule"].lower())
    return rows, torch.from_numpy(mask)[None].expand(left.shape[0], -1)


@pytest.mark.parametrize("kind", KINDS)
def test_auras_rtc_with_lerobots_rule_gives_lerobots_guided_chunk(kind):
    torch.set_num_threads(1)
    model, ref, rtc, context = _case(kind)
    rows, weights = _guide(model, ref, rtc)
    np.testing.assert_allclose(weights[0].numpy(), ref["rtc.prefix_weights"].numpy(), atol=1e-6)  # the schedule
    generation = model.as_policy().generation
    generation.guidance = GuidanceRule("lerobot", rtc["max_guidance_weight"])
    steps = (torch.zeros(2, dtype=torch.int64), torch.full((2,), 10))
    guided = generation.denoise(ref["rtc.noise"], *steps, {**context, GUIDE_ACTIONS: rows, GUIDE_WEIGHTS: weights})
    torch.testing.assert_close(guided, ref["rtc.actions_normalized_padded"], atol=TOLERANCE, rtol=0)
    # no weights: no guidance, the unguided chunk
    unguided = generation.denoise(ref["rtc.noise"], *steps, {**context, GUIDE_ACTIONS: rows,
                                                             GUIDE_WEIGHTS: torch.zeros_like(weights)})
    torch.testing.assert_close(unguided, ref["rtc.unguided_normalized_padded"], atol=TOLERANCE, rtol=0)
    # auras' own rule (pull) is a different weighting: it does not compute LeRobot's chunk
    generation.guidance = PULL
    pulled = generation.denoise(ref["rtc.noise"], *steps, {**context, GUIDE_ACTIONS: rows, GUIDE_WEIGHTS: weights})
    assert (pulled - ref["rtc.actions_normalized_padded"]).abs().max() > 100 * TOLERANCE


def test_the_guide_rows_are_what_moves_the_chunk():
    """The test above can fail: a guide of other rows (the left-over shifted by one) misses LeRobot's chunk."""
    model, ref, rtc, context = _case("pi0")
    rows, weights = _guide(model, ref, rtc)
    generation = model.as_policy().generation
    generation.guidance = GuidanceRule("lerobot", rtc["max_guidance_weight"])
    shifted = torch.roll(rows, 1, dims=1)
    out = generation.denoise(ref["rtc.noise"], torch.zeros(2, dtype=torch.int64), torch.full((2,), 10),
                             {**context, GUIDE_ACTIONS: shifted, GUIDE_WEIGHTS: weights})
    assert (out - ref["rtc.actions_normalized_padded"]).abs().max() > 100 * TOLERANCE


def test_staleness_settings_choose_the_rule_and_the_robots_schedule():
    checkpoint = FIXTURES / "pi0-tiny" / "checkpoint"
    config = load_config(overrides=["policy.type=pi0", f"policy.checkpoint={checkpoint}", "pipeline.mode=sequential",
                                    "staleness.strategy=rtc", "staleness.rtc_guidance=lerobot",
                                    "staleness.rtc_max_guidance=4", "staleness.rtc_schedule=linear",
                                    "staleness.execution_horizon=3"])
    policy = build_policy(config)
    assert policy.generation.guidance == GuidanceRule("lerobot", 4.0)
    executor = executor_from_config(config, policy.spec)
    sent = executor.prepare_inputs(0, np.zeros(4, np.float32))[1]  # before any chunk: no constraint
    assert not sent[GUIDE_WEIGHTS].any()
    executor.accept_chunk(np.ones((8, 4), np.float32), 0, 2)  # observed at step 0, landed at 2: a delay of 2
    sent = executor.prepare_inputs(2, np.zeros(4, np.float32))[1]
    np.testing.assert_allclose(sent[GUIDE_WEIGHTS], soft_mask(8, 2, 3, "linear"))  # up to row H - s = 5
    assert not np.allclose(sent[GUIDE_WEIGHTS], soft_mask(8, 2, 3, "exp"))
    tiny_dp = load_config(overrides=["policy.type=tiny-dp", "pipeline.mode=sequential", "staleness.strategy=rtc",
                                     "staleness.rtc_guidance=lerobot"])
    with pytest.raises(ConfigError, match="rtc_guidance lerobot"):
        build_policy(tiny_dp)
