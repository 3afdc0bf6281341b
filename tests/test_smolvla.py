"""SmolVLA in auras: LeRobot's own outputs reproduced from a LeRobot checkpoint, and the policy in the pipeline.

The fixture (tests/fixtures/smolvla-tiny, made by scripts/smolvla_reference.py with LeRobot 0.4.4; see
docs/smolvla-reference.md) holds a tiny random SmolVLA checkpoint in LeRobot's format, fixed inputs and
noise, and what LeRobot computed from them: the per-layer prefix cache, each flow step's velocity and
the final action chunk. A wrong mask, RoPE base, vision position id or scale moves the actions by
0.3-2.0 (measured); the tolerance here is 1e-5.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from auras import AurasAgent, load_config
from auras.errors import InvalidInputError
from auras.policies.smolvla import SmolVLA
from auras.policies.smolvla_model import resize_with_pad
from auras.types import Observation

FIXTURE = Path(__file__).parent / "fixtures" / "smolvla-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
CAMERAS = ("front", "wrist")


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "reference.safetensors")


@pytest.fixture(scope="module")
def model() -> SmolVLA:
    return SmolVLA.from_lerobot(CHECKPOINT)


def _prefix_cache(model: SmolVLA, ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The perception computation on the fixture's float images (the policy's stages, from pixels on)."""
    flow = model.model
    images = []
    for camera in CAMERAS:
        h = flow.patch_embed(resize_with_pad(ref[f"input.image.{camera}"], 64, 64) * 2.0 - 1.0)
        for index in range(len(flow.vision.encoder.layers)):
            h = flow.vision_layer(index, h)
        images.append(flow.image_tokens(h))
    state = model.normalize("observation.state", "STATE", ref["input.state"])
    state = torch.nn.functional.pad(state, (0, flow.state_proj.in_features - state.shape[1]))
    prefix = flow.embed_prefix(images, ref["input.lang_tokens"], ref["input.lang_mask"], state)
    context, layers = {"prefix_pad": prefix["pad"]}, len(flow.text_layers)
    for index in range(layers):
        h, context[f"kv.{index}.key"], context[f"kv.{index}.value"] = flow.prefix_layer(
            index, prefix, last=index == layers - 1
        )
        prefix = {**prefix, "h": h}
    return context


@torch.no_grad()
def test_the_prefix_cache_and_the_actions_match_lerobot(model, reference):
    context = _prefix_cache(model, reference)
    for index in range(4):
        for part in ("key", "value"):
            torch.testing.assert_close(context[f"kv.{index}.{part}"], reference[f"kv.{index}.{part}"],
                                       atol=1e-5, rtol=0)
    policy = model.as_policy()
    noise = reference["input.noise"]
    steps = torch.full((2,), 10)
    sample = policy.generation.denoise(noise, torch.zeros(2, dtype=torch.int64), steps, context)
    torch.testing.assert_close(sample, reference["output.actions_normalized_padded"], atol=1e-5, rtol=0)
    actions = policy.generation.to_actions(sample)  # unnormalised with the checkpoint's statistics
    np.testing.assert_allclose(actions, reference["output.actions"].numpy(), atol=1e-5)


@torch.no_grad()
def test_steps_spread_over_stages_and_rows_at_different_steps_give_the_same_flow(model, reference):
    """What the pipeline does: a request's 10 steps in pieces (3 + 7), rows of one batch at different steps."""
    context = _prefix_cache(model, reference)
    generation = model.as_policy().generation
    first = generation.denoise(reference["input.noise"], torch.tensor([0, 0]), torch.tensor([3, 10]), context)
    done = generation.denoise(first, torch.tensor([3, 10]), torch.tensor([7, 0]), context)
    torch.testing.assert_close(done, reference["output.actions_normalized_padded"], atol=1e-5, rtol=0)


