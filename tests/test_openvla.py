"""OpenVLA in auras: OpenVLA's own outputs reproduced from a checkpoint in its Hugging Face layout, and the policy in
the pipeline, in ``auras bench`` and behind ``auras serve``.

The fixture (tests/fixtures/openvla-tiny, made by scripts/openvla_reference.py with OpenVLA's Prismatic modelling
code, timm 0.9.16 and transformers 4.40.1; see docs/openvla-reference.md) holds a tiny random OpenVLA checkpoint,
two camera images and instructions, and what the reference computed from them: the processor's pixel values, the
fused backbone's patch tokens, the projector's output, the logits of every decode step, the 7 greedy action tokens
and the un-normalised actions (``predict_action``, for two ``unnorm_key`` datasets).

Tolerance: 1e-5 on every float, absolute, except the logits: 1e-5 absolute plus 1e-5 relative (their magnitude
reaches 3.6). Measured on this machine (fp32, CPU): pixel values, patch tokens and projector output equal bit for
bit; logits 6.9e-6 at most; actions 4e-9. Token ids are compared exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from auras import AurasAgent, load_config
from auras.bridge.server import BridgeServer
from auras.cli import app
from auras.errors import ConfigError, InvalidInputError
from auras.policies.openvla import OpenVLA
from auras.policies.openvla_config import OpenVLAConfig
from auras.types import Observation
from auras_client.client import RobotClient
from tests.ports import free_service_port

FIXTURE = Path(__file__).parent / "fixtures" / "openvla-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
ATOL = 1e-5
TASKS = json.loads((FIXTURE / "info.json").read_text())["tasks"]


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "reference.safetensors")


@pytest.fixture(scope="module")
def model() -> OpenVLA:
    return OpenVLA.from_checkpoint(CHECKPOINT, OpenVLAConfig(unnorm_key="bridge_orig"), image_size=72)


def _observations(reference: dict[str, torch.Tensor]) -> list[Observation]:
    return [Observation(images={"front": reference["input.images"][row].numpy()}, state=np.zeros(4, np.float32),
                        instruction=TASKS[row], step_id=row, capture_time=0.0) for row in range(len(TASKS))]


@torch.inference_mode()
def test_the_native_model_reproduces_openvlas_own_tensors(model, reference):
    """Row by row as OpenVLA runs them (batch 1, prompt unpadded): pixels, patches, projection, every step's logits."""
    vla = model.model
    for row, task in enumerate(TASKS):
        pixels = model.processor([reference["input.images"][row].numpy()])  # (1, 6, 224, 224)
        torch.testing.assert_close(pixels[0, :, ::8, ::8], reference[f"{row}.pixel_values.every_8th"], atol=ATOL,
                                   rtol=0)
        bos, text, valid = model.tokenizer(task)
        assert [bos, *text[valid].tolist()] == reference[f"{row}.input_ids"].tolist()
        patches = vla.vision_backbone(pixels)  # (1, 256, 32)
        torch.testing.assert_close(patches[0, ::4], reference[f"{row}.fused_patches.every_4th"], atol=ATOL, rtol=0)
        projected = vla.projector(patches)
        torch.testing.assert_close(projected[0, ::4], reference[f"{row}.projected.every_4th"], atol=ATOL, rtol=0)

        prefix = vla.prefix(projected, torch.tensor([bos]), torch.from_numpy(text[valid])[None],
                            torch.ones(1, int(valid.sum()), dtype=torch.bool))
        h, kv = prefix["h"], []
        for index in range(len(vla.layers)):
            h, k, v = vla.layer(index, h, prefix["positions"], prefix["mask"])
            kv.append((k, v))
        tokens = reference[f"{row}.tokens"][None]  # (1, 7): teacher-forced, every later step in one pass
        later, _ = vla.extend(tokens[:, :-1], kv, prefix["valid"])
        logits = torch.cat([vla.logits(h[:, -1:]), later], dim=1)[0]  # (7, V)
        torch.testing.assert_close(logits, reference[f"{row}.logits"], atol=ATOL, rtol=1e-5)
        assert logits.argmax(-1).tolist() == reference[f"{row}.tokens"].tolist()
        np.testing.assert_allclose(model.detokenize(tokens)[0, 0], reference[f"{row}.actions"].numpy(), atol=ATOL,
                                   rtol=0)


