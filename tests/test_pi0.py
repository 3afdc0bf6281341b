"""auras' native π0 and π0.5 (auras/policies/pi0_model.py) reproduce LeRobot 0.4.4's own computation on the committed
reference fixtures (tests/fixtures/pi0-tiny, pi05-tiny; made by scripts/pi0_reference.py): every intermediate
tensor LeRobot recorded (image preparation, SigLIP + projector, the prefix and its per-layer key/value cache, the
velocity of each of the 10 flow steps) and the sampled chunk, within 1e-5 (measured: at most 4.6e-6, fp32 CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from auras.policies.pi0_model import Pi0Flow, Pi05Flow, pi0_sizes, resize_with_pad_centered

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOLERANCE = 1e-5
CAMERAS = ("front", "wrist")


def _load(kind: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict]:
    root = FIXTURES / f"{kind}-tiny"
    state = load_file(root / "checkpoint" / "model.safetensors")
    info = json.loads((root / "info.json").read_text())
    config = json.loads((root / "checkpoint" / "config.json").read_text())
    cls = Pi0Flow if kind == "pi0" else Pi05Flow
    model = cls(pi0_sizes(state), chunk_size=config["chunk_size"], vision_heads=info["sizes"]["vision"][
        "num_attention_heads"], min_period=config["min_period"], max_period=config["max_period"]).eval()
    model.load_state_dict(Pi0Flow.lerobot_keys(state), strict=True)
    return model, load_file(root / "reference.safetensors"), config


def _close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    deviation = (ours.float() - theirs.float()).abs().max().item()
    assert deviation <= TOLERANCE, f"{what}: max deviation {deviation:.2e} > {TOLERANCE}"


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_the_native_model_reproduces_lerobots_prefix_cache_flow_steps_and_chunk(kind):
    torch.set_num_threads(1)
    model, ref, config = _load(kind)
    size = config["image_resolution"][0]
    with torch.no_grad():
        images = []
        for cam in CAMERAS:
            prepared = resize_with_pad_centered(ref[f"input.image.{cam}"], size, size)
            _close(prepared, ref[f"model_in.image.{cam}"], f"{cam} image prepared")
            _close(model.embed_image(prepared), ref[f"vision.{cam}.embedded"], f"{cam} SigLIP + projector")
            images.append(prepared)
        masks = [ref[f"model_in.image_mask.{cam}"] for cam in CAMERAS]
        prefix = model.embed_prefix([model.embed_image(i) for i in images], masks, ref["input.lang_tokens"],
                                    ref["input.lang_mask"])
        _close(prefix["h"], ref["prefix.embs"], "prefix embeddings")
        pad = prefix["pad"]
        assert torch.equal(pad, ref["prefix.pad_mask"])
        assert torch.equal(prefix["positions"], ref["prefix.position_ids"])
        cache, out = model.prefix_cache(prefix)
        for layer, (key, value) in enumerate(cache):
            _close(key.transpose(1, 2), ref[f"kv.{layer}.key"], f"layer {layer} keys")
            _close(value.transpose(1, 2), ref[f"kv.{layer}.value"], f"layer {layer} values")
        _close(out, ref["prefix.out"], "prefix output")
        state = ref.get("model_in.state_padded")  # π0 feeds the state to the expert; π0.5 has it in the prompt
        steps = config["num_inference_steps"]
        x_t = ref["input.noise"].clone()
        for step in range(steps):
            v_t = model.velocity(x_t, ref[f"denoise.{step}.time"], cache, pad, state)
            _close(v_t, ref[f"denoise.{step}.v_t"], f"flow step {step}")
            x_t = x_t + (-1.0 / steps) * v_t
        chunk = model.sample(cache, pad, state, ref["input.noise"], steps)
        _close(chunk, ref["output.actions_normalized_padded"], "sampled chunk")
        _close(chunk[:, :, : ref["output.actions_normalized"].shape[-1]], ref["output.actions_normalized"], "chunk")


def test_the_two_variants_are_told_apart_by_their_weights():
    """π0.5's expert has adaptive norms and a time MLP where π0 has a state projection and an action-time MLP: a π0
    model refuses π0.5 weights instead of computing something else."""
    state = load_file(FIXTURES / "pi05-tiny" / "checkpoint" / "model.safetensors")
    model = Pi0Flow(pi0_sizes(state), chunk_size=8, vision_heads=2)
    with pytest.raises(RuntimeError, match="time_mlp_in"):
        model.load_state_dict(Pi0Flow.lerobot_keys(state), strict=True)


def test_a_wrong_prefix_mask_is_caught():
    """The test above can fail: the expert attending to the prefix's padding changes the chunk beyond the tolerance."""
    model, ref, _config = _load("pi0")
    with torch.no_grad():
        images = [ref[f"model_in.image.{cam}"] for cam in CAMERAS]
        masks = [ref[f"model_in.image_mask.{cam}"] for cam in CAMERAS]
        prefix = model.embed_prefix([model.embed_image(i) for i in images], masks, ref["input.lang_tokens"],
                                    ref["input.lang_mask"])
        cache, _ = model.prefix_cache(prefix)
        everything = torch.ones_like(prefix["pad"])
        wrong = model.sample(cache, everything, ref["model_in.state_padded"], ref["input.noise"], 10)
    deviation = (wrong - ref["output.actions_normalized_padded"]).abs().max().item()
    assert deviation > 100 * TOLERANCE, deviation