def test_instructions_are_tokenized_as_lerobot_tokenized_them(model, reference):
    tasks = json.loads((FIXTURE / "reference.json").read_text())["tasks"]
    length = reference["input.lang_tokens"].shape[1]
    for row, task in enumerate(tasks):
        tokens, mask = model.tokenizer(task)  # padded to tokenizer_max_length: a fixed prefix length
        assert tokens.shape == mask.shape == (48,) and not mask[length:].any()
        np.testing.assert_array_equal(tokens[:length], reference["input.lang_tokens"][row].numpy())
        np.testing.assert_array_equal(mask[:length], reference["input.lang_mask"][row].numpy())


@torch.no_grad()
def test_the_policys_perception_from_observations_computes_that_prefix_padded_to_a_fixed_length(model, reference):
    """uint8 camera images, raw state and instruction text in; the same cache on the unpadded positions
    (the instruction padded to 48 tokens instead of LeRobot's longest-in-batch)."""
    tasks = json.loads((FIXTURE / "reference.json").read_text())["tasks"]
    images = {c: (reference[f"input.image.{c}"] * 255).round().to(torch.uint8) for c in CAMERAS}
    observations = [
        Observation(images={c: images[c][b].permute(1, 2, 0).numpy() for c in CAMERAS},
                    state=reference["input.state"][b].numpy(), instruction=tasks[b], step_id=b, capture_time=0.0)
        for b in range(2)
    ]
    context = model.as_policy().perception.perceive(observations)
    expected = _prefix_cache(model, {**reference, **{f"input.image.{c}": images[c].float() / 255 for c in CAMERAS}})
    for b in range(2):
        mine, theirs = context["prefix_pad"][b], expected["prefix_pad"][b]
        assert mine.sum() == theirs.sum() and context["prefix_pad"].shape[1] == 32 + 48 + 1
        for index in range(4):
            key = f"kv.{index}.key"
            torch.testing.assert_close(context[key][b][mine], expected[key][b][theirs], atol=1e-5, rtol=0)


def _observation(step: int, size: dict[str, tuple[int, int]]) -> Observation:
    rng = np.random.default_rng(step)
    return Observation(
        images={c: rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for c, hw in size.items()},
        state=rng.normal(size=4).astype(np.float32), instruction="push the puck", step_id=step, capture_time=0.0,
    )


@pytest.mark.parametrize(
    "extra",
    [["pipeline.mode=sequential"], ["pipeline.mode=auras", "pipeline.pp_perception=3", "pipeline.pp_generation=5"]],
    ids=["sequential", "auras"],
)
def test_a_lerobot_checkpoint_runs_by_path_in_the_pipeline(extra):
    config = load_config(overrides=["policy.type=smolvla", f"policy.checkpoint={CHECKPOINT}", *extra])
    with AurasAgent(config) as agent:
        spec = agent.policy_spec
        assert spec.family == "denoising" and spec.action_shape == (8, 4) and spec.generation_iterations == 10
        assert spec.perception_stages == 2 + 4  # vision layers, then text layers
        assert dict(agent.spec.cameras) == {"front": (64, 64), "wrist": (48, 80)}
        actions = [agent.step(_observation(i, dict(agent.spec.cameras))) for i in range(6)]
    assert all(a.values.shape == (8, 4) and np.isfinite(a.values).all() for a in actions)


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "fixture"
    shutil.copytree(FIXTURE, root)
    return root / "checkpoint"


def test_a_checkpoint_that_is_not_smolvla_or_disagrees_with_its_config_is_refused_by_name(tmp_path):
    checkpoint = _copy(tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "type": "pi0"}))
    with pytest.raises(InvalidInputError, match=r'config\.json.*expected "type": "smolvla", got \'pi0\''):
        SmolVLA.from_lerobot(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps({**config, "max_state_dim": 16}))
    with pytest.raises(
        InvalidInputError, match=r"model\.safetensors.*'model\.state_proj\.weight' has shape \(64, 32\)"
    ):
        SmolVLA.from_lerobot(checkpoint)


def test_missing_normalisation_statistics_are_an_error_not_identity(tmp_path):
    checkpoint = _copy(tmp_path)
    for file in checkpoint.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"):
        file.unlink()
    with pytest.raises(InvalidInputError, match="no normalisation statistics"):
        SmolVLA.from_lerobot(checkpoint)