@torch.inference_mode()
def test_the_policy_from_observations_decodes_openvlas_tokens_and_actions_batched_and_padded(model, reference):
    """Both requests in one batch, prompts left-padded to 48 tokens: classic and merged decoding give OpenVLA's 7
    tokens, and its actions."""
    policy = model.as_policy()
    context = policy.perception.perceive(_observations(reference))
    assert context["prefix_valid"].shape == (2, 1 + 256 + 48) and not context["prefix_valid"].all()
    expected = torch.stack([reference["0.tokens"], reference["1.tokens"]])  # (2, 7)
    classic = policy.generation.decode_classic(context)
    assert torch.equal(classic, expected)
    assert torch.equal(policy.generation.next_tokens(context, expected), expected)
    actions = policy.generation.generate(context)  # (2, 1, 7)
    assert actions.shape == (2, 1, 7) and actions.dtype == np.float32
    np.testing.assert_allclose(actions[:, 0], torch.stack([reference["0.actions"], reference["1.actions"]]).numpy(),
                               atol=ATOL, rtol=0)


@torch.inference_mode()
def test_unnorm_key_sets_the_statistics_and_the_number_of_action_tokens(reference):
    metaworld = OpenVLA.from_checkpoint(CHECKPOINT, OpenVLAConfig(unnorm_key="metaworld"), image_size=72).as_policy()
    assert metaworld.generation.num_action_tokens == 4 and metaworld.generation.action_shape == (1, 4)
    actions = metaworld.generation.generate(metaworld.perception.perceive(_observations(reference)))
    expected = torch.stack([reference["0.actions.metaworld"], reference["1.actions.metaworld"]]).numpy()
    np.testing.assert_allclose(actions[:, 0], expected, atol=ATOL, rtol=0)
    with pytest.raises(ConfigError, match=r"2 datasets \['bridge_orig', 'metaworld'\].*policy\.model\.unnorm_key"):
        OpenVLA.from_checkpoint(CHECKPOINT)
    with pytest.raises(ConfigError, match=r"'bridge' is not in the checkpoint's norm_stats; expected one of"):
        OpenVLA.from_checkpoint(CHECKPOINT, OpenVLAConfig(unnorm_key="bridge"))


def _copy(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(CHECKPOINT, checkpoint)
    return checkpoint


def test_a_checkpoint_with_a_missing_or_misshapen_tensor_or_another_model_type_is_refused_by_name(tmp_path):
    checkpoint, settings = _copy(tmp_path), OpenVLAConfig(unnorm_key="metaworld")
    state = load_file(checkpoint / "model.safetensors")
    key = "vision_backbone.featurizer.blocks.1.ls2.scale_factor"
    save_file({k: v for k, v in state.items() if k != key}, checkpoint / "model.safetensors")
    with pytest.raises(InvalidInputError, match=rf"model\.safetensors': missing 1 key\(s\), first \['{key}'\]"):
        OpenVLA.from_checkpoint(checkpoint, settings)
    save_file({**state, "projector.fc3.weight": state["projector.fc3.weight"][:, :16].contiguous()},
              checkpoint / "model.safetensors")
    with pytest.raises(InvalidInputError, match=r"'projector\.fc3\.weight' has shape \(32, 16\), but its config\.json "
                                                r"gives \(32, 32\)"):
        OpenVLA.from_checkpoint(checkpoint, settings)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "model_type": "prismatic"}))
    with pytest.raises(InvalidInputError, match=r'expected "model_type": "openvla", got \'prismatic\''):
        OpenVLA.from_checkpoint(checkpoint, settings)


