"""tiny-dp: batched denoising, the DDIM update, perception stages, checkpoints, input errors, training."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from auras.agent import AurasAgent
from auras.errors import ConfigError, InvalidInputError
from auras.policies.tiny_dp.adapter import ddim_step
from auras.policies.tiny_dp.modeling import TinyDP
from auras.types import Observation

# Small widths keep every test fast; the structure (3 CNN blocks, 3 U-Net levels) is the default one.
SMALL = {"cnn_channels": [8, 16, 16], "num_keypoints": 8, "text_dim": 8, "obs_dim": 32, "down_dims": [16, 32, 64],
         "step_embed_dim": 16, "num_inference_steps": 20}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(seed: int = 0, **overrides) -> TinyDP:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (50, 4)).astype(np.float32) * [1.0, 1.0, 1.0, 0.3]
    states = rng.uniform(0, 1, (50, 4)).astype(np.float32)
    return TinyDP.from_samples(actions, states, ["push the puck"], **{**SMALL, **overrides}).eval()


def observation(seed: int, size: int = 84, instruction: str = "push the puck") -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(
        images={"front": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)},
        state=rng.uniform(0, 1, 4).astype(np.float32),
        instruction=instruction,
        step_id=seed,
        capture_time=time.monotonic(),
    )


def test_batched_denoise_equals_unbatched():
    model = small_model()
    gen = model.as_policy().generation
    sample = gen.initial_noise(3, torch.Generator().manual_seed(1))
    h_o = torch.randn(3, model.config["obs_dim"], generator=torch.Generator().manual_seed(2))
    step_index, num_steps = torch.tensor([0, 7, 15]), torch.tensor([5, 3, 5])
    batched = gen.denoise(sample, step_index, num_steps, {"H_o": h_o})
    for b in range(3):
        alone = gen.denoise(sample[b : b + 1], step_index[b : b + 1], num_steps[b : b + 1], {"H_o": h_o[b : b + 1]})
        torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-5, rtol=1e-5)
    # Splitting one request's steps over two calls (as pipeline stages do) changes nothing either.
    halves = gen.denoise(sample[:1], torch.tensor([0]), torch.tensor([2]), {"H_o": h_o[:1]})
    halves = gen.denoise(halves, torch.tensor([2]), torch.tensor([3]), {"H_o": h_o[:1]})
    torch.testing.assert_close(halves, batched[:1], atol=1e-5, rtol=1e-5)
    # A request asked for zero steps is returned unchanged.
    same = gen.denoise(sample, torch.tensor([0, 3, 20]), torch.tensor([0, 0, 0]), {"H_o": h_o})
    torch.testing.assert_close(same, sample)


def test_denoise_follows_diffusers_ddim():
    """Our loop (k -> timesteps[k], vectorised update) equals diffusers' DDIMScheduler.step loop."""
    from diffusers import DDIMScheduler

    model = small_model()
    gen = model.as_policy().generation
    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(gen.num_inference_steps)
    sample = gen.initial_noise(2, torch.Generator().manual_seed(3))
    h_o = torch.randn(2, model.config["obs_dim"], generator=torch.Generator().manual_seed(4))
    ours = gen.denoise(sample, torch.tensor([0, 0]), torch.tensor([20, 20]), {"H_o": h_o})
    ref = sample.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = model.unet(ref, t.repeat(2), h_o)
            ref = scheduler.step(eps, t, ref).prev_sample
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [25, 30, 10])
def test_vectorised_ddim_update_equals_scheduler_step(steps):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(5)
    timesteps = scheduler.timesteps[torch.tensor([0, 3, steps - 1])].long()
    sample, eps = torch.randn(3, 16, 4, generator=g) * 2, torch.randn(3, 16, 4, generator=g)
    ours = ddim_step(scheduler.alphas_cumprod, scheduler.final_alpha_cumprod, 100 // steps, eps, timesteps, sample)
    for b in range(3):
        ref = scheduler.step(eps[b : b + 1], int(timesteps[b]), sample[b : b + 1]).prev_sample
        torch.testing.assert_close(ours[b : b + 1], ref, atol=1e-6, rtol=1e-6)


def test_stages_compose_to_perceive_and_cache_instructions():
    model = small_model()
    perception = model.as_policy().perception
    assert perception.spec.cameras == {"front": (84, 84)} and perception.spec.state_dim == 4
    observations = [observation(1), observation(2, instruction="press the button")]
    stages = perception.stages()
    assert len(stages) >= 3
    carry = observations
    for stage in stages:
        carry = stage(carry)
    expected = perception.perceive(observations)
    assert set(carry) == {"H_o"} and carry["H_o"].shape == (2, model.config["obs_dim"])
    torch.testing.assert_close(carry["H_o"], expected["H_o"])
    assert perception.cached_instructions == ["press the button", "push the puck"]
    # Batching observations changes nothing per observation; a different instruction changes H_o.
    torch.testing.assert_close(perception.perceive(observations[:1])["H_o"], expected["H_o"][:1], atol=1e-5, rtol=0)
    other = perception.perceive([observation(1, instruction="press the button")])["H_o"]
    assert not torch.allclose(other, expected["H_o"][:1])


def test_checkpoint_round_trip_gives_identical_actions(tmp_path):
    model = small_model(seed=7)
    model.save_pretrained(tmp_path / "ckpt", {"note": "test"})
    loaded = TinyDP.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    obs = [observation(3), observation(4)]
    actions = []
    for m in (model, loaded):
        policy = m.as_policy()
        assert policy.execute_steps == 8 and policy.name == "tiny-dp"
        out = policy.generation.generate(policy.perception.perceive(obs))
        assert out.shape == (2, 16, 4) and out.dtype == np.float32
        actions.append(out)
    np.testing.assert_array_equal(actions[0], actions[1])
    # Actions come back in env units: within the fitted bounds (x_0 is clipped to [-1, 1]).
    lo, hi = np.array(model.config["action_min"]), np.array(model.config["action_max"])
    assert np.all(actions[0] >= lo - 1e-5) and np.all(actions[0] <= hi + 1e-5)


def test_generate_is_reproducible_per_episode():
    policy = small_model().as_policy()
    context = policy.perception.perceive([observation(5)])
    first, second = policy.generation.generate(context), policy.generation.generate(context)
    assert not np.array_equal(first, second)  # fresh noise per request within an episode
    policy.reset()
    np.testing.assert_array_equal(policy.generation.generate(context), first)


def test_bad_inputs_are_rejected_with_clear_messages():
    model = small_model()
    with AurasAgent(policy=model.as_policy()) as agent:
        with pytest.raises(
            InvalidInputError, match=r"images\['front'\]: expected shape \(84, 84, 3\), got \(64, 64, 3\)"
        ):
            agent.step(observation(0, size=64))
        bad_state = Observation({"front": np.zeros((84, 84, 3), np.uint8)}, np.zeros(6, np.float32), "push", 0, 0.0)
        with pytest.raises(InvalidInputError, match=r"state: expected shape \(4,\), got \(6,\)"):
            agent.step(bad_state)
        with pytest.raises(InvalidInputError, match="at most 64 UTF-8 bytes"):
            agent.step(observation(0, instruction="x" * 65))
        action = agent.step(observation(0))  # the agent is still usable
        assert action.values.shape == (16, 4) and agent.execute_steps == 8
    gen = model.as_policy().generation
    noise, h_o = gen.initial_noise(2), torch.zeros(2, model.config["obs_dim"])
    with pytest.raises(InvalidInputError, match="step_index \\+ num_steps <= 20"):
        gen.denoise(noise, torch.tensor([15, 0]), torch.tensor([6, 1]), {"H_o": h_o})
    with pytest.raises(InvalidInputError, match=r"H_o.*: expected"):
        gen.denoise(noise, torch.tensor([0, 0]), torch.tensor([1, 1]), {"H_o": torch.zeros(2, 7)})
    with pytest.raises(ConfigError, match=r"unknown key 'down_dim' \(did you mean 'down_dims'\?\)"):
        TinyDP({"down_dim": [8]})
    with pytest.raises(ConfigError, match="chunk_horizon: expected a positive multiple of 4"):
        TinyDP({"chunk_horizon": 10})


def test_large_config_wires_up_shrunken():
    shrunk = {"cnn_channels": [8, 8, 16, 16], "num_keypoints": 4, "text_dim": 8, "obs_dim": 16,
              "down_dims": [16, 32, 64], "step_embed_dim": 16, "num_inference_steps": 4}
    model = TinyDP.large(**shrunk).eval()
    assert len(model.encoder.blocks) == 4 and TinyDP.LARGE["down_dims"] == [256, 512, 1024]
    policy = model.as_policy()
    assert len(policy.perception.stages()) == 4
    out = policy.generation.generate(policy.perception.perceive([observation(0)]))
    assert out.shape == (1, 16, 4) and np.all(np.isfinite(out))


def test_overfit_smoke_reduces_loss():
    model = small_model(seed=1)
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 256, (8, 84, 84, 3), dtype=torch.uint8, generator=g),
        "state": torch.rand(8, 4, generator=g),
        "actions": torch.linspace(-0.8, 0.8, 16)[None, :, None].repeat(8, 1, 4) * torch.rand(8, 1, 4, generator=g),
        "instruction_ids": torch.randint(1, 200, (8, 64), generator=g),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def eval_loss() -> float:  # fixed noise and timesteps, so the comparison is not noise
        with torch.no_grad():
            return float(
                np.mean([float(model.compute_loss(batch, torch.Generator().manual_seed(i))) for i in range(4)])
            )

    before = eval_loss()
    for _ in range(40):
        loss = model.compute_loss(batch, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.8 * before, (before, after)
