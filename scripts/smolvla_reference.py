"""LeRobot 0.4.4 reference data for auras' native SmolVLA: a tiny random-weight SmolVLA checkpoint in LeRobot's own
format, fixed inputs, fixed initial noise, and LeRobot's own intermediate and final outputs
(tests/fixtures/smolvla-tiny).

This runs ONLY in the throwaway reference venv (LeRobot is never an auras dependency; its releases cap torch below the
pinned 2.13). From the repository root:

    bash scripts/smolvla_reference_env.sh                   # builds .tmp/lerobot-ref-venv (a few minutes, no weights)
    .tmp/lerobot-ref-venv/bin/python scripts/smolvla_reference.py --out tests/fixtures/smolvla-tiny

Re-running rewrites the fixture bit for bit (one CPU thread, seeded; checked with --check DIR, which rebuilds into a
temporary directory and compares every file). Nothing is downloaded: the SmolVLM backbone is described by a local
config directory (tiny dims, a stub WordLevel tokenizer) that the script writes into the fixture beside the checkpoint;
the checkpoint's config.json names it by the relative path ``./smolvlm2-tiny``, so LeRobot reloads the checkpoint with
the fixture directory as its working directory. See docs/smolvla-reference.md for what every tensor is.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch

# The registry's torchvision wheel is linked against CUDA torch; with torch 2.13.0+cpu its _C.so does not load and
# `import torchvision` dies in _meta_registrations ("operator torchvision::nms does not exist"). Declaring the two op
# schemas first lets the pure-Python parts import (LeRobot and transformers' image code import torchvision).
_TV_LIB = torch.library.Library("torchvision", "DEF")
_TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

VLM_DIR = "smolvlm2-tiny"  # inside the fixture directory
VLM_NAME = f"./{VLM_DIR}"  # what config.json's vlm_model_name holds (relative to the fixture directory)
SEED_MODEL = 0  # torch.manual_seed before building the policy
SEED_WEIGHTS = 1  # generator for the re-initialisation of every parameter (see reinit)
SEED_INPUTS = 2  # generator for images, state and noise
CAMERAS = {"observation.images.front": (3, 64, 64), "observation.images.wrist": (3, 48, 80)}
STATE_DIM, ACTION_DIM = 4, 4
TASKS = ["push the red puck to the green goal", "press the button from the top"]

# SmolVLM backbone (the real SmolVLM2-500M: text llama 960/32L/15H/5KV/head 64, vision SigLIP 768/12L/12H @512 patch 16,
# scale_factor 4). Tiny here, same structure: GQA (4 query heads over 2 kv heads), explicit head_dim, 6 text layers of
# which SmolVLA keeps the first num_vlm_layers=4, an 8x8 patch grid pixel-shuffled by 2 into 16 image tokens.
TEXT_CONFIG = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=128,
    rms_norm_eps=1e-5,
    rope_theta=100000,
    max_position_embeddings=8192,
    pad_token_id=0,
    tie_word_embeddings=False,
)
VISION_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=64,
    patch_size=8,
)
SCALE_FACTOR = 2
IMAGE_TOKEN_ID = 4

POLICY_CONFIG = dict(
    chunk_size=8,
    n_action_steps=8,
    num_steps=10,
    max_state_dim=32,
    max_action_dim=32,
    resize_imgs_with_padding=(64, 64),
    tokenizer_max_length=48,
    pad_language_to="longest",
    num_vlm_layers=4,
    num_expert_layers=-1,
    self_attn_every_n_layers=2,
    expert_width_multiplier=0.75,
    attention_mode="cross_attn",
    add_image_special_tokens=False,
    prefix_length=-1,
    use_cache=True,
    min_period=4e-3,
    max_period=4.0,
    load_vlm_weights=False,
    device="cpu",
)

# Made-up dataset statistics (SmolVLA normalises STATE and ACTION by MEAN_STD; VISUAL is IDENTITY).
STATS = {
    "observation.state": {
        "mean": [0.10, -0.20, 0.30, 0.50],
        "std": [0.50, 0.25, 1.50, 0.80],
        "min": [-1.0, -1.0, -2.0, -0.5],
        "max": [1.0, 0.5, 3.0, 1.5],
    },
    "action": {
        "mean": [0.05, -0.10, 0.20, 0.00],
        "std": [0.40, 0.30, 0.60, 1.20],
        "min": [-1.0, -1.0, -1.0, -1.0],
        "max": [1.0, 1.0, 1.0, 1.0],
    },
}


def write_vlm_dir(path: Path) -> None:
    """A local stand-in for HuggingFaceTB/SmolVLM2-500M-Video-Instruct with tiny dims and a stub WordLevel tokenizer
    carrying the special tokens SmolVLA reads (fake_image_token_id, global_image_token_id). Token ids are not the real
    SmolLM2 tokenizer's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    SmolVLMConfig(
        text_config=dict(TEXT_CONFIG),
        vision_config=dict(VISION_CONFIG),
        scale_factor=SCALE_FACTOR,
        image_token_id=IMAGE_TOKEN_ID,
        tie_word_embeddings=False,
        pad_token_id=0,
    ).save_pretrained(path)
    extra = ["pick", "place", "cube", "in", "box", "drawer", "open", "close", "window", "door", "reach"]
    words = " ".join(TASKS).split() + extra
    vocab = {"[PAD]": 0, "[UNK]": 1, "<fake_token_around_image>": 2, "<global-img>": 3, "<image>": IMAGE_TOKEN_ID}
    vocab |= {w: i + 5 for i, w in enumerate(dict.fromkeys(words))}
    assert len(vocab) <= TEXT_CONFIG["vocab_size"]
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "image_token": "<image>",
    }
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", extra_special_tokens=special
    )
    image_seq_len = (VISION_CONFIG["image_size"] // VISION_CONFIG["patch_size"]) ** 2 // SCALE_FACTOR**2
    proc = SmolVLMProcessor(SmolVLMImageProcessor(), hf_tok, SmolVLMVideoProcessor(), image_seq_len=image_seq_len)
    proc.save_pretrained(path)


def reinit(policy: torch.nn.Module, norm_center: float = 1.0) -> None:  # π0's Gemma norms scale by 1 + w: center 0
    """Overwrite every parameter with seeded unit-scale values. transformers' own init (normal 0.02, norms at 1,
    biases 0) makes attention nearly uniform and hides mistakes in RoPE, masks or scaling; these do not.
    Matrices (ndim >= 2, Linear/Conv2d/Embedding): N(0, 1/fan_in) with fan_in = numel of one output row;
    1-D ``*.bias``: N(0, 0.1^2); other 1-D (LayerNorm/RMSNorm weights): 1 + N(0, 0.1^2). Sorted by name."""
    gen = torch.Generator().manual_seed(SEED_WEIGHTS)
    with torch.no_grad():
        for name, p in sorted(policy.named_parameters()):
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(norm_center + 0.1 * torch.randn(p.shape, generator=gen))


def raw_inputs(cfg) -> dict:
    """Fixed raw (un-normalised) observations: images in [0, 1], state around the made-up stats, task strings."""
    gen = torch.Generator().manual_seed(SEED_INPUTS)
    batch = {key: torch.rand((2, *shape), generator=gen) for key, shape in CAMERAS.items()}
    mean, std = torch.tensor(STATS["observation.state"]["mean"]), torch.tensor(STATS["observation.state"]["std"])
    batch["observation.state"] = mean + std * torch.randn((2, STATE_DIM), generator=gen)
    noise = torch.randn((2, cfg.chunk_size, cfg.max_action_dim), generator=gen)
    batch["task"] = list(TASKS)
    return batch, noise


def build(out: Path) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("checkpoint", VLM_DIR):
        shutil.rmtree(out / stale, ignore_errors=True)
    write_vlm_dir(out / VLM_DIR)
    os.chdir(out)  # vlm_model_name is the relative path ./smolvlm2-tiny

    import lerobot
    import safetensors
    import transformers
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy, make_att_2d_masks
    from safetensors.torch import save_file

    inp = {k: PolicyFeature(FeatureType.VISUAL, s) for k, s in CAMERAS.items()}
    inp["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    outf = {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}
    cfg = SmolVLAConfig(input_features=inp, output_features=outf, vlm_model_name=VLM_NAME, **POLICY_CONFIG)
    torch.manual_seed(SEED_MODEL)
    policy = SmolVLAPolicy(cfg)
    reinit(policy)
    policy.eval()
    policy.save_pretrained(out / "checkpoint")
    stats = {k: {s: torch.tensor(v) for s, v in d.items()} for k, d in STATS.items()}
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    pre.save_pretrained(out / "checkpoint")
    post.save_pretrained(out / "checkpoint")

    raw, noise = raw_inputs(cfg)
    model = policy.model
    t = {}  # tensors of reference.safetensors
    with torch.no_grad():
        # (d) the full LeRobot path: preprocessor (tokenise, normalise) -> predict_action_chunk(noise) -> postprocessor
        batch = pre(dict(raw))
        actions_norm = policy.predict_action_chunk(dict(batch), noise=noise.clone())
        actions = post(actions_norm)
        policy.reset()
        first = policy.select_action(dict(batch), noise=noise.clone())
        assert torch.equal(first, actions_norm[:, 0]), "select_action's first action is the chunk's first"

        # (a) what enters the model
        images, img_masks = policy.prepare_images(batch)
        state = policy.prepare_state(batch)
        lang_tokens = batch["observation.language.tokens"]
        lang_masks = batch["observation.language.attention_mask"]
        for key, img, mask in zip(cfg.image_features, images, img_masks, strict=True):
            cam = key.rsplit(".", 1)[1]
            t[f"input.image.{cam}"] = raw[key]
            t[f"model_in.image.{cam}"] = img
            t[f"model_in.image_mask.{cam}"] = mask
            vis = model.vlm_with_expert.get_vlm_model().vision_model(pixel_values=img).last_hidden_state
            t[f"vision.{cam}.last_hidden_state"] = vis
            t[f"vision.{cam}.connector"] = model.vlm_with_expert.embed_image(img)
        t["input.state"] = raw["observation.state"]
        t["model_in.state_normalized"] = batch["observation.state"]
        t["model_in.state_padded"] = state
        t["input.lang_tokens"] = lang_tokens
        t["input.lang_mask"] = lang_masks
        t["input.noise"] = noise

        # (b) the prefix and its per-layer KV cache
        embs, pad_masks, att_masks = model.embed_prefix(images, img_masks, lang_tokens, lang_masks, state=state)
        att_2d = make_att_2d_masks(pad_masks, att_masks)
        pos = torch.cumsum(pad_masks, dim=1) - 1
        (prefix_out, _), kv = model.vlm_with_expert.forward(
            attention_mask=att_2d,
            position_ids=pos,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=True,
            fill_kv_cache=True,
        )
        t["prefix.embs"], t["prefix.pad_mask"], t["prefix.att_mask"] = embs, pad_masks, att_masks
        t["prefix.att_2d_mask"], t["prefix.position_ids"], t["prefix.out"] = att_2d, pos, prefix_out
        for layer, d in sorted(kv.items()):
            t[f"kv.{layer}.key"], t[f"kv.{layer}.value"] = d["key_states"], d["value_states"]

        # (c) the flow integration, step by step, then sample_actions itself with the same noise
        dt = -1.0 / cfg.num_steps
        x_t = noise.clone()
        for step in range(cfg.num_steps):
            time = torch.tensor(1.0 + step * dt, dtype=torch.float32).expand(x_t.shape[0])
            if step == 0:
                suffix_embs, _, suffix_att = model.embed_suffix(x_t, time)
                t["suffix.step0.embs"], t["suffix.step0.att_mask"] = suffix_embs, suffix_att
            v_t = model.denoise_step(pad_masks, kv, x_t, time)
            t[f"denoise.{step}.time"], t[f"denoise.{step}.v_t"] = time.clone(), v_t
            x_t = x_t + dt * v_t
        sampled = model.sample_actions(images, img_masks, lang_tokens, lang_masks, state, noise=noise.clone())
        assert torch.equal(sampled, x_t), "the step-by-step loop is sample_actions"
        assert torch.equal(sampled[:, :, :ACTION_DIM], actions_norm), "predict_action_chunk is sample_actions"
        t["output.actions_normalized_padded"] = sampled
        t["output.actions_normalized"] = actions_norm
        t["output.actions"] = actions

        # the saved checkpoint and processors, reloaded by LeRobot, give the same chunk
        re_policy = SmolVLAPolicy.from_pretrained(out / "checkpoint", strict=True)
        re_pre, re_post = make_pre_post_processors(re_policy.config, pretrained_path=str(out / "checkpoint"))
        again = re_post(re_policy.predict_action_chunk(re_pre(dict(raw)), noise=noise.clone()))
        assert torch.equal(again, actions), "the reloaded checkpoint reproduces output.actions"

    t = {k: v.detach().contiguous().clone() for k, v in t.items()}
    meta = {"format": "auras smolvla reference fixture v1"}
    save_file(t, str(out / "reference.safetensors"), metadata=meta)

    vlm = model.vlm_with_expert
    n_params = sum(p.numel() for p in policy.parameters())
    info = {
        "what": "LeRobot 0.4.4 SmolVLA reference: random-weight tiny checkpoint, fixed inputs and noise, LeRobot's "
        "own intermediate and final outputs. See docs/smolvla-reference.md.",
        "command": "bash scripts/smolvla_reference_env.sh && "
        ".tmp/lerobot-ref-venv/bin/python scripts/smolvla_reference.py --out tests/fixtures/smolvla-tiny",
        "versions": {
            "lerobot": lerobot.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "threads": 1,
        "deterministic_algorithms": True,
        "seeds": {
            "torch.manual_seed before SmolVLAPolicy(cfg)": SEED_MODEL,
            "parameter re-init generator": SEED_WEIGHTS,
            "input generator (images, state, noise)": SEED_INPUTS,
        },
        "init": reinit.__doc__.split("\n", 2)[2].strip().replace("\n   ", ""),
        "files": {
            "checkpoint/config.json + model.safetensors": "policy.save_pretrained (LeRobot's checkpoint format)",
            "checkpoint/policy_preprocessor.json + *_normalizer_processor.safetensors": "make_pre_post_processors("
            "cfg, dataset_stats=STATS)[0].save_pretrained",
            "checkpoint/policy_postprocessor.json + *_unnormalizer_processor.safetensors": "[1].save_pretrained",
            f"{VLM_DIR}/": "the SmolVLM config (config.json) and stub tokenizer that vlm_model_name points at "
            f"({VLM_NAME!r}, relative to this directory: LeRobot reloads with cwd = this directory)",
        },
        "smolvlm_config": {
            "text_config": TEXT_CONFIG,
            "vision_config": VISION_CONFIG,
            "scale_factor": SCALE_FACTOR,
            "image_token_id": IMAGE_TOKEN_ID,
            "vision_attn_implementation": vlm.get_vlm_model().vision_model.config._attn_implementation,
        },
        "policy_config": {k: list(v) if isinstance(v, tuple) else v for k, v in POLICY_CONFIG.items()},
        "derived": {
            "num_vlm_layers": vlm.num_vlm_layers,
            "num_expert_layers": vlm.num_expert_layers,
            "expert_hidden_size": vlm.expert_hidden_size,
            "expert_intermediate_size": vlm.lm_expert.config.intermediate_size,
            "cross_attn_layers": [i for i in range(vlm.num_vlm_layers) if i % cfg.self_attn_every_n_layers],
            "image_tokens_per_camera": t["vision.front.connector"].shape[1],
            "prefix_len": embs.shape[1],
            "parameters": n_params,
            "normalization_mapping": {k: v.value for k, v in cfg.normalization_mapping.items()},
        },
        "features": {
            "input": {k: list(s) for k, s in CAMERAS.items()} | {"observation.state": [STATE_DIM]},
            "output": {"action": [ACTION_DIM]},
        },
        "stats": STATS,
        "tasks": TASKS,
        "tensors": describe(t),
        "checks": [
            "sample_actions == the step-by-step denoise_step loop (bitwise)",
            "predict_action_chunk == sample_actions[:, :, :4] (bitwise)",
            "select_action's first action == predict_action_chunk[:, 0] (bitwise)",
            "SmolVLAPolicy.from_pretrained(checkpoint, strict=True) + the saved processors reproduce "
            "output.actions (bitwise)",
        ],
        "sha256": {},
    }
    for f in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "reference.json"):
        info["sha256"][str(f.relative_to(out))] = hashlib.sha256(f.read_bytes()).hexdigest()
    (out / "reference.json").write_text(json.dumps(info, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB, {n_params} parameters, prefix {embs.shape[1]} tokens)")


DESCRIPTIONS = {
    "input.image.": "raw camera image, float32 in [0,1], [B,3,H,W] as given to the preprocessor",
    "model_in.image.": "prepare_images output: resize_with_pad to 64x64 (pad value 0, left/top), then x*2-1; "
    "[B,3,64,64]",
    "model_in.image_mask.": "per-camera image mask [B] bool (all True: no *_padding_mask given)",
    "vision.": "SigLIP-style encoder last_hidden_state (post_layernorm) [B,64 patches,32]; .connector: after pixel "
    "shuffle (scale 2) and modality_projection, before the sqrt(64) scaling [B,16,64]",
    "input.state": "raw state [B,4] (un-normalised)",
    "model_in.state_normalized": "state after the preprocessor's MEAN_STD normaliser: (x-mean)/(std+1e-8) [B,4]",
    "model_in.state_padded": "prepare_state: zero-padded to max_state_dim [B,32]",
    "input.lang_tokens": "token ids [B,L] int64 from the stub tokenizer (right-padded with 0 to the longest)",
    "input.lang_mask": "language attention mask [B,L] bool",
    "input.noise": "initial x_t at t=1, [B,chunk_size,max_action_dim] float32",
    "prefix.embs": "embed_prefix embeddings [B,P,64]: per camera 16 image tokens * sqrt(64), then lang embeddings * "
    "sqrt(64), then one state token (state_proj)",
    "prefix.pad_mask": "embed_prefix pad mask [B,P] bool",
    "prefix.att_mask": "embed_prefix block mask [B,P] bool (0 for image+lang, 1 for the state token)",
    "prefix.att_2d_mask": "make_att_2d_masks(pad, att) [B,P,P] bool (query, key)",
    "prefix.position_ids": "cumsum(pad_mask)-1 [B,P] int64",
    "prefix.out": "VLM final-norm output of the prefix forward [B,P,64] (not used by the action path)",
    "kv.": "prefix KV cache of that VLM layer, [B,P,kv_heads=2,head_dim=16]; keys after RoPE, values as projected",
    "suffix.step0.embs": "embed_suffix(noise, t=1) [B,chunk,48] (action_in_proj + sinusoidal time, MLP)",
    "suffix.step0.att_mask": "embed_suffix block mask [B,chunk] (all 1: causal among action tokens)",
    "denoise.": "per flow step: .time [B] the t fed to denoise_step, .v_t [B,chunk,32] its velocity",
    "output.actions_normalized_padded": "sample_actions result [B,chunk,32] (normalised action space)",
    "output.actions_normalized": "predict_action_chunk result [B,chunk,4] (normalised, unpadded)",
    "output.actions": "postprocessor(unnormaliser) of output.actions_normalized: x*std+mean [B,chunk,4]",
}


def describe(t: dict) -> dict:
    out = {}
    for name, v in t.items():
        text = next((d for p, d in DESCRIPTIONS.items() if name.startswith(p)), "")
        out[name] = {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch."), "about": text}
    return out


def check(out: Path) -> int:
    """Rebuild into a temporary directory and compare every file with ``out`` byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / out.name
        build(fresh)
        cmp = filecmp.dircmp(out, fresh)
        bad: list[str] = []

        def walk(c, prefix=""):
            bad.extend(prefix + n for n in c.left_only + c.right_only + c.funny_files)
            _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
            bad.extend(prefix + n for n in mismatch + errors)
            for name, sub in c.subdirs.items():
                walk(sub, f"{prefix}{name}/")

        walk(cmp)
        print("identical" if not bad else f"DIFFERENT: {bad}")
        return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="fixture directory to (re)write, e.g. tests/fixtures/smolvla-tiny")
    ap.add_argument("--check", type=Path, help="rebuild in a temporary directory and compare with this fixture")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.check.resolve())
    if not args.out:
        ap.error("--out or --check is required")
    build(args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
