"""tiny-vla: merged AR pass equals classic decoding, stages, checkpoints, boundary errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from auras import AurasAgent
from auras.errors import InvalidInputError
from auras.policies.tiny_vla.modeling import TinyVLA
from auras.types import Observation

SMALL = {"vit_hidden": 32, "vit_layers": 2, "vit_heads": 2, "vit_intermediate": 64, "lm_hidden": 48,
         "lm_layers": 2, "lm_heads": 2, "lm_intermediate": 96}


def _model(**extra) -> TinyVLA:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (200, 4)).astype(np.float32)
    states = rng.uniform(0, 1, (200, 4)).astype(np.float32)
    return TinyVLA.from_samples(actions, states, ["push the puck"], **SMALL, **extra).eval()


def _obs(seed: int, instruction: str = "push the puck") -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(
        images={"front": rng.integers(0, 255, (84, 84, 3), dtype=np.uint8)},
        state=rng.uniform(0, 1, 4).astype(np.float32),
        instruction=instruction,
        step_id=seed,
        capture_time=0.0,
    )


VISION_VARIANTS = pytest.mark.parametrize(
    "extra",
    [{}, {"vision_keypoints": 4}, {"vit_stem": "conv", "vision_keypoints": 4}],
    ids=["plain", "keypoints", "conv-stem"],
)


@VISION_VARIANTS
def test_merged_pass_equals_classic_decoding_position_by_position(extra):
    model = _model(**extra)
    policy = model.as_policy()
    context = policy.perception.perceive([_obs(1), _obs(2, "open the drawer"), _obs(3)])
    with torch.inference_mode():
        tokens, classic_logits = model.decode_classic(context, return_logits=True)  # (3, 16), (3, 16, V)
        merged = model.merged_logits(context, tokens)  # teacher-forced with the classic tokens
    assert tokens.shape == (3, model.num_action_tokens) == (3, 32)
    actions = model.bos_id  # BOS is masked out of classic decoding; compare over the action bins
    torch.testing.assert_close(merged[..., :actions], classic_logits[..., :actions], atol=1e-4, rtol=1e-4)
    assert torch.equal(merged[..., :actions].argmax(-1), tokens)


@VISION_VARIANTS
def test_stages_compose_to_perceive_and_generation_shape(extra):
    model = _model(perception_stages=2, **extra)
    policy = model.as_policy()
    observations = [_obs(4), _obs(5)]
    stages = policy.perception.stages()
    assert len(stages) == 3
    x = observations
    for stage in stages:
        x = stage(x)
    direct = policy.perception.perceive(observations)
    keypoint_tokens = 1 if extra.get("vision_keypoints") else 0
    assert x["X_V"].shape == (2, 8 + keypoint_tokens + 1, 48) and x["X_L"].shape == (2, 48 // 6, 48)
    torch.testing.assert_close(x["X_V"], direct["X_V"])
    actions = policy.generation.generate(direct)
    assert actions.shape == (2, 8, 4) and actions.dtype == np.float32


@VISION_VARIANTS
def test_checkpoint_round_trip(tmp_path, extra):
    model = _model(**extra)
    context = model.as_policy().perception.perceive([_obs(6)])
    before = model.as_policy().generation.generate(context)
    model.save_pretrained(tmp_path / "ckpt", {"note": "test"})
    loaded = TinyVLA.from_pretrained(tmp_path / "ckpt")
    after = loaded.as_policy().generation.generate(loaded.as_policy().perception.perceive([_obs(6)]))
    np.testing.assert_array_equal(before, after)
    assert loaded.config["action_low"] == model.config["action_low"]


def test_wrong_checkpoint_type_and_missing_checkpoint(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "ckpt")
    from auras.policies.tiny_dp.modeling import TinyDP

    with pytest.raises(InvalidInputError, match="expected a tiny-dp checkpoint, got policy_type='tiny-vla'"):
        TinyDP.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(InvalidInputError, match="expected a shipped name"):
        TinyVLA.from_pretrained(tmp_path / "nothing")


def test_agent_boundary_errors():
    with AurasAgent(policy=_model().as_policy()) as agent:
        with pytest.raises(InvalidInputError, match=r"expected shape \(84, 84, 3\), got \(64, 64, 3\)"):
            bad = _obs(0)
            agent.step(Observation({"front": np.zeros((64, 64, 3), np.uint8)}, bad.state, "push", 0, 0.0))
        with pytest.raises(InvalidInputError, match=r"expected shape \(4,\), got \(3,\)"):
            agent.step(Observation(_obs(0).images, np.zeros(3, np.float32), "push", 0, 0.0))
        with pytest.raises(InvalidInputError, match="expected at most 48 UTF-8 bytes"):
            agent.step(_obs(0, "x" * 60))
        action = agent.step(_obs(1))
        assert action.values.shape == (8, 4) and agent.execute_steps == 4


def test_large_config_wires_up_shrunk():
    """The OpenVLA-scale shape (ViT-L/14 @ 224 + 7B-class Llama) builds; on CPU only a shrunken copy runs."""
    full = TinyVLA.large_config(1.0)
    assert (full["vit_hidden"], full["vit_layers"], full["lm_hidden"], full["lm_layers"]) == (1024, 24, 4096, 32)
    small = TinyVLA.large_config(1 / 32)
    model = TinyVLA.from_samples(np.random.uniform(-1, 1, (10, 4)), np.zeros((10, 4), np.float32), ["x"], **small)
    obs = Observation({"front": np.zeros((224, 224, 3), np.uint8)}, np.zeros(4, np.float32), "x", 0, 0.0)
    policy = model.as_policy()
    assert policy.generation.generate(policy.perception.perceive([obs])).shape == (1, 1, 4)


def _training_batch(n: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(7)
    return {
        "image": torch.from_numpy(rng.integers(0, 255, (n, 84, 84, 3), dtype=np.uint8)),
        "state": torch.from_numpy(rng.uniform(0, 1, (n, 4)).astype(np.float32)),
        "instruction_ids": torch.zeros(n, 48, dtype=torch.long),
        "actions": torch.from_numpy(rng.uniform(-1, 1, (n, 8, 4)).astype(np.float32)),
    }


def test_proprio_dropout_swaps_the_proprio_token_in_training_only():
    model = _model(proprio_dropout=0.5)
    batch = _training_batch(64)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        trained = model.encode(batch, augment=True, generator=generator)["X_V"][:, -1]  # (B, D)
        served = model.encode(batch)["X_V"][:, -1]
    dropped = torch.isclose(trained, model.no_proprio.expand_as(trained)).all(-1)  # (B,)
    assert 10 < int(dropped.sum()) < 54  # about half of the samples, never all or none
    kept = ~dropped
    assert not torch.isclose(served, model.no_proprio.expand_as(served)).all(-1).any()  # serving always sees proprio
    torch.testing.assert_close(trained[kept], served[kept])
    model.train()
    loss = model.compute_loss(batch, generator)
    loss.backward()
    assert model.no_proprio.grad is not None and model.no_proprio.grad.abs().sum() > 0


def test_proprio_dropout_default_keeps_the_old_parameter_set_and_bad_settings_are_refused():
    assert not hasattr(_model(), "no_proprio")  # checkpoints trained without it load strictly, unchanged
    with pytest.raises(ValueError, match=r"proprio_dropout: expected a value < 1.0, got 1.5"):
        _model(proprio_dropout=1.5)
    with pytest.raises(ValueError, match="use_proprio=False needs a model trained with proprio_dropout > 0"):
        _model(use_proprio=False)


def test_serving_without_proprio_uses_the_no_proprio_token_for_every_request():
    model = _model(proprio_dropout=0.5, use_proprio=False)
    with torch.no_grad():
        served = model.encode(_training_batch(5))["X_V"][:, -1]  # (B, D)
    torch.testing.assert_close(served, model.no_proprio.expand_as(served))


def _teacher_inputs(model: TinyVLA, batch: dict, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs the teacher-forced pass received, the true tokens) for one compute_loss call."""
    seen = {}
    merged = model.merged_logits

    def spy(context, tokens):
        seen["inputs"] = tokens
        return merged(context, tokens)

    monkeypatch.setattr(model, "merged_logits", spy)
    model.compute_loss(batch, torch.Generator().manual_seed(0))
    return seen["inputs"], model.tokenize(batch["actions"])


