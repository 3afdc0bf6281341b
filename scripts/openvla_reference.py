"""OpenVLA reference data for auras' native OpenVLA: a tiny random-weight checkpoint in OpenVLA's Hugging Face layout,
fixed inputs, and what OpenVLA's own modelling code computes from them (tests/fixtures/openvla-tiny).

The reference is the Prismatic code the OpenVLA checkpoints ship (``prismatic/extern/hf/{configuration,modeling,
processing}_prismatic.py`` of github.com/openvla/openvla, MIT licence), read from a git directory of that repository,
run with the versions it pins (timm 0.9.16, transformers 4.40.1, tokenizers 0.19.1). This runs ONLY in the throwaway
reference venv (timm and the old transformers are never auras dependencies). From the repository root:

    bash scripts/smolvla_reference_env.sh                                    # .tmp/lerobot-ref-venv
    .tmp/lerobot-ref-venv/bin/pip install --no-deps timm==0.9.16
    .tmp/lerobot-ref-venv/bin/pip install --no-deps --target .tmp/tf4401 transformers==4.40.1 tokenizers==0.19.1
    PYTHONPATH=.tmp/tf4401 .tmp/lerobot-ref-venv/bin/python scripts/openvla_reference.py \\
        --openvla-git <git dir of openvla/openvla> --out tests/fixtures/openvla-tiny

``--check DIR`` rebuilds into a temporary directory and compares every file with DIR byte for byte. Nothing is
downloaded: the towers are ``timm.create_model(..., pretrained=False)`` and every weight is re-drawn from a seeded
generator.

What is tiny, and how:

- The vision towers keep OpenVLA's timm model families (``vit_large_patch14_reg4_dinov2.lvd142m``: class token,
  4 registers, LayerScale, position embeddings on the patches only; ``vit_so400m_patch14_siglip_224``: no class token,
  a latent attention-pool head) at 224 px with 14 px patches (256 patches), shrunk through create_model keyword
  arguments. The checkpoint's config.json carries those arguments as ``timm_model_kwargs`` (one dict per entry of
  ``timm_model_ids``; released OpenVLA checkpoints have none): this script's create_model wrapper applies them and
  auras reads them, so both build the towers the weights have.
- The Llama is 2 layers of width 32 (``text_config``), its vocabulary 384: a stub WordLevel tokenizer of 320 tokens
  whose last 256 ids are the action bins (as Llama-2's last 256 ids are in OpenVLA), ``<PAD>`` at 320, padded to a
  multiple of 64 as OpenVLA pads 32001 to 32064.
- OpenVLA's ``predict_action`` appends Llama-2's empty token "▁" (id 29871, a literal in modeling_prismatic.py) to a
  prompt that does not end with it. The stub's "▁" is id 3, so the literal is replaced by 3 when the module is loaded:
  the only change made to the reference code.
- ``norm_stats`` has two datasets: ``bridge_orig`` (7-D actions, gripper unmasked, as OpenVLA's BridgeData
  statistics) and ``metaworld`` (4-D: auras' Meta-World tasks), so the checkpoint decodes 7 or 4 action tokens by
  ``unnorm_key``.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import importlib
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the SmolVLA reference's set-up, shared: offline environment, the torchvision shim, seeds and the parameter
# re-initialisation
from smolvla_reference import SEED_INPUTS, SEED_MODEL, SEED_WEIGHTS, reinit

REFERENCE_FILES = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")
REFERENCE_DIR = "prismatic/extern/hf"
PACKAGE = "openvla_reference_hf"

DINO, SIGLIP = "vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"
TIMM_KWARGS = [  # per entry of the config's timm_model_ids (dinosiglip-vit-so-224px: DINOv2, then SigLIP)
    {"embed_dim": 16, "depth": 3, "num_heads": 2},
    {"embed_dim": 16, "depth": 3, "num_heads": 2},
]
TEXT_CONFIG = dict(
    model_type="llama",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=384,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    pad_token_id=320,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)
PAD_TO = 64
N_BINS = 256
EMPTY_TOKEN = "▁"
EMPTY_ID = 3
LLAMA_EMPTY_ID = 29871  # Llama-2's "▁": the literal predict_action appends

# made-up dataset statistics, in OpenVLA's norm_stats layout (q01 / q99 un-normalise; mask False: left as is)
NORM_STATS = {
    "bridge_orig": {
        "action": {
            "mean": [0.0002, 0.0001, -0.0001, 0.0, -0.0002, 0.0003, 0.57],
            "std": [0.0098, 0.0135, 0.0128, 0.0280, 0.0307, 0.0768, 0.4977],
            "max": [0.0413, 0.0406, 0.0409, 0.1071, 0.1235, 0.3246, 1.0],
            "min": [-0.0400, -0.0452, -0.0433, -0.1128, -0.1307, -0.3332, 0.0],
            "q01": [-0.0290, -0.0412, -0.0261, -0.0806, -0.0925, -0.2095, 0.0],
            "q99": [0.0288, 0.0406, 0.0404, 0.0818, 0.0768, 0.2039, 1.0],
            "mask": [True, True, True, True, True, True, False],
        },
        "proprio": {k: [0.0] * 7 for k in ("mean", "std", "max", "min", "q01", "q99")},
        "num_transitions": 1000,
        "num_trajectories": 10,
    },
    "metaworld": {
        "action": {
            "mean": [0.01, -0.02, 0.03, 0.1],
            "std": [0.5, 0.4, 0.6, 0.9],
            "max": [1.0, 1.0, 1.0, 1.0],
            "min": [-1.0, -1.0, -1.0, -1.0],
            "q01": [-0.9, -0.8, -0.95, -1.0],
            "q99": [0.95, 0.85, 0.9, 1.0],
            "mask": [True, True, True, False],
        },
        "proprio": {k: [0.0] * 4 for k in ("mean", "std", "max", "min", "q01", "q99")},
        "num_transitions": 1000,
        "num_trajectories": 10,
    },
}
IMAGE_HW = (72, 96)  # not square: resize-naive squashes it to 224 x 224
TASKS = ["push the red puck to the green goal", "press the button from the top"]
MEANS = [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]]  # timm's data configs of the two towers (ImageNet; SigLIP)
STDS = [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]
WORDS = [
    "In", "What", "action", "should", "the", "robot", "take", "to", "Out", ":", "?", "\n",
    "push", "pull", "pick", "place", "press", "open", "close", "reach", "slide", "turn", "put", "move",
    "puck", "goal", "button", "drawer", "door", "window", "cube", "block", "peg", "target", "handle", "lever",
    "red", "green", "blue", "top", "side", "from", "into", "onto", "on", "at", "and", "a", "of", "wall",
]


def prompt(task: str) -> str:
    """OpenVLA's prompt (vla-scripts/deploy.py, get_openvla_prompt for OpenVLA v1 checkpoints)."""
    return f"In: What action should the robot take to {task.lower()}?\nOut:"