def test_a_sharded_checkpoint_loads_as_the_single_file_does(tmp_path, reference):
    """OpenVLA-7B ships its weights in shards listed by model.safetensors.index.json."""
    checkpoint = _copy(tmp_path)
    state = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, checkpoint / name)
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    model = OpenVLA.from_checkpoint(checkpoint, OpenVLAConfig(unnorm_key="bridge_orig"), 72)
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_an_instruction_longer_than_the_prompt_length_is_refused_with_the_setting_to_raise(reference):
    model = OpenVLA.from_checkpoint(CHECKPOINT, OpenVLAConfig(unnorm_key="metaworld", prompt_tokens=20), 72)
    with pytest.raises(InvalidInputError, match=r"prompt is 22 tokens after <s>, expected at most 20 "
                                                r"\(policy\.model\.prompt_tokens\)"):
        model.as_policy().perception.perceive(_observations(reference)[:1])


def test_without_a_checkpoint_the_architecture_is_openvla_7b():
    """Built on the meta device (no memory): OpenVLA-7B's 7,541,237,184 parameters (DINOv2 ViT-L/14 with registers
    303 M, SigLIP so400m 428 M, projector 71 M, Llama-2 7B with 32064 tokens 6.74 B); perception stages of about
    one Llama layer's work: the 26 tower blocks in 3 groups, then the 32 layers. ``llm_layers`` drops Llama layers
    only."""
    with torch.device("meta"):
        full = OpenVLA.random_full_size(OpenVLAConfig())
        cut = OpenVLA.random_full_size(OpenVLAConfig(llm_layers=2, action_dim=7))
    count = sum(p.numel() for p in full.model.parameters())
    assert count == 7_541_237_184
    perception = full.as_policy().perception
    assert perception.vision_groups() == [range(0, 9), range(9, 18), range(18, 26)]
    assert len(perception.stages()) == 3 + 32
    llama_layer = sum(p.numel() for p in full.model.layers[0].parameters())
    assert sum(p.numel() for p in cut.model.parameters()) == count - 30 * llama_layer
    assert cut.as_policy().generation.action_shape == (1, 7)


BY_PATH = ["policy.type=openvla", f"policy.checkpoint={CHECKPOINT}", "policy.model.unnorm_key=metaworld"]


def test_in_every_mode_the_pipeline_acts_as_openvla_on_each_observation():
    """Sequential and auras over the same observations: OpenVLA's 4 action tokens per observation in sequential
    mode; auras starts from that first action (the first context decoded in full)."""
    rng = np.random.default_rng(0)
    stream = [Observation(images={"front": rng.integers(0, 255, (84, 84, 3), dtype=np.uint8)},
                          state=np.zeros(4, np.float32), instruction="push the puck to the goal", step_id=i,
                          capture_time=0.0) for i in range(4)]
    runs = {}
    for mode in (["pipeline.mode=sequential"], ["pipeline.mode=auras", "pipeline.pp_perception=3",
                                                "pipeline.pp_generation=4"]):
        with AurasAgent(load_config(overrides=[*BY_PATH, *mode])) as agent:
            spec = agent.policy_spec
            assert (spec.family, spec.action_shape, spec.generation_iterations) == ("autoregressive", (1, 4), 4)
            assert spec.perception_stages == 1 + 2  # the tower blocks (about one Llama layer's work), the layers
            runs[mode[0]] = [agent.step(obs).values for obs in stream]
    sequential, auras = runs["pipeline.mode=sequential"], runs["pipeline.mode=auras"]
    model = OpenVLA.from_checkpoint(CHECKPOINT, OpenVLAConfig(unnorm_key="metaworld"), 84).as_policy()
    with torch.inference_mode():
        alone = [model.generation.generate(model.perception.perceive([obs]))[0] for obs in stream]
    for mine, theirs in zip(sequential, alone, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert not np.array_equal(alone[0], alone[1])  # the observations differ: a stale action would show
    np.testing.assert_array_equal(auras[0], alone[0])


def test_robots_batched_in_one_engine_each_act_as_alone():
    """Three robots with different images and instructions (prompts of different lengths, padded to one), alone and
    as sessions of one frame engine whose every frame batches them, in auras mode: the same actions."""
    from auras.pipeline.frames import FrameShape
    from tests.test_engine import TOLERANCE, _alone, _engine, _max_deviation, _observations, _together

    policy = OpenVLA.from_checkpoint(CHECKPOINT, OpenVLAConfig(unnorm_key="metaworld"), 84).as_policy()
    streams = [_observations(policy, robot, 4) for robot in range(3)]
    shape = FrameShape(2, 2)
    alone = _alone(policy, shape, True, streams)
    engine = _engine(policy, 3)
    together = _together(engine, [shape] * 3, True, streams)
    assert engine.counters.largest == 3  # the robots really shared frames
    engine.close()
    assert _max_deviation(alone, together) <= TOLERANCE
    assert not np.allclose(together[0][-1].values, together[1][-1].values)


@pytest.mark.mujoco
def test_the_checkpoint_runs_by_path_through_auras_bench_in_sequential_and_auras_modes(tmp_path):
    result = CliRunner().invoke(app, [
        "bench", "-c", "quick", "--policy", "openvla", "--modes", "sequential,auras", "--episodes", "1",
        "--pp-perception", "2", "--pp-generation", "2", "--out", str(tmp_path), "--no-progress", "--no-plots",
        *(f"--set={s}" for s in BY_PATH[1:]), "--set", "env.horizon=10", "--set", "bench.stream_steps=10",
        "--set", "bench.warmup_steps=2",
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["policy"], r["mode"]) for r in rows] == [("openvla", "sequential"), ("openvla", "auras")]
    for row in rows:
        assert row["metrics"]["throughput_hz"] > 0 and len(row["episodes"]) == 1


SERVED_IMAGE = np.random.default_rng(3).integers(0, 255, (84, 84, 3), dtype=np.uint8)


def _served_action(address: str, alive: Callable[[], None]) -> Any:
    """A robot's first action from the server at ``address`` (``alive`` raises if the server died)."""
    robot = RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction="push the puck", ttl_s=60.0,
                        connect=False)
    robot.hello_timeout_s = 60.0
    with robot.connect():
        seq = robot.publish({"front": SERVED_IMAGE}, np.zeros(4, np.float32))
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            alive()
            action = robot.latest_action()
            if action is not None and action.seq >= seq:
                return action
            time.sleep(0.01)
    raise AssertionError(f"no action for seq {seq} within 60 s")


