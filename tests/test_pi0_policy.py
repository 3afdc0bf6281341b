"""π0 and π0.5 as auras policies, from LeRobot checkpoints by path (auras/policies/pi0.py).

The fixtures (tests/fixtures/pi0-tiny, pi05-tiny; scripts/pi0_reference.py, LeRobot 0.4.4) hold LeRobot's own
preprocessing (normalised state, tokens of the instruction or of π0.5's state prompt) and its unnormalised action
chunk for raw camera images, raw state and instruction text. The policy reproduces them end to end within 1e-5; the
native model's layer-by-layer equivalence is tests/test_pi0.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from auras import AurasAgent, load_config
from auras.errors import ConfigError, InvalidInputError
from auras.policies.pi0 import Pi0, Pi05
from auras.types import Observation

FIXTURES = Path(__file__).parent / "fixtures"
CAMERAS = ("front", "wrist")
TOLERANCE = 1e-5
KINDS = {"pi0": Pi0, "pi05": Pi05}


def _fixture(kind: str) -> tuple[Path, dict[str, torch.Tensor], list[str]]:
    root = FIXTURES / f"{kind}-tiny"
    return root / "checkpoint", load_file(root / "reference.safetensors"), json.loads(
        (root / "info.json").read_text())["tasks"]


def _context(model: Pi0, inputs: dict) -> dict[str, torch.Tensor]:
    """The perception computation from prepared inputs (what the policy's stages compute, in one go)."""
    flow = model.model
    tokens = [flow.embed_image(pixels) for pixels in inputs["pixels"]]
    prefix = flow.embed_prefix(tokens, *inputs["prefix_args"])
    context = {"prefix_pad": prefix["pad"], **inputs["context"]}
    for index in range(flow.num_prefix_layers):
        h, context[f"kv.{index}.key"], context[f"kv.{index}.value"] = flow.prefix_layer(index, prefix)
        prefix = {**prefix, "h": h}
    return context


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_raw_images_state_and_instruction_give_lerobots_action_chunk(kind):
    checkpoint, ref, tasks = _fixture(kind)
    torch.set_num_threads(1)
    model = KINDS[kind].from_lerobot(checkpoint)
    inputs = model.prepare_tensors({c: ref[f"input.image.{c}"] for c in CAMERAS}, ref["input.state"], tasks)
    _, tokens, token_mask = inputs["prefix_args"]
    assert torch.equal(tokens, ref["input.lang_tokens"]) and torch.equal(token_mask, ref["input.lang_mask"])
    if kind == "pi0":  # the state rides in the context, normalised and padded
        torch.testing.assert_close(inputs["context"]["state"], ref["model_in.state_padded"], atol=TOLERANCE, rtol=0)
    else:
        assert "state" not in inputs["context"]
    context = _context(model, inputs)
    generation = model.as_policy().generation
    sample = generation.denoise(ref["input.noise"], torch.zeros(2, dtype=torch.int64), torch.full((2,), 10), context)
    torch.testing.assert_close(sample, ref["output.actions_normalized_padded"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(generation.to_actions(sample), ref["output.actions"].numpy(), atol=TOLERANCE)
    # the pipeline's way: 3 steps, then the other 7, rows at different steps in one batch
    first = generation.denoise(ref["input.noise"], torch.tensor([0, 0]), torch.tensor([3, 10]), context)
    done = generation.denoise(first, torch.tensor([3, 10]), torch.tensor([7, 0]), context)
    torch.testing.assert_close(done, ref["output.actions_normalized_padded"], atol=TOLERANCE, rtol=0)


def test_pi0_acts_on_the_state_its_context_carries():
    """π0's state enters the flow from the context: another state in the same context moves the chunk (a flow that
    ignored the context's state, or read the prefix's, would not)."""
    checkpoint, ref, tasks = _fixture("pi0")
    model = Pi0.from_lerobot(checkpoint)
    with torch.no_grad():
        inputs = model.prepare_tensors({c: ref[f"input.image.{c}"] for c in CAMERAS}, ref["input.state"], tasks)
        context = _context(model, inputs)
        generation = model.as_policy().generation
        steps = (torch.zeros(2, dtype=torch.int64), torch.full((2,), 10))
        moved = generation.denoise(ref["input.noise"], *steps, {**context, "state": context["state"] + 0.5})
    assert (moved - ref["output.actions_normalized_padded"]).abs().max() > 100 * TOLERANCE
    with pytest.raises(InvalidInputError, match="lacks 'state'"):
        generation.denoise(ref["input.noise"], *steps, {k: v for k, v in context.items() if k != "state"})


def _observations(ref: dict[str, torch.Tensor], tasks: list[str], cameras=CAMERAS) -> list[Observation]:
    images = {c: (ref[f"input.image.{c}"] * 255).round().to(torch.uint8) for c in cameras}
    return [
        Observation(images={c: images[c][b].permute(1, 2, 0).numpy() for c in cameras},
                    state=ref["input.state"][b].numpy(), instruction=tasks[b], step_id=b, capture_time=0.0)
        for b in range(2)
    ]


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_the_policys_stages_from_observations_compute_that_context(kind):
    """uint8 camera images in: the staged perception (a stage per SigLIP and per Gemma layer) computes what the
    model computes in one go on the same pixels."""
    checkpoint, ref, tasks = _fixture(kind)
    model = KINDS[kind].from_lerobot(checkpoint)
    policy = model.as_policy()
    assert len(policy.perception.stages()) == 2 + 3  # the fixture's SigLIP and Gemma depths
    observations = _observations(ref, tasks)
    context = policy.perception.perceive(observations)
    quantized = {c: torch.from_numpy(np.stack([o.images[c] for o in observations])).permute(0, 3, 1, 2) / 255.0
                 for c in CAMERAS}
    expected = _context(model, model.prepare_tensors(quantized, ref["input.state"], tasks))
    assert set(context) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(torch.as_tensor(context[key]), value, atol=TOLERANCE, rtol=0, msg=key)


def test_a_camera_the_robot_does_not_send_is_an_empty_masked_camera():
    checkpoint, ref, tasks = _fixture("pi0")
    model = Pi0.from_lerobot(checkpoint, Pi0.settings_class(cameras=["front"]))
    policy = model.as_policy()
    assert dict(policy.perception.spec.cameras) == {"front": (32, 32)}
    context = policy.perception.perceive(_observations(ref, tasks, cameras=("front",)))
    patches = (32 // 8) ** 2
    pad = torch.as_tensor(context["prefix_pad"])
    assert pad[:, :patches].all() and not pad[:, patches:2 * patches].any()  # front, then the empty wrist camera
    with pytest.raises(ConfigError, match="subset of the checkpoint's cameras"):
        Pi0.from_lerobot(checkpoint, Pi0.settings_class(cameras=["top"]))


def test_a_checkpoint_of_the_other_variant_or_without_its_tokenizer_is_refused_by_name(tmp_path):
    checkpoint, _, _ = _fixture("pi0")
    with pytest.raises(InvalidInputError, match='expected "type": "pi05", got \'pi0\''):
        Pi05.from_lerobot(checkpoint)
    alone = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, alone)  # without the tokenizer directory beside it
    with pytest.raises(InvalidInputError, match="tokenizer 'tokenizer' was not found"):
        Pi0.from_lerobot(alone)
    config = json.loads((alone / "config.json").read_text())
    (alone / "config.json").write_text(json.dumps({**config, "type": "pi05"}))
    with pytest.raises(InvalidInputError, match="unexpected key 'action_time_mlp_in"):
        Pi05.from_lerobot(alone, Pi05.settings_class(tokenizer=str(FIXTURES / "pi0-tiny" / "tokenizer")))


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("pi0", ["pipeline.mode=sequential"]),
     ("pi0", ["pipeline.mode=auras", "pipeline.pp_perception=3", "pipeline.pp_generation=5"]),
     ("pi05", ["pipeline.mode=auras", "pipeline.pp_perception=2", "pipeline.pp_generation=2"])],
    ids=["pi0-sequential", "pi0-auras", "pi05-auras"],
)
def test_a_lerobot_checkpoint_runs_by_path_in_the_pipeline(kind, extra):
    checkpoint, ref, tasks = _fixture(kind)
    config = load_config(overrides=[f"policy.type={kind}", f"policy.checkpoint={checkpoint}", *extra])
    with AurasAgent(config) as agent:
        spec = agent.policy_spec
        assert spec.family == "denoising" and spec.action_shape == (8, 4) and spec.generation_iterations == 10
        assert dict(agent.spec.cameras) == {"front": (32, 32), "wrist": (24, 40)}
        observations = _observations(ref, tasks)
        actions = [agent.step(observations[i % 2]) for i in range(4)]
    assert all(a.values.shape == (8, 4) and np.isfinite(a.values).all() for a in actions)
    policy = KINDS[kind].from_lerobot(checkpoint).as_policy()  # the same requests, one at a time, in this process
    with torch.inference_mode():
        alone = [policy.generation.generate(policy.perception.perceive([observations[i % 2]]))[0] for i in range(4)]
    assert not np.allclose(alone[0], alone[1])  # the observations differ: a stale or mixed-up action would show
    if "pipeline.mode=sequential" in extra:
        for action, own in zip(actions, alone, strict=True):
            np.testing.assert_allclose(action.values, own, atol=TOLERANCE)
    else:  # the pipeline's first request is decoded from its own observation alone
        np.testing.assert_allclose(actions[0].values, alone[0], atol=TOLERANCE)


@pytest.mark.parametrize(("kind", "mode"), [("pi0", "sequential"), ("pi05", "auras")])
def test_auras_serve_serves_a_lerobot_checkpoint_by_path(kind, mode, tmp_path):
    """`auras serve --policy pi0 --set policy.checkpoint=DIR`: a robot on the real bridge gets the checkpoint's
    chunks (the server's spec says what the robot must send)."""
    from auras.bridge.faults import ServerProcess
    from auras.bridge.transport import free_service_port
    from auras_client import RobotClient

    checkpoint, ref, tasks = _fixture(kind)
    service = f"tcp://127.0.0.1:{free_service_port()}"
    args = ["--policy", kind, "--mode", mode, "--set", f"policy.checkpoint={checkpoint}"]
    observation = _observations(ref, tasks)[0]
    with ServerProcess(args, service, log_path=tmp_path / "serve.log") as server:
        server.wait_ready(120.0)
        with RobotClient(service, cameras={"front": (32, 32), "wrist": (24, 40)}, state_dim=4,
                         instruction=tasks[0], ttl_s=60.0, timeout_s=5.0) as robot:
            assert robot.server_info["action_shape"] == [8, 4]
            deadline, action = time.monotonic() + 120.0, None
            while action is None and time.monotonic() < deadline:
                robot.publish(observation.images, observation.state)
                time.sleep(0.05)
                action = robot.take_action()
    assert action is not None, (tmp_path / "serve.log").read_text()[-2000:]
    assert action.chunk.shape == (8, 4) and np.isfinite(action.chunk).all()


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_the_policy_runs_in_bfloat16_close_to_float32(kind):
    """policy.dtype=bfloat16 (what full size runs in on a CPU): the chunk stays within bfloat16's rounding of the
    float32 one (measured: at most 0.013 on actions up to 3.6)."""
    checkpoint, ref, tasks = _fixture(kind)
    observations = _observations(ref, tasks)
    chunks = {}
    for dtype in ("float32", "bfloat16"):
        policy = KINDS[kind].from_lerobot(checkpoint).as_policy()
        policy.to("cpu", dtype)
        context = policy.perception.perceive(observations)
        sample = policy.generation.denoise(ref["input.noise"], torch.zeros(2, dtype=torch.int64),
                                           torch.full((2,), 10), context)
        chunks[dtype] = policy.generation.to_actions(sample)
    assert np.isfinite(chunks["bfloat16"]).all()
    np.testing.assert_allclose(chunks["bfloat16"], chunks["float32"], atol=0.05)


def test_the_checkpoint_runs_by_path_through_auras_bench_in_sequential_and_auras_modes(tmp_path):
    """The bench's MuJoCo robot has one 'front' camera at env.image_size: the fixture's wrist camera is an empty one."""
    from typer.testing import CliRunner

    from auras.cli import app

    checkpoint, _, _ = _fixture("pi05")
    result = CliRunner().invoke(app, [
        "bench", "-c", "quick", "--policy", "pi05", "--modes", "sequential,auras", "--episodes", "1",
        "--pp-perception", "2", "--pp-generation", "2", "--out", str(tmp_path), "--no-progress", "--no-plots",
        "--set", f"policy.checkpoint={checkpoint}", "--set", "policy.model.cameras=[front]",
        "--set", "env.image_size=32", "--set", "env.horizon=10", "--set", "bench.stream_steps=10",
        "--set", "bench.warmup_steps=2",
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["policy"], r["mode"]) for r in rows] == [("pi05", "sequential"), ("pi05", "auras")]
    for row in rows:
        assert row["metrics"]["throughput_hz"] > 0 and len(row["episodes"]) == 1


def test_pi05_with_a_byte_tokenizer_leaves_the_instruction_what_its_prompt_does_not_take():
    """A tokenizer that refuses long text (full size with random weights uses one) must fit π0.5's whole prompt:
    the spec's instruction limit is what the state bins and the prompt's words leave of it."""
    from auras.policies.flow_vla import ByteTokenizer

    model = Pi05.from_lerobot(_fixture("pi05")[0])
    model.tokenizer = ByteTokenizer(200)  # byte ids stay below the fixture's 320-token vocabulary
    spec = model.observation_spec
    assert 0 < spec.max_instruction_bytes < 200
    longest = "p" * spec.max_instruction_bytes
    spec.check_instruction(longest)
    with pytest.raises(InvalidInputError, match="UTF-8 bytes"):
        spec.check_instruction(longest + "p")
    state = np.full(4, 1e3, np.float32)  # every bin at its widest (3 digits)
    observation = Observation(images={c: np.zeros((*model.cameras[c], 3), np.uint8) for c in CAMERAS}, state=state,
                              instruction=longest, step_id=0, capture_time=0.0)
    context = model.as_policy().perception.perceive([observation])
    assert torch.as_tensor(context["prefix_pad"]).any()