def test_token_corruption_replaces_inputs_in_training_only_and_never_the_targets(monkeypatch):
    model = _model(token_corruption=0.3)
    batch = _training_batch(64)
    model.train()
    inputs, targets = _teacher_inputs(model, batch, monkeypatch)
    changed = (inputs != targets).float().mean().item()
    assert 0.2 < changed < 0.35  # 30% replaced by a random bin, a few by the same bin
    assert int(inputs.max()) < model.bos_id  # random bins are action bins, never BOS
    model.eval()
    inputs, targets = _teacher_inputs(model, batch, monkeypatch)
    assert torch.equal(inputs, targets)


def test_soft_targets_are_gaussians_over_the_action_bins_and_eval_loss_stays_plain_cross_entropy():
    from auras.policies.tiny_vla.modeling import soft_bin_targets

    soft = soft_bin_targets(torch.tensor([0, 100, 255]), n_bins=256, sigma=2.0, vocab=257)
    torch.testing.assert_close(soft.sum(-1), torch.ones(3))
    assert soft.argmax(-1).tolist() == [0, 100, 255] and torch.all(soft[:, 256] == 0)  # BOS gets nothing
    torch.testing.assert_close(soft[1, 98], soft[1, 102])  # symmetric around the true bin
    model = _model(label_sigma=1.5, augment_shift=0)
    batch = _training_batch(8)
    plain = _model(augment_shift=0)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.compute_loss(batch), plain.compute_loss(batch))  # eval: one-hot targets
        targets = model.tokenize(batch["actions"])
        logits = model.merged_logits(model.encode(batch), targets).reshape(-1, model.bos_id + 1)
        expected = -(soft_bin_targets(targets.reshape(-1), 256, 1.5, 257) * logits.log_softmax(-1)).sum(-1).mean()
        model.train()
        torch.testing.assert_close(model.compute_loss(batch), expected)


