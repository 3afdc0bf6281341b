"""LeRobot 0.4.4 reference data for a native π0 / π0.5: tiny random-weight checkpoints in LeRobot's own format,
fixed inputs and initial noise, and LeRobot's own intermediate and final outputs (tests/fixtures/pi0-tiny and
tests/fixtures/pi05-tiny).

This runs ONLY in the throwaway reference venv (LeRobot is never an auras dependency), with the transformers overlay
π0 needs (transformers 4.53.2 with openpi's ``transformers_replace`` copied over it). From the repository root:

    bash scripts/smolvla_reference_env.sh                            # .tmp/lerobot-ref-venv (a few minutes)
    bash scripts/pi0_reference_overlay.sh                            # .tmp/tf4532 (transformers 4.53.2 + openpi)
    PYTHONPATH=.tmp/tf4532 .tmp/lerobot-ref-venv/bin/python scripts/pi0_reference.py --out tests/fixtures

Nothing is downloaded. The models are π0's and π0.5's own classes (PaliGemma: a SigLIP vision tower, a linear
projector and a Gemma prefix; a Gemma action expert that attends over the prefix's keys and values) at tiny sizes:
LeRobot names its sizes by variant ("gemma_2b", "gemma_300m") and hard-codes PaliGemma's vocabulary and SigLIP's
widths, so this script maps the two variant names to tiny Gemma sizes and pins the vision tower and vocabulary to
tiny values while the models are built (and reloaded). The checkpoints' config.json therefore still says gemma_2b /
gemma_300m: their real sizes are those of the weights (``info.json`` lists them). The PaliGemma tokenizer
(``google/paligemma-3b-pt-224``) is gated: language tokens enter as ``observation.language.tokens`` (a stub
WordLevel tokenizer, written beside each checkpoint, tokenises the tasks; its ids are not PaliGemma's).

Re-running rewrites the fixtures bit for bit (one CPU thread, seeded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import torch

# the SmolVLA reference's set-up, shared: offline environment, the torchvision shim, seeds, the made-up stats
# (mean, std, min, max) and the parameter re-initialisation
from smolvla_reference import SEED_INPUTS, SEED_MODEL, reinit
from smolvla_reference import STATS as BASE_STATS

CAMERAS = {"observation.images.front": (3, 32, 32), "observation.images.wrist": (3, 24, 40)}
STATE_DIM, ACTION_DIM = 4, 4
TASKS = ["push the red puck to the green goal", "press the button from the top"]
RESOLUTION = 32  # PaliGemma's square input (LeRobot resizes with padding)
VOCAB = 320
# Tiny Gemma sizes for LeRobot's two variant names; π0 hard-codes 8 query heads (compute_layer_complete reshapes by
# 8 * head_dim), and both variants share head_dim and one key/value head, as the real ones do.
GEMMA = {
    "gemma_2b": dict(width=64, depth=3, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    "gemma_300m": dict(width=32, depth=3, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16),
}
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)

POLICY_CONFIG = dict(
    chunk_size=8,
    n_action_steps=8,
    num_inference_steps=10,
    max_state_dim=32,
    max_action_dim=32,
    image_resolution=(RESOLUTION, RESOLUTION),
    dtype="float32",
    device="cpu",
)
TOKENS = {"pi0": 16, "pi05": 64}  # tokenizer_max_length: π0.5's prompt also carries the 32 state bins

QUANTILES = {  # π0.5 normalises by the 1st and 99th percentiles
    "observation.state": {"q01": [-0.9, -0.8, -1.8, -0.4], "q99": [0.9, 0.4, 2.8, 1.4]},
    "action": {"q01": [-0.95, -0.9, -0.9, -0.95], "q99": [0.95, 0.9, 0.9, 0.95]},
}
STATS = {feature: {**BASE_STATS[feature], **QUANTILES[feature]} for feature in BASE_STATS}


def pin_tiny_sizes() -> None:
    """Make LeRobot's π0 / π0.5 build at the tiny sizes above (see the module doc): the two variant names map to
    tiny Gemma sizes, and the PaliGemma and expert configurations LeRobot fills in (SigLIP so400m's widths,
    PaliGemma's 257152-token vocabulary) are shrunk just before the models are built from them."""
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    def tiny_gemma(variant: str):
        if variant not in GEMMA:
            raise ValueError(f"Invalid variant: {variant}")
        return modeling_pi0.GemmaConfig(**GEMMA[variant])

    real_paligemma, real_gemma = modeling_pi0.PaliGemmaForConditionalGeneration, modeling_pi0.GemmaForCausalLM

    def paligemma(config):
        for key, value in VISION.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB
        config._vocab_size = VOCAB
        config.image_token_index = VOCAB - 1
        return real_paligemma(config=config)

    def gemma(config):
        config.vocab_size = VOCAB
        return real_gemma(config=config)

    for module in (modeling_pi0, modeling_pi05):
        module.get_gemma_config = tiny_gemma
        module.PaliGemmaForConditionalGeneration = paligemma
        module.GemmaForCausalLM = gemma


PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"


def use_local_tokenizer(path: Path) -> None:
    """LeRobot's π0 / π0.5 preprocessors load the gated PaliGemma tokenizer by name: give them the stub instead."""
    from lerobot.processor import tokenizer_processor
    from transformers import AutoTokenizer

    class LocalTokenizer:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            return AutoTokenizer.from_pretrained(str(path) if name == PALIGEMMA_TOKENIZER else name, *args, **kwargs)

    tokenizer_processor.AutoTokenizer = LocalTokenizer


def write_tokenizer(path: Path) -> dict[str, int]:
    """A stub WordLevel tokenizer for the tasks (ids are not PaliGemma's); returns its vocabulary."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [*" ".join(TASKS).split(), "pick", "place", "cube", "open", "close", "Task:", "State:", "Action:"]
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "\n": 4, ",": 5, ";": 6}
    vocab |= {w: len(vocab) + i for i, w in enumerate(dict.fromkeys(words))}
    vocab |= {str(b): len(vocab) + k for k, b in enumerate(range(-1, 257))}  # π0.5's 256 bins (-1, 256: outside)
    assert len(set(vocab.values())) == len(vocab), "one id per token"
    assert len(vocab) <= VOCAB - 1, len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # "\n", "," and ";" are tokens of their own (π0 ends the task with "\n"; π0.5's prompt is
    # "Task: <task>, State: <bins>;\nAction: "); other tokens are runs without whitespace, "," or ";"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("\\n|[,;]|[^\\s,;]+"), behavior="removed", invert=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
                            eos_token="<eos>").save_pretrained(path)
    return vocab


def raw_inputs(cfg) -> tuple[dict, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED_INPUTS)
    batch = {key: torch.rand((2, *shape), generator=gen) for key, shape in CAMERAS.items()}
    mean, std = torch.tensor(STATS["observation.state"]["mean"]), torch.tensor(STATS["observation.state"]["std"])
    batch["observation.state"] = mean + 0.5 * std * torch.randn((2, STATE_DIM), generator=gen)
    noise = torch.randn((2, cfg.chunk_size, cfg.max_action_dim), generator=gen)
    batch["task"] = list(TASKS)
    return batch, noise


# LeRobot's real-time chunking (RTC) in the same flow: the second chunk of an episode, guided by the rows of the
# first that are still to run when it lands (LeRobot's ``prev_chunk_left_over``), with its inference delay and
# execution horizon. π0 uses LeRobot's default LINEAR prefix schedule, π0.5 the EXP one.
RTC = {"pi0": dict(schedule="LINEAR", executed=2, inference_delay=2, execution_horizon=5, max_guidance_weight=10.0),
       "pi05": dict(schedule="EXP", executed=1, inference_delay=3, execution_horizon=6, max_guidance_weight=5.0)}


def rtc_reference(kind, policy, images, img_masks, lang_tokens, lang_masks, state, first_chunk) -> dict:
    """LeRobot's RTC-guided chunk for fresh noise, the chunk the same noise gives unguided, and RTC's inputs."""
    from lerobot.configs.types import RTCAttentionSchedule
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    case = RTC[kind]
    policy.config.rtc_config = RTCConfig(
        enabled=True, prefix_attention_schedule=RTCAttentionSchedule[case["schedule"]],
        max_guidance_weight=case["max_guidance_weight"], execution_horizon=case["execution_horizon"])
    policy.init_rtc_processor()
    gen = torch.Generator().manual_seed(SEED_INPUTS + 1)
    noise = torch.randn(first_chunk.shape[0], policy.config.chunk_size, policy.config.max_action_dim, generator=gen)
    left_over = first_chunk[:, case["executed"]:].clone()  # normalised rows of the first chunk not yet run
    args = (images, img_masks, lang_tokens, lang_masks) + ((state,) if kind == "pi0" else ())
    guided = policy.model.sample_actions(*args, noise=noise.clone(), inference_delay=case["inference_delay"],
                                         prev_chunk_left_over=left_over, execution_horizon=case["execution_horizon"])
    plain = policy.model.sample_actions(*args, noise=noise.clone())  # no left-over: RTC guides nothing
    weights = policy.model.rtc_processor.get_prefix_weights(
        case["inference_delay"], min(case["execution_horizon"], left_over.shape[1]), policy.config.chunk_size)
    policy.config.rtc_config = None
    policy.init_rtc_processor()
    return {"rtc.noise": noise, "rtc.prev_chunk_left_over": left_over, "rtc.prefix_weights": weights,
            "rtc.actions_normalized_padded": guided, "rtc.unguided_normalized_padded": plain}


def build(kind: str, out: Path) -> dict:
    """One fixture (kind "pi0" or "pi05") into ``out``; returns its info."""
    import lerobot
    import transformers
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from safetensors.torch import save_file

    if kind == "pi0":
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy as Policy
        from lerobot.policies.pi0.modeling_pi0 import make_att_2d_masks
    else:
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
        from lerobot.policies.pi05.modeling_pi05 import PI05Policy as Policy
        from lerobot.policies.pi05.modeling_pi05 import make_att_2d_masks

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    write_tokenizer(out / "tokenizer")
    use_local_tokenizer(out / "tokenizer")
    inp = {k: PolicyFeature(FeatureType.VISUAL, s) for k, s in CAMERAS.items()}
    inp["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    outf = {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}
    cfg = Config(input_features=inp, output_features=outf, tokenizer_max_length=TOKENS[kind], **POLICY_CONFIG)
    torch.manual_seed(SEED_MODEL)
    policy = Policy(cfg)
    reinit(policy, norm_center=0.0)  # Gemma's RMSNorm scales by 1 + weight
    policy.eval()
    policy.save_pretrained(out / "checkpoint")
    stats = {k: {s: torch.tensor(v) for s, v in d.items()} for k, d in STATS.items()}
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    for step in pre.steps:  # the saved preprocessor names the stub, relative to the fixture directory
        if hasattr(step, "tokenizer_name"):
            step.tokenizer_name = "tokenizer"
    pre.save_pretrained(out / "checkpoint")
    post.save_pretrained(out / "checkpoint")

    raw, noise = raw_inputs(cfg)
    model = policy.model
    t: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        batch = pre(dict(raw))
        actions_norm = policy.predict_action_chunk(dict(batch), noise=noise.clone())
        actions = post(actions_norm)

        images, img_masks = policy._preprocess_images(batch)
        lang_tokens = batch["observation.language.tokens"]
        lang_masks = batch["observation.language.attention_mask"]
        for key, img, mask in zip(cfg.image_features, images, img_masks, strict=True):
            cam = key.rsplit(".", 1)[1]
            t[f"input.image.{cam}"] = raw[key]
            t[f"model_in.image.{cam}"] = img
            t[f"model_in.image_mask.{cam}"] = mask
            t[f"vision.{cam}.embedded"] = model.paligemma_with_expert.embed_image(img)
        t["input.state"] = raw["observation.state"]
        t["model_in.state_normalized"] = batch["observation.state"]
        t["input.lang_tokens"], t["input.lang_mask"], t["input.noise"] = lang_tokens, lang_masks, noise
        state = None
        if kind == "pi0":
            state = policy.prepare_state(batch)
            t["model_in.state_padded"] = state

        embs, pad_masks, att_masks = model.embed_prefix(images, img_masks, lang_tokens, lang_masks)
        att_2d = make_att_2d_masks(pad_masks, att_masks)
        pos = torch.cumsum(pad_masks, dim=1) - 1
        model.paligemma_with_expert.paligemma.language_model.config._attn_implementation = "eager"
        (prefix_out, _), kv = model.paligemma_with_expert.forward(
            attention_mask=model._prepare_attention_masks_4d(att_2d),
            position_ids=pos, past_key_values=None, inputs_embeds=[embs, None], use_cache=True,
        )
        t["prefix.embs"], t["prefix.pad_mask"], t["prefix.att_mask"] = embs, pad_masks, att_masks
        t["prefix.position_ids"], t["prefix.out"] = pos, prefix_out
        for layer in range(len(kv)):
            key, value = kv[layer]
            t[f"kv.{layer}.key"], t[f"kv.{layer}.value"] = key, value

        dt = -1.0 / cfg.num_inference_steps
        x_t = noise.clone()
        for step in range(cfg.num_inference_steps):
            time = torch.tensor(1.0 + step * dt, dtype=torch.float32).expand(x_t.shape[0])
            if kind == "pi0":
                v_t = model.denoise_step(state, pad_masks, kv, x_t, time)
            else:
                v_t = model.denoise_step(pad_masks, kv, x_t, time)
            t[f"denoise.{step}.time"], t[f"denoise.{step}.v_t"] = time.clone(), v_t
            x_t = x_t + dt * v_t
        assert torch.allclose(x_t[:, :, :ACTION_DIM], actions_norm, atol=1e-6), "the loop is sample_actions"
        t["output.actions_normalized_padded"] = x_t
        t["output.actions_normalized"] = actions_norm
        t["output.actions"] = actions

        os.chdir(out)  # the preprocessor names the stub tokenizer relative to the fixture directory
        re_policy = Policy.from_pretrained(out / "checkpoint", strict=True)
        re_pre, re_post = make_pre_post_processors(re_policy.config, pretrained_path=str(out / "checkpoint"))
        again = re_post(re_policy.predict_action_chunk(re_pre(dict(raw)), noise=noise.clone()))
        assert torch.equal(again, actions), "the reloaded checkpoint reproduces output.actions"
        t.update(rtc_reference(kind, policy, images, img_masks, lang_tokens, lang_masks, state, actions_norm))

    t = {k: v.detach().contiguous().clone() for k, v in t.items()}
    save_file(t, str(out / "reference.safetensors"), metadata={"format": f"auras {kind} reference fixture v1"})
    sizes = {name: dict(dims) for name, dims in GEMMA.items()}
    info = {
        "what": f"LeRobot 0.4.4 {kind} reference: a tiny random-weight checkpoint in LeRobot's format, fixed inputs "
        "and noise, LeRobot's own intermediate and final outputs (scripts/pi0_reference.py).",
        "command": "PYTHONPATH=.tmp/tf4532 .tmp/lerobot-ref-venv/bin/python scripts/pi0_reference.py --out "
        "tests/fixtures",
        "versions": {"lerobot": lerobot.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
        "sizes": {"variants (config.json name -> the weights' Gemma sizes)": sizes, "vision": VISION,
                  "vocab_size": VOCAB, "image_resolution": RESOLUTION},
        "tasks": TASKS,
        "rtc": RTC[kind],
        "parameters": sum(p.numel() for p in policy.parameters()),
        "tensors": {k: list(v.shape) for k, v in sorted(t.items())},
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    parser.add_argument("--kinds", nargs="+", default=["pi0", "pi05"], choices=["pi0", "pi05"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    pin_tiny_sizes()
    out = args.out.resolve()  # build() changes the working directory
    for kind in args.kinds:
        info = build(kind, out / f"{kind}-tiny")
        print(kind, info["parameters"], "parameters")


if __name__ == "__main__":
    main()