def write_tokenizer(path: Path):
    """The stub tokenizer (WordLevel, Llama-2's special ids: <unk> 0, <s> 1, </s> 2; "▁" 3; the 256 action bins
    at ids 64..319; <PAD> 320), saved as a fast tokenizer; returns it."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, EMPTY_TOKEN: EMPTY_ID}
    vocab |= {w: len(vocab) + i for i, w in enumerate(WORDS)}
    first_bin = TEXT_CONFIG["vocab_size"] - PAD_TO - N_BINS
    vocab |= {f"<unused{i}>": i for i in range(len(vocab), first_bin)}
    vocab |= {f"<bin{N_BINS - 1 - k}>": first_bin + k for k in range(N_BINS)}  # OpenVLA: bin b is id vocab - 1 - b
    assert sorted(vocab.values()) == list(range(len(vocab))) and len(vocab) == first_bin + N_BINS
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("\\n|[A-Za-z0-9]+|[^\\sA-Za-z0-9]"), behavior="removed",
                                             invert=True)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<PAD>"])
    assert tok.token_to_id("<PAD>") == TEXT_CONFIG["pad_token_id"]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 pad_token="<PAD>", model_input_names=["input_ids", "attention_mask"])  # as Llama's
    hf.save_pretrained(path)
    return hf


def load_reference(git_dir: Path) -> tuple[Any, Any, Any, str]:
    """OpenVLA's three modules from ``git_dir`` (HEAD), as a package, with predict_action's empty-token literal set
    to the stub's id; returns (configuration, modeling, processing, commit)."""
    commit = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="openvla-ref-"))
    package = root / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in REFERENCE_FILES:
        text = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{REFERENCE_DIR}/{name}"], check=True,
                              capture_output=True, text=True).stdout
        if name == "modeling_prismatic.py":
            assert text.count(str(LLAMA_EMPTY_ID)) == 2, "predict_action's empty-token literal moved"
            text = text.replace(str(LLAMA_EMPTY_ID), str(EMPTY_ID))
        (package / name).write_text(text)
    sys.path.insert(0, str(root))
    modules = [importlib.import_module(f"{PACKAGE}.{name[:-3]}") for name in REFERENCE_FILES]
    return (*modules, commit)


