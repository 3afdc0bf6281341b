"""Export auras' trained tiny-flow policy as a LeRobot 0.4.4 SmolVLA checkpoint, and prove the export.

tiny-flow is :class:`auras.policies.smolvla.SmolVLA` (LeRobot's SmolVLA module tree and parameter names) at a small
SmolVLM size, with UTF-8 byte tokens (id = byte + 1, pad 0) and mean/std normalisation. The export writes, under
``--out``:

- ``checkpoint/``: LeRobot's checkpoint format: ``config.json`` (a ``SmolVLAConfig`` with tiny-flow's features,
  chunk, state/action dims, image resize, instruction length, flow steps, layer counts, expert width, MEAN_STD
  normalisation, ``load_vlm_weights`` false and ``vlm_model_name`` = the absolute path of ``smolvlm/``),
  ``model.safetensors`` (tiny-flow's weights, loaded into LeRobot's ``SmolVLAPolicy`` with ``strict=True`` and saved
  by its ``save_pretrained``) and the pre/post-processor files LeRobot's own ``make_pre_post_processors`` saves with
  tiny-flow's normalisation statistics;
- ``smolvlm/``: the SmolVLM config tiny-flow uses and an offline tokenizer/processor (``tokenizer.json`` and what
  ``AutoProcessor`` needs): a byte-level BPE with no merges whose ids are UTF-8 byte + 1 (pad ``<pad>`` = 0), so it
  gives tiny-flow's ids for any instruction, and a ``Strip`` normalizer that drops the newline LeRobot's SmolVLA
  preprocessor (and auras' smolvla tokenizer) append to the task, as tiny-flow's tokenizer strips the instruction;
  ``<fake_token_around_image>``, ``<global-img>`` and ``<image>`` (read by SmolVLA, unused with
  ``add_image_special_tokens`` false) are ids 257-259, beyond the 257-row embedding, which never sees them;
- ``export.json``: what was checked and the measured deviations.

The proof (the script fails loudly otherwise): one observation (an 84x84 push-v3 camera frame, its state, the push-v3
instruction) and one initial noise go through (a) auras' tiny-flow policy (perception, then the 10 flow steps,
unnormalised), (b) LeRobot's ``SmolVLAPolicy.from_pretrained(checkpoint)`` with the processors
``make_pre_post_processors(config, pretrained_path=checkpoint)`` reloads (preprocessor, ``predict_action_chunk(noise)``,
postprocessor) and (c) auras' ``smolvla`` policy loading the exported checkpoint (``SmolVLA.from_lerobot``, what
``auras serve --policy smolvla --set policy.checkpoint=DIR/checkpoint`` runs). Every chunk must be within
``--tolerance`` (1e-4) of (a); the instruction's token ids and mask must equal tiny-flow's on both sides.

Two venvs: auras' (this script's entry point: tiny-flow, the probe, the checks of (a) and (c)) and LeRobot's
(``.tmp/lerobot-ref-venv``, built by scripts/lerobot_async_env.sh; LeRobot is never an auras dependency), in which
the same file runs with ``--lerobot-side`` to write the checkpoint and run (b).

    MUJOCO_GL=egl .venv/bin/python scripts/tiny_flow_to_lerobot.py --out .tmp/tiny-flow-lerobot
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY_FLOW = REPO / "auras" / "policies" / "checkpoints" / "tiny-flow"
CAMERA = "observation.images.front"
TASK = "push-v3"
PROBE_SEED = 3  # the probe's episode seed and noise seed
SPECIAL = {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
           "image_token": "<image>"}


# ----------------------------------------------------------------------------------------------------- auras side
def dump_tiny_flow(work: Path) -> dict:
    """tiny-flow's weights, SmolVLM/SmolVLA configs, stats, a probe observation + noise and auras' chunk for it."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from auras.envs import make_env
    from auras.policies.tiny_flow.modeling import TinyFlow

    torch.set_num_threads(1)
    tiny = TinyFlow.from_pretrained(TINY_FLOW)
    vla = tiny.vla
    vlm = vla.model.vlm_with_expert.vlm.config if hasattr(vla.model, "vlm_with_expert") else None
    c = tiny.config
    # The SmolVLMConfig arguments TinyFlow builds (auras/policies/tiny_flow/modeling.py), rebuilt in LeRobot's venv.
    vlm_args = {
        "text_config": {
            "model_type": "llama", "hidden_size": c["text_hidden"], "intermediate_size": c["text_intermediate"],
            "num_hidden_layers": c["text_layers"], "num_attention_heads": c["text_heads"],
            "num_key_value_heads": c["text_kv_heads"], "head_dim": c["text_hidden"] // c["text_heads"],
            "vocab_size": 257, "rms_norm_eps": 1e-5, "max_position_embeddings": 512, "pad_token_id": 0,
        },
        "vision_config": {
            "hidden_size": c["vision_hidden"], "intermediate_size": c["vision_intermediate"],
            "num_hidden_layers": c["vision_layers"], "num_attention_heads": c["vision_heads"],
            "image_size": c["resize"], "patch_size": c["patch_size"],
        },
        "scale_factor": c["scale_factor"], "image_token_id": 0, "tie_word_embeddings": False,
    }
    if vlm is not None:  # the arguments above are the config tiny-flow runs with
        assert vlm.text_config.hidden_size == c["text_hidden"] and vlm.scale_factor == c["scale_factor"]
    env = make_env(TASK)
    env.reset(seed=PROBE_SEED)
    for _ in range(5):  # a few steps in, so the state is not the reset pose
        env.advance(np.array([0.3, 0.5, -0.2, 0.5], np.float32))
    obs = env.observe()
    image, state, instruction = obs["image"], np.asarray(obs["state"], np.float32), env.instruction
    env.close()
    noise = torch.randn((1, int(vla.config["chunk_size"]), int(vla.config["max_action_dim"])),
                        generator=torch.Generator().manual_seed(PROBE_SEED))
    chunk = run_auras(vla, image, state, instruction, noise)
    tokens, mask = vla.tokenizer(instruction)
    state_dict = {k: v.detach().contiguous() for k, v in vla.state_dict().items()}
    work.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(work / "weights.safetensors"))
    save_file({"image": torch.from_numpy(image.copy()), "state": torch.from_numpy(state), "noise": noise,
               "auras_chunk": torch.from_numpy(chunk), "tokens": torch.from_numpy(tokens[mask])},
              str(work / "probe.safetensors"))
    spec = {
        "vlm_args": vlm_args,
        "smolvla": {k: vla.config[k] for k in (
            "input_features", "output_features", "chunk_size", "n_action_steps", "max_state_dim", "max_action_dim",
            "resize_imgs_with_padding", "tokenizer_max_length", "num_steps", "num_vlm_layers", "num_expert_layers",
            "self_attn_every_n_layers", "expert_width_multiplier", "attention_mode", "prefix_length", "min_period",
            "max_period", "add_image_special_tokens", "normalization_mapping")},
        "stats": {"observation.state": {"mean": c["state_mean"], "std": c["state_std"]},
                  "action": {"mean": c["action_mean"], "std": c["action_std"]}},
        "instruction": instruction,
        "task": TASK,
        "tiny_flow": {"checkpoint": str(TINY_FLOW.relative_to(REPO)), "parameters": tiny.num_parameters(),
                      "training_eval": c.get("training", {}).get("eval")},
    }
    (work / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    return spec


def run_auras(vla, image, state, instruction: str, noise):
    """One chunk through an auras FlowVLA policy (perception, all flow steps, unnormalised): (chunk, action_dim)."""
    import torch

    from auras.types import Observation

    policy = vla.as_policy()
    observation = Observation(images={"front": image}, state=state, instruction=instruction, step_id=0,
                              capture_time=0.0)
    with torch.inference_mode():
        context = policy.perception.perceive([observation])
        steps = policy.generation.num_inference_steps
        sample = policy.generation.denoise(noise, torch.zeros(1, dtype=torch.int64), torch.full((1,), steps), context)
        return policy.generation.to_actions(sample)[0]


def check_auras_smolvla(out: Path, work: Path, tolerance: float) -> dict:
    """(c): auras' smolvla policy on the exported checkpoint gives tiny-flow's chunk and tokens."""
    import numpy as np
    from safetensors.torch import load_file

    from auras.policies.smolvla import SmolVLA

    probe = load_file(str(work / "probe.safetensors"))
    spec = json.loads((work / "spec.json").read_text())
    model = SmolVLA.from_lerobot(out / "checkpoint")
    tokens, mask = model.tokenizer(spec["instruction"])
    ids = probe["tokens"].numpy()
    if not (np.array_equal(tokens[mask], ids) and mask.sum() == len(ids)):
        raise SystemExit(f"auras smolvla tokens {tokens[mask].tolist()} != tiny-flow's {ids.tolist()}")
    chunk = run_auras(model, probe["image"].numpy(), probe["state"].numpy(), spec["instruction"], probe["noise"])
    deviation = float(np.abs(chunk - probe["auras_chunk"].numpy()).max())
    if not deviation <= tolerance:
        raise SystemExit(f"auras smolvla on the export deviates from tiny-flow by {deviation:.3g} > {tolerance}")
    return {"max_abs_deviation": deviation, "tokens_equal": True}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="writes checkpoint/, smolvlm/ and export.json here")
    ap.add_argument("--lerobot-venv", type=Path, default=REPO / ".tmp" / "lerobot-ref-venv")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |chunk difference| (action units)")
    ap.add_argument("--lerobot-side", action="store_true", help=argparse.SUPPRESS)  # internal: in LeRobot's venv
    args = ap.parse_args(argv)
    out = args.out.resolve()
    work = out / "export-work"
    if args.lerobot_side:
        return lerobot_side(out, work, args.tolerance)
    python = args.lerobot_venv.resolve() / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"no LeRobot venv at {args.lerobot_venv}: build it with `bash scripts/lerobot_async_env.sh`")
    shutil.rmtree(out, ignore_errors=True)
    spec = dump_tiny_flow(work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([str(python), str(Path(__file__).resolve()), "--out", str(out), "--lerobot-side",
                           "--tolerance", str(args.tolerance)], env=env)
    if done.returncode != 0:
        raise SystemExit(f"the LeRobot side failed (status {done.returncode}); see its output above")
    report = json.loads((out / "export.json").read_text())
    report["auras_smolvla_vs_tiny_flow"] = check_auras_smolvla(out, work, args.tolerance)
    report["tiny_flow"] = spec["tiny_flow"]
    (out / "export.json").write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(work)
    print(json.dumps({k: report[k] for k in ("checkpoint", "lerobot_vs_tiny_flow", "auras_smolvla_vs_tiny_flow")}))
    return 0


# --------------------------------------------------------------------------------------------------- LeRobot side
def write_vlm_dir(path: Path, vlm_args: dict) -> None:
    """SmolVLM config + byte-level tokenizer (ids = UTF-8 byte + 1, pad 0, input stripped) + processor, offline."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    SmolVLMConfig(**vlm_args).save_pretrained(path)
    byte_chars = pre_tokenizers.ByteLevel.alphabet()  # the 256 characters ByteLevel maps the bytes 0..255 to
    table = _bytes_to_unicode()
    vocab = {"<pad>": 0} | {table[b]: b + 1 for b in range(256)}
    assert set(table.values()) == set(byte_chars)
    vocab |= {token: 257 + i for i, token in enumerate(SPECIAL.values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.normalizer = normalizers.Strip()  # tiny-flow strips the instruction; this drops LeRobot's trailing "\n"
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", extra_special_tokens=SPECIAL,
                                     model_max_length=1024)
    vision = vlm_args["vision_config"]
    image_seq_len = (vision["image_size"] // vision["patch_size"]) ** 2 // vlm_args["scale_factor"] ** 2
    processor = SmolVLMProcessor(SmolVLMImageProcessor(), hf_tok, SmolVLMVideoProcessor(), image_seq_len=image_seq_len)
    processor.save_pretrained(path)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what ByteLevel pre-tokenization maps each byte to)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def lerobot_side(out: Path, work: Path, tolerance: float) -> int:
    sys.path.insert(0, str(HERE))
    import smolvla_reference  # noqa: F401  (offline env vars and the torchvision shim, before lerobot imports)
    import torch

    torch.set_num_threads(1)
    import lerobot
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    spec = json.loads((work / "spec.json").read_text())
    vlm_dir, ckpt = out / "smolvlm", out / "checkpoint"
    write_vlm_dir(vlm_dir, spec["vlm_args"])
    s = spec["smolvla"]
    features = {
        kind: {k: PolicyFeature(FeatureType[f["type"]], tuple(f["shape"])) for k, f in s[kind].items()}
        for kind in ("input_features", "output_features")
    }
    cfg = SmolVLAConfig(
        **features, chunk_size=s["chunk_size"], n_action_steps=s["n_action_steps"], max_state_dim=s["max_state_dim"],
        max_action_dim=s["max_action_dim"], resize_imgs_with_padding=tuple(s["resize_imgs_with_padding"]),
        tokenizer_max_length=s["tokenizer_max_length"], num_steps=s["num_steps"], num_vlm_layers=s["num_vlm_layers"],
        num_expert_layers=s["num_expert_layers"], self_attn_every_n_layers=s["self_attn_every_n_layers"],
        expert_width_multiplier=s["expert_width_multiplier"], attention_mode=s["attention_mode"],
        prefix_length=s["prefix_length"], min_period=s["min_period"], max_period=s["max_period"],
        add_image_special_tokens=s["add_image_special_tokens"],
        normalization_mapping={k: NormalizationMode(v) for k, v in s["normalization_mapping"].items()},
        vlm_model_name=str(vlm_dir), load_vlm_weights=False, device="cpu",
    )
    policy = SmolVLAPolicy(cfg).eval()
    weights = load_file(str(work / "weights.safetensors"))
    ours = policy.state_dict()
    missing = sorted(set(ours) - set(weights))
    unexpected = sorted(set(weights) - set(ours))
    shapes = sorted(k for k in set(ours) & set(weights) if ours[k].shape != weights[k].shape)
    if missing or unexpected or shapes:
        raise SystemExit(f"tiny-flow's state dict is not LeRobot's: missing {missing}, unexpected {unexpected}, "
                         f"shape mismatches {shapes}")
    policy.load_state_dict(weights, strict=True)
    policy.save_pretrained(ckpt)
    stats = {k: {n: torch.tensor(v) for n, v in d.items()} for k, d in spec["stats"].items()}
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)

    # (b) the saved checkpoint as LeRobot's policy server loads it, on the probe
    probe = load_file(str(work / "probe.safetensors"))
    re_policy = SmolVLAPolicy.from_pretrained(ckpt, strict=True).eval()
    re_pre, re_post = make_pre_post_processors(re_policy.config, pretrained_path=str(ckpt))
    image = probe["image"].permute(2, 0, 1).float() / 255.0  # (3, 84, 84) in [0, 1], as LeRobot's client sends
    raw = {CAMERA: image, "observation.state": probe["state"], "task": spec["instruction"]}
    with torch.no_grad():
        batch = re_pre(dict(raw))
        tokens = batch["observation.language.tokens"][0]
        mask = batch["observation.language.attention_mask"][0].bool()
        chunk = re_post(re_policy.predict_action_chunk(batch, noise=probe["noise"].clone()))[0]
    ids = probe["tokens"]
    if not torch.equal(tokens[mask], ids) or int(mask.sum()) != len(ids):
        raise SystemExit(f"LeRobot's tokens {tokens[mask].tolist()} != tiny-flow's {ids.tolist()}")
    text_ids = AutoTokenizer.from_pretrained(str(vlm_dir))("push the puck\n")["input_ids"]
    assert text_ids == [b + 1 for b in b"push the puck"], text_ids
    deviation = float((chunk - probe["auras_chunk"]).abs().max())
    print(f"LeRobot SmolVLAPolicy (exported checkpoint) vs auras tiny-flow: max |chunk difference| {deviation:.3g} "
          f"over a {tuple(chunk.shape)} chunk (tolerance {tolerance})", flush=True)
    if not deviation <= tolerance:
        raise SystemExit(f"the exported checkpoint deviates from tiny-flow by {deviation:.3g} > {tolerance}")
    report = {
        "what": "auras' trained tiny-flow exported as a LeRobot SmolVLA checkpoint (scripts/tiny_flow_to_lerobot.py)",
        "checkpoint": str(ckpt),
        "vlm_dir": str(vlm_dir),
        "lerobot": lerobot.__version__,
        "parameters": sum(p.numel() for p in re_policy.parameters()),
        "probe": {"task": spec["task"], "instruction": spec["instruction"], "env_seed": PROBE_SEED,
                  "noise_seed": PROBE_SEED, "chunk_shape": list(chunk.shape), "tokens": ids.tolist()},
        "lerobot_vs_tiny_flow": {"max_abs_deviation": deviation, "tokens_equal": True,
                                 "lerobot_chunk_row0": chunk[0].tolist(),
                                 "tiny_flow_chunk_row0": probe["auras_chunk"][0].tolist()},
        "tolerance": tolerance,
    }
    (out / "export.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