def test_bad_training_settings_are_refused_with_what_was_expected():
    with pytest.raises(ValueError, match=r"token_corruption: expected a value < 1.0, got 1.0"):
        _model(token_corruption=1.0)
    with pytest.raises(ValueError, match=r"label_sigma: expected a value >= 0\.0, got -1"):
        _model(label_sigma=-1)


def test_smoothed_greedy_decoding_prefers_a_broad_mode_and_both_paths_agree():
    model = _model(decode_sigma=4.0)
    logits = torch.full((1, 257), -30.0)
    logits[0, 255] = 0.0  # one spiky saturated bin ...
    logits[0, 90:111] = -0.5  # ... against a broad moderate mode of 21 bins with more mass in all
    assert _model().select_tokens(logits).item() == 255  # the plain argmax takes the spike
    assert 95 <= model.select_tokens(logits).item() <= 105
    policy = model.as_policy()
    context = policy.perception.perceive([_obs(1), _obs(2, "open the drawer")])
    with torch.inference_mode():
        tokens = model.decode_classic(context)
        merged = policy.generation.next_tokens(context, tokens)  # teacher-forced with the classic tokens
    assert torch.equal(merged, tokens)


def test_kv_cached_decoding_uses_the_installed_transformers_cache_keyword():
    """transformers renamed the KV cache (``past_key_values`` -> ``cache``) and warns on the old name;
    decoding must use the name the installed version takes (fails with the deprecated keyword)."""
    model = _model()
    context = model.as_policy().perception.perceive([_obs(1)])
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", FutureWarning)
        tokens = model.decode_classic(context)
    assert tokens.shape == (1, model.num_action_tokens)


