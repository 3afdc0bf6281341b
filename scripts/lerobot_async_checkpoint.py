"""The one policy checkpoint that LeRobot's async server and `auras serve` both load in
scripts/lerobot_async_compare.py: a small SmolVLA with RANDOM weights (LeRobot's own initialisation, seeded) in
LeRobot 0.4.4's checkpoint format (config.json, model.safetensors, the saved pre/post-processors with made-up
normalisation statistics), shaped for the simulated robot: one 84x84 front camera, a 4-dim state (hand x, y, z in
metres, gripper opening) and 4-dim actions, as auras' Meta-World envs give.

Runs ONLY in the LeRobot venv (scripts/lerobot_async_env.sh); LeRobot is never an auras dependency. The SmolVLM
backbone is described by a local config directory with a stub WordLevel tokenizer (scripts/smolvla_reference.py's
``write_vlm_dir``, here at the size below), which the checkpoint names by absolute path, so nothing is downloaded
and either system loads the checkpoint from any working directory.

    .tmp/lerobot-ref-venv/bin/python scripts/lerobot_async_checkpoint.py --out .tmp/lerobot-async/checkpoint
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import smolvla_reference as ref  # (sets the offline env vars and the torchvision shim first)
import torch

# SmolVLM backbone at a size whose 10-step chunk takes a few tens of ms on one CPU core (same structure as
# SmolVLM2-500M: llama text model with GQA, SigLIP-style vision tower, pixel shuffle).
TEXT_CONFIG = {**ref.TEXT_CONFIG, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}
VISION_CONFIG = {**ref.VISION_CONFIG, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "image_size": 64, "patch_size": 8}
CAMERA, IMAGE = "observation.images.front", (3, 84, 84)
STATE_DIM = ACTION_DIM = 4
POLICY_CONFIG = {**ref.POLICY_CONFIG, "chunk_size": 50, "n_action_steps": 50, "num_vlm_layers": 4,
                 "resize_imgs_with_padding": (64, 64)}
SEED = 0
# Made-up statistics around push-v3's hand workspace (metres) and its action range.
STATS = {
    "observation.state": {"mean": [0.0, 0.6, 0.15, 0.5], "std": [0.1, 0.1, 0.05, 0.5],
                          "min": [-0.5, 0.4, 0.05, -1.0], "max": [0.5, 0.9, 0.3, 1.0]},
    "action": {"mean": [0.0, 0.0, 0.0, 0.0], "std": [0.5, 0.5, 0.5, 0.5],
               "min": [-1.0, -1.0, -1.0, -1.0], "max": [1.0, 1.0, 1.0, 1.0]},
}
INSTRUCTION = "push the puck to the green goal"  # auras.tasks' push-v3 instruction


def recipe() -> dict:
    """Everything that determines the checkpoint (its fingerprint decides whether a saved one is reused)."""
    return {"text": TEXT_CONFIG, "vision": VISION_CONFIG, "camera": [CAMERA, list(IMAGE)], "state": STATE_DIM,
            "action": ACTION_DIM, "policy": {k: list(v) if isinstance(v, tuple) else v for k, v in
                                             POLICY_CONFIG.items()}, "stats": STATS, "seed": SEED,
            "scale_factor": ref.SCALE_FACTOR, "tasks": ref.TASKS}


def fingerprint() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def build(out: Path) -> dict:
    """Write ``out``/checkpoint and ``out``/smolvlm (the backbone's config and stub tokenizer)."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    torch.set_num_threads(1)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ref.TEXT_CONFIG, ref.VISION_CONFIG = dict(TEXT_CONFIG), dict(VISION_CONFIG)  # write_vlm_dir reads these
    vlm = out / "smolvlm"
    ref.write_vlm_dir(vlm)
    inp = {CAMERA: PolicyFeature(FeatureType.VISUAL, IMAGE),
           "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))}
    outf = {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}
    cfg = SmolVLAConfig(input_features=inp, output_features=outf, vlm_model_name=str(vlm.resolve()), **POLICY_CONFIG)
    torch.manual_seed(SEED)
    policy = SmolVLAPolicy(cfg).eval()
    ckpt = out / "checkpoint"
    policy.save_pretrained(ckpt)
    stats = {k: {s: torch.tensor(v) for s, v in d.items()} for k, d in STATS.items()}
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)

    # One chunk through the saved checkpoint, as LeRobot's policy server loads and runs it (its timing is a hint
    # of the per-chunk cost; the comparison measures latency on the robot).
    re_policy = SmolVLAPolicy.from_pretrained(ckpt).eval()
    re_pre, re_post = make_pre_post_processors(re_policy.config, pretrained_path=str(ckpt))
    obs = {CAMERA: torch.rand(1, *IMAGE), "observation.state": torch.tensor([STATS["observation.state"]["mean"]]),
           "task": INSTRUCTION}
    times = []
    with torch.no_grad():
        for _ in range(6):
            start = time.perf_counter()
            chunk = re_post(re_policy.predict_action_chunk(re_pre(dict(obs))))
            times.append(time.perf_counter() - start)
    info = {
        "what": "random-weight SmolVLA (LeRobot's initialisation, torch.manual_seed(SEED)) in LeRobot 0.4.4's format",
        "fingerprint": fingerprint(),
        "recipe": recipe(),
        "parameters": sum(p.numel() for p in policy.parameters()),
        "chunk_shape": list(chunk.shape),
        "lerobot_chunk_ms_one_thread_median": round(1e3 * sorted(times[1:])[len(times[1:]) // 2], 1),
        "checkpoint": str(ckpt.resolve()),
    }
    (out / "recipe.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for checkpoint/ and smolvlm/")
    ap.add_argument("--force", action="store_true", help="rebuild even if a checkpoint of this recipe exists")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    saved = out / "recipe.json"
    if not args.force and saved.is_file() and json.loads(saved.read_text()).get("fingerprint") == fingerprint():
        info = json.loads(saved.read_text())
        info["reused"] = True
    else:
        info = build(out)
        info["reused"] = False
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
