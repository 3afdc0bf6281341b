"""tiny-flow: the SmolVLA architecture at a trainable size, trained by `auras train` and run by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auras import AurasAgent, load_config
from auras.data.collect import collect
from auras.policies.tiny_flow.modeling import TinyFlow
from auras.training.train import train
from tests.test_tiny_dp import observation

SMALL = {"vision_layers": 1, "text_layers": 2, "vision_hidden": 32, "text_hidden": 64, "text_intermediate": 128}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    collect("push-v3", episodes=1, out=out, seed=0, horizon=30)
    return out


def _model() -> TinyFlow:
    rng = np.random.default_rng(0)
    return TinyFlow.from_samples(rng.normal(size=(50, 4)), rng.normal(2.0, 3.0, size=(50, 4)), ["push the puck"])


def test_normalisation_is_fitted_to_the_data_and_the_loss_trains_the_expert_and_the_prefix():
    model = _model()
    assert np.allclose(model.config["state_mean"], 2.0, atol=1.0) and np.allclose(
        model.config["state_std"], 3.0, atol=1.0
    )
    batch = {
        "image": torch.randint(0, 255, (3, 84, 84, 3), dtype=torch.uint8),
        "state": torch.randn(3, 4),
        "actions": torch.randn(3, 16, 4),
        "instruction_ids": torch.from_numpy(np.stack([model.vla.tokenizer("push the puck")[0]] * 3)),
    }
    loss = model.compute_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    flow = model.vla.model
    for name, param in (("expert", flow.vlm_with_expert.lm_expert.layers[1].self_attn.k_proj.weight),
                        ("prefix", flow.text_layers[0].self_attn.q_proj.weight),
                        ("vision", flow.vision.encoder.layers[0].self_attn.q_proj.weight)):
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches the {name}"


def test_a_checkpoint_round_trips_and_acts_the_same(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "ckpt")
    again = TinyFlow.from_pretrained(tmp_path / "ckpt")
    obs = [observation(i, 84) for i in range(2)]
    a = model.as_policy().perception.perceive(obs)
    b = again.as_policy().perception.perceive(obs)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.mujoco
@pytest.mark.ray
def test_auras_train_runs_it_and_the_checkpoint_serves_in_every_frame_mode_and_on_ray(demos, tmp_path):
    result = train("tiny-flow", demos, tmp_path / "run", steps=2, batch_size=4, eval_every=100, eval_episodes=1,
                   overrides=SMALL)
    assert result["steps_done"] == 2
    checkpoint = tmp_path / "run" / "last"
    runs = [("sequential", "local"), ("pipeline", "local"), ("auras", "local"), ("auras", "ray")]
    for mode, backend in runs:  # on Ray the actors build it by name from the checkpoint path
        config = load_config(overrides=["policy.type=tiny-flow", f"policy.checkpoint={checkpoint}",
                                        f"pipeline.mode={mode}", f"pipeline.backend={backend}",
                                        "pipeline.pp_perception=2", "pipeline.pp_generation=5"])
        with AurasAgent(config) as agent:
            assert agent.policy_spec.name == "tiny-flow" and agent.policy_spec.action_shape == (16, 4)
            actions = [agent.step(observation(i, 84)).values for i in range(4)]
        assert all(a.shape == (16, 4) and np.isfinite(a).all() for a in actions), (mode, backend)