def _own_action() -> np.ndarray:
    """What the policy computes in-process for the served observation: (1, 4)."""
    model = OpenVLA.from_checkpoint(CHECKPOINT, OpenVLAConfig(unnorm_key="metaworld"), 84).as_policy()
    obs = Observation(images={"front": SERVED_IMAGE}, state=np.zeros(4, np.float32), instruction="push the puck",
                      step_id=0, capture_time=0.0)
    with torch.inference_mode():
        return model.generation.generate(model.perception.perceive([obs]))[0]


def test_auras_serve_answers_a_robot_with_the_checkpoints_actions(tmp_path):
    """The ``auras serve`` command in auras mode, the checkpoint by path (its output in a file: a pipe nobody reads
    could fill and block the server)."""
    address = f"tcp://127.0.0.1:{free_service_port()}"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "auras.cli", "serve", "--bind", address, "--policy", "openvla", "--mode", "auras",
             *(f"--set={s}" for s in BY_PATH[1:]), "--set", "pipeline.pp_perception=2", "--set",
             "pipeline.pp_generation=2"],
            env=dict(os.environ, MUJOCO_GL="egl"), stdout=out, stderr=subprocess.STDOUT)

    def alive() -> None:
        assert server.poll() is None, log.read_text()[-2000:]

    try:
        action = _served_action(address, alive)
    finally:
        server.terminate()
        server.wait(timeout=30)
    np.testing.assert_allclose(np.asarray(action.chunk), _own_action(), atol=ATOL, rtol=0)


def test_the_bridge_server_in_sequential_mode_answers_with_the_checkpoints_actions():
    """The server ``auras serve`` runs, in this process, in sequential mode."""
    config = load_config(overrides=[*BY_PATH, "pipeline.mode=sequential"])
    address = f"tcp://127.0.0.1:{free_service_port()}"
    with BridgeServer(config, address).start():
        action = _served_action(address, lambda: None)
    np.testing.assert_allclose(np.asarray(action.chunk), _own_action(), atol=ATOL, rtol=0)