def test_decode_sigma_is_validated():
    with pytest.raises(ValueError, match=r"decode_sigma: expected a value >= 0\.0, got -2"):
        _model(decode_sigma=-2)


def test_sincos_position_init_gives_each_patch_a_distinct_position_and_bad_values_are_refused():
    from auras.policies.tiny_vla.modeling import sincos_2d

    table = sincos_2d(7, 32)  # (49, 32)
    assert table.shape == (49, 32)
    distances = torch.cdist(table, table)
    assert distances[~torch.eye(49, dtype=torch.bool)].min() > 0.1  # no two patches share a position code
    assert distances[0, 1] < distances[0, 6]  # nearer patches have nearer codes
    model = _model(vit_position_init="sincos")
    positions = model.vit.embeddings.position_embeddings[0]  # (1 + 49, 32): CLS first
    torch.testing.assert_close(positions[1:], table)
    with pytest.raises(ValueError, match="vit_position_init: expected 'random' or 'sincos', got 'learned'"):
        _model(vit_position_init="learned")
    with pytest.raises(ValueError, match="expected a width divisible by 4, got 30"):
        sincos_2d(7, 30)


def test_vision_keypoints_follow_the_patch_that_stands_out_and_bad_counts_are_refused():
    assert not hasattr(_model(), "keypoint_softmax")  # the default keeps the old parameter set
    model = _model(vision_keypoints=4)
    grid = model.config["image_size"] // model.config["patch_size"]
    tokens = torch.zeros(1, 1 + grid * grid, model.config["vit_hidden"])  # (B, 1 + N_patch, H)
    row, col = 1, grid - 1
    tokens[0, 1 + row * grid + col, 0] = 100.0  # one patch stands out on feature 0
    with torch.no_grad():
        model.keypoint_softmax.proj.weight.zero_()
        model.keypoint_softmax.proj.bias.zero_()
        model.keypoint_softmax.proj.weight[0, 0] = 1.0  # keypoint 0 looks for feature 0
        xy = model.keypoint_positions(tokens)[0, 0]  # (2,)
    step = 2.0 / (grid - 1)
    torch.testing.assert_close(xy, torch.tensor([-1.0 + col * step, -1.0 + row * step]))
    with pytest.raises(ValueError, match="vision_keypoints: expected a value >= 0, got -1"):
        _model(vision_keypoints=-1)


def test_conv_stem_keeps_the_patch_grid_is_local_and_bad_settings_are_refused():
    plain = _model()
    assert isinstance(plain.vit.embeddings.patch_embeddings.projection, torch.nn.Conv2d)  # old parameter names
    model = _model(vit_stem="conv")  # patch_size 12: a 7 x 7 grid either way
    pixels = torch.rand(1, 3, 84, 84)
    with torch.no_grad():
        tokens = model.vit.embeddings(pixels)  # (1, 1 + 49, H)
        assert tokens.shape == plain.vit.embeddings(pixels).shape == (1, 50, 32)
        poked = pixels.clone()
        poked[0, :, 0, 0] = 1.0 - poked[0, :, 0, 0]  # change the top-left pixel only
        changed = (model.vit.embeddings(poked) - tokens).abs().amax(-1)[0, 1:].reshape(7, 7)  # per patch
    # The patch holding the pixel sees it; the others only through GroupNorm's image-wide statistics.
    assert changed[0, 0] > 20 * changed.flatten()[1:].max()
    with pytest.raises(ValueError, match="vit_stem='conv': expected an even patch_size, got 7"):
        _model(vit_stem="conv", patch_size=7, image_size=84)
    with pytest.raises(ValueError, match="vit_stem: expected 'patch' or 'conv', got 'resnet'"):
        _model(vit_stem="resnet")