def shrink_towers(kwargs_by_id: dict[str, dict[str, int]]) -> None:
    """timm.create_model with the config's timm_model_kwargs added for each tower (the reference passes only the
    model id, image size and activation)."""
    import timm

    real = timm.create_model

    def create_model(model_id: str, *args: Any, **kwargs: Any) -> Any:
        return real(model_id, *args, **{**kwargs, **kwargs_by_id[model_id]})

    timm.create_model = create_model


def reinit_all(model: torch.nn.Module) -> None:
    """smolvla_reference.reinit, then unit-scale position embeddings, class/register tokens and the pool's latent
    (reinit's N(0, 1/fan_in) would make them nearly zero, hiding a wrong order or a missing addition), and the
    Llama's query and key projections x3: peaked attention, so each greedy token depends on the image and the
    prompt (at reinit's scale the residual stream is the current token's embedding and every step repeats one
    token)."""
    reinit(model)
    gen = torch.Generator().manual_seed(SEED_WEIGHTS + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.rsplit(".", 1)[-1] in ("pos_embed", "cls_token", "reg_token", "latent"):
                p.copy_(torch.randn(p.shape, generator=gen))
            if name.startswith("language_model.") and name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(3.0)


def inputs() -> np.ndarray:
    gen = torch.Generator().manual_seed(SEED_INPUTS)
    return torch.randint(0, 256, (len(TASKS), *IMAGE_HW, 3), generator=gen, dtype=torch.uint8).numpy()


def build(out: Path, git_dir: Path) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint"
    for stale in checkpoint.glob("*"):
        stale.unlink()

    import safetensors
    import timm
    import tokenizers
    import transformers
    from PIL import Image
    from safetensors.torch import save_file

    configuration, modeling, processing, commit = load_reference(git_dir)
    tokenizer = write_tokenizer(checkpoint)
    config = configuration.OpenVLAConfig(
        vision_backbone_id="dinosiglip-vit-so-224px", llm_backbone_id="llama2-7b-pure",
        arch_specifier="no-align+fused-gelu-mlp", use_fused_vision_backbone=True, image_resize_strategy="resize-naive",
        text_config=dict(TEXT_CONFIG), llm_max_length=2048, pad_token_id=TEXT_CONFIG["pad_token_id"],
        pad_to_multiple_of=PAD_TO, norm_stats=NORM_STATS, n_action_bins=N_BINS, timm_model_kwargs=TIMM_KWARGS,
    )
    assert config.timm_model_ids == [DINO, SIGLIP]
    shrink_towers(dict(zip(config.timm_model_ids, config.timm_model_kwargs, strict=True)))
    torch.manual_seed(SEED_MODEL)
    vla = modeling.OpenVLAForActionPrediction(config)
    reinit_all(vla)
    vla.eval()
    vla.save_pretrained(checkpoint, safe_serialization=True)
    image_processor = processing.PrismaticImageProcessor(
        use_fused_vision_backbone=True, image_resize_strategy="resize-naive", input_sizes=[[3, 224, 224]] * 2,
        interpolations=["bicubic", "bicubic"], means=MEANS, stds=STDS,
    )
    image_processor.save_pretrained(checkpoint)
    processor = processing.PrismaticProcessor(image_processor, tokenizer)

    seen: dict[str, Any] = {}
    vla.vision_backbone.register_forward_hook(lambda m, i, o: seen.__setitem__("patches", o))
    vla.projector.register_forward_hook(lambda m, i, o: seen.__setitem__("projected", o))
    vla.language_model.register_forward_hook(lambda m, i, o: seen["logits"].append(o.logits[0, -1]))
    generate = vla.generate

    def recording_generate(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen["generated"] = generate(*args, **kwargs)
        seen["prompt_ids"] = args[0] if args else kwargs["input_ids"]
        return seen["generated"]

    vla.generate = recording_generate
    images = inputs()
    t: dict[str, torch.Tensor] = {"input.images": torch.from_numpy(images)}
    margins = []
    with torch.no_grad():
        for row, task in enumerate(TASKS):
            batch = processor(prompt(task), Image.fromarray(images[row]))
            pixel_values = batch["pixel_values"]
            for key, dim in (("bridge_orig", 7), ("metaworld", 4)):
                seen["logits"] = []
                actions = vla.predict_action(**batch, unnorm_key=key, do_sample=False)
                generated = seen["generated"][0]
                prompt_ids = seen["prompt_ids"][0]
                tokens = generated[len(prompt_ids):]
                assert len(tokens) == dim and len(seen["logits"]) == dim, "every action token was generated"
                logits = torch.stack(seen["logits"])  # (dim, V): the prefill's last position, then each decode step
                assert torch.equal(logits.argmax(-1), tokens), "greedy decoding"
                assert TEXT_CONFIG["eos_token_id"] not in tokens.tolist()
                assert len(set(tokens.tolist())) > 1, "the greedy tokens vary from step to step"
                top2 = logits.topk(2, dim=-1).values
                margins.append(float((top2[:, 0] - top2[:, 1]).min()))
                if key == "bridge_orig":
                    t[f"{row}.input_ids"] = prompt_ids  # with the appended "▁"
                    t[f"{row}.pixel_values.every_8th"] = pixel_values[0, :, ::8, ::8]
                    t[f"{row}.fused_patches.every_4th"] = seen["patches"][0, ::4]
                    t[f"{row}.projected.every_4th"] = seen["projected"][0, ::4]
                    t[f"{row}.logits"] = logits
                    t[f"{row}.tokens"] = tokens
                    t[f"{row}.actions"] = torch.from_numpy(np.asarray(actions))
                else:
                    assert torch.equal(tokens, t[f"{row}.tokens"][:dim]), "a shorter decode is a prefix"
                    t[f"{row}.actions.metaworld"] = torch.from_numpy(np.asarray(actions))
    assert not torch.equal(t["0.tokens"], t["1.tokens"]), "the two inputs decode differently"
    t = {k: v.detach().contiguous().clone() for k, v in t.items()}
    save_file(t, str(out / "reference.safetensors"), metadata={"format": "auras openvla reference fixture v1"})

    info = {
        "what": "OpenVLA reference: a tiny random-weight checkpoint in OpenVLA's Hugging Face layout, two inputs, and "
        "what OpenVLA's own modelling code computes (scripts/openvla_reference.py; docs/openvla-reference.md).",
        "command": "PYTHONPATH=.tmp/tf4401 .tmp/lerobot-ref-venv/bin/python scripts/openvla_reference.py "
        "--openvla-git <git dir of openvla/openvla> --out tests/fixtures/openvla-tiny",
        "reference": {"repository": "github.com/openvla/openvla", "commit": commit,
                      "files": [f"{REFERENCE_DIR}/{name}" for name in REFERENCE_FILES],
                      "changed": f"modeling_prismatic.py: predict_action's literal {LLAMA_EMPTY_ID} (Llama-2's "
                      f"'{EMPTY_TOKEN}') -> {EMPTY_ID} (the stub tokenizer's)"},
        "versions": {"timm": timm.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "torch": torch.__version__,
                     "safetensors": safetensors.__version__, "python": platform.python_version()},
        "threads": 1,
        "seeds": {"torch.manual_seed before OpenVLAForActionPrediction(config)": SEED_MODEL,
                  "parameter re-init generator (then +1 for embeddings and tokens)": SEED_WEIGHTS,
                  "input images": SEED_INPUTS},
        "sizes": {"timm_model_kwargs": dict(zip(config.timm_model_ids, TIMM_KWARGS, strict=True)),
                  "text_config": TEXT_CONFIG, "parameters": sum(p.numel() for p in vla.parameters())},
        "tasks": TASKS,
        "prompts": [prompt(task) for task in TASKS],
        "image": {"shape": [*IMAGE_HW, 3], "dtype": "uint8"},
        "smallest greedy margin (top-1 minus top-2 logit, over every decode step)": round(min(margins), 4),
        "tensors": {
            "input.images": "the two camera images (2, H, W, 3) uint8, given to the processor as PIL images",
            "{row}.input_ids": "the prompt's token ids as predict_action decodes from them: <s>, the prompt, '▁'",
            "{row}.pixel_values.every_8th": "the processor's pixel values (6, 224, 224) (DINOv2's normalisation "
            "on channels 0-2, SigLIP's on 3-5), every 8th row and column",
            "{row}.fused_patches.every_4th": "vision_backbone output (256, 32): DINOv2's and SigLIP's second-to-last "
            "block patch tokens, concatenated on channels; every 4th patch (row-major)",
            "{row}.projected.every_4th": "projector output (256, 32), every 4th patch",
            "{row}.logits": "(7, 384): row 0 the prefill's last position, row j the decode step that predicts "
            "token j (unnorm_key bridge_orig)",
            "{row}.tokens": "the 7 greedy action token ids",
            "{row}.actions": "predict_action(unnorm_key='bridge_orig'): the 7 un-normalised actions (float64)",
            "{row}.actions.metaworld": "predict_action(unnorm_key='metaworld'): 4 actions from the first 4 tokens",
        },
        "shapes": {k: list(v.shape) for k, v in sorted(t.items())},
    }
    (out / "info.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    digest = hashlib.sha256((out / "reference.safetensors").read_bytes()).hexdigest()[:12]
    print(f"wrote {out} ({total / 1e3:.0f} kB, {info['sizes']['parameters']} parameters, reference {digest}, "
          f"smallest margin {min(margins):.4f})")


def check(out: Path, git_dir: Path) -> int:
    """Rebuild into a temporary directory and compare every file with ``out`` byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / out.name
        build(fresh, git_dir)
        bad: list[str] = []

        def walk(c: filecmp.dircmp, prefix: str = "") -> None:
            bad.extend(prefix + n for n in c.left_only + c.right_only + c.funny_files)
            _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
            bad.extend(prefix + n for n in mismatch + errors)
            for name, sub in c.subdirs.items():
                walk(sub, f"{prefix}{name}/")

        walk(filecmp.dircmp(out, fresh))
        print("identical" if not bad else f"DIFFERENT: {bad}")
        return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--openvla-git", type=Path, required=True, help="a git directory of openvla/openvla")
    ap.add_argument("--out", type=Path, help="fixture directory to (re)write, e.g. tests/fixtures/openvla-tiny")
    ap.add_argument("--check", type=Path, help="rebuild in a temporary directory and compare with this fixture")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.check.resolve(), args.openvla_git.resolve())
    if not args.out:
        ap.error("--out or --check is required")
    build(args.out.resolve(), args.openvla_git.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
