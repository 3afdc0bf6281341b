"""OpenVLA as an auras policy: OpenVLA checkpoints (the Hugging Face layout of openvla/openvla-7b) by path, or random
weights at full size.

``policy.type=openvla`` with ``policy.checkpoint=DIR`` loads an OpenVLA checkpoint directory: ``config.json``
(``"model_type": "openvla"``: the Prismatic configuration with its ``text_config`` and ``norm_stats``), the weights
(``model.safetensors``, or shards listed in ``model.safetensors.index.json``), ``tokenizer.json`` (Llama-2's, with
the 256 action bins on its last ids) and ``preprocessor_config.json`` (the Prismatic image processor's sizes,
interpolation and normalisation per tower). ``policy.model.unnorm_key`` picks the dataset statistics (see
:class:`~auras.policies.openvla_config.OpenVLAConfig`). Without a checkpoint the same class is built at OpenVLA-7B's
size with RANDOM weights, ``policy.model.llm_layers`` Llama layers and stand-in statistics and tokens, for
throughput runs.

The split (architecture in :mod:`auras.policies.openvla_model`):

- perception: the camera image resized and normalised once per tower as the checkpoint's image processor does
  (``resize-naive``: Pillow's resize to the tower's size, then ToTensor and Normalize), the prompt
  ``In: What action should the robot take to {instruction}?\\nOut:`` tokenized with ``<s>`` first and ``▁`` last
  (as OpenVLA's ``predict_action`` appends it) and left-padded to ``prompt_tokens``; then both towers block by
  block, the projector, and the Llama's prefill layer by layer over ``[<s>, image tokens, prompt]``. Stages of
  about equal work: groups of tower blocks (the towers side by side; 3 groups at full size) and one stage per
  Llama layer, so ``pp_perception`` cuts the prefill too. The
  context is ``kv.{i}.key`` / ``kv.{i}.value`` (B, Hkv, N, Dh) per layer, ``prefix_valid`` (B, N) and
  ``first_token`` (B,): the greedy token at the prefill's last position.
- generation (family ``autoregressive``): the remaining action tokens, greedy over the whole vocabulary as
  OpenVLA's ``generate`` is: classic (one token at a time over the cache) or merged (a teacher-forced block in one
  causal pass). One action per request (a chunk of 1): token i is action dimension i; de-tokenized to its bin centre
  (``vocab - 1 - id``, 255 centres on [-1, 1]) and un-normalised with the statistics' q01 / q99 where ``mask`` is
  true.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from auras.devices import torch_dtype
from auras.errors import ConfigError, InvalidInputError
from auras.generation.base import AutoregressiveGeneration
from auras.partition import split_evenly
from auras.perception.base import Context, Perception
from auras.policies.base import Policy
from auras.policies.modules import ModulesPart, built_in, cached_encoder, load_weights, refuse_scaling
from auras.policies.openvla_config import OpenVLAConfig
from auras.policies.openvla_model import OPENVLA_7B_TEXT, TOWERS, OpenVLAModel, TowerSpec
from auras.types import Observation, ObservationSpec

if TYPE_CHECKING:
    from auras.config import AurasConfig

__all__ = [
    "OPENVLA_7B",
    "OPENVLA_7B_PREPROCESSOR",
    "OpenVLA",
    "PromptTokenizer",
    "build_openvla",
    "load_openvla_checkpoint",
    "openvla_prompt",
]

OPENVLA_7B: dict[str, Any] = {
    "model_type": "openvla", "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
    "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_override_act_layers": [None, None], "image_sizes": [224, 224], "image_resize_strategy": "resize-naive",
    "text_config": OPENVLA_7B_TEXT, "pad_token_id": 32000, "pad_to_multiple_of": 64, "n_action_bins": 256,
}
"""openvla/openvla-7b's config.json (without its norm_stats)."""

OPENVLA_7B_PREPROCESSOR: dict[str, Any] = {
    "image_resize_strategy": "resize-naive", "input_sizes": [[3, 224, 224], [3, 224, 224]],
    "interpolations": ["bicubic", "bicubic"],
    "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
}
"""OpenVLA-7B's image processor: per tower (DINOv2, SigLIP) a bicubic resize to 224 x 224 and timm's normalisation."""

EMPTY_TOKEN = "▁"  # Llama-2's empty token (id 29871), which OpenVLA's predict_action ends every prompt with
_INTERPOLATIONS = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}  # PIL's ids


def openvla_prompt(instruction: str) -> str:
    """OpenVLA's prompt for an instruction (its deploy script's, for OpenVLA v1 checkpoints)."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


# -- the checkpoint ----------------------------------------------------------------------------------------------
def load_openvla_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """An OpenVLA checkpoint directory -> (config.json, state dict, preprocessor_config.json)."""
    root = Path(path)
    config = _read_json(root, "config.json")
    if config.get("model_type") != "openvla":
        raise InvalidInputError(
            f'OpenVLA checkpoint {str(root / "config.json")!r}: expected "model_type": "openvla", '
            f"got {config.get('model_type')!r}"
        )
    return config, _load_weights(root), _read_json(root, "preprocessor_config.json")


def _read_json(root: Path, name: str) -> dict[str, Any]:
    file = root / name
    if not file.is_file():
        raise InvalidInputError(f"OpenVLA checkpoint {str(root)!r}: expected {name}, not found")
    return json.loads(file.read_text())


def _load_weights(root: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors``, or every shard ``model.safetensors.index.json`` lists (as the 7B checkpoint ships)."""
    from safetensors.torch import load_file

    if (root / "model.safetensors").is_file():
        return load_file(root / "model.safetensors")
    index = root / "model.safetensors.index.json"
    if not index.is_file():
        raise InvalidInputError(
            f"OpenVLA checkpoint {str(root)!r}: expected model.safetensors or model.safetensors.index.json, not found"
        )
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_file(root / shard))
    return state


def _towers(config: dict[str, Any]) -> list[TowerSpec]:
    ids, acts = config.get("timm_model_ids", []), config.get("timm_override_act_layers", [None, None])
    if not config.get("use_fused_vision_backbone") or len(ids) != 2 or any(i not in TOWERS for i in ids):
        raise InvalidInputError(
            f"OpenVLA config.json: expected the fused DINOv2 + SigLIP backbone (timm_model_ids {list(TOWERS)}, "
            f"use_fused_vision_backbone true), got {ids} (fused: {config.get('use_fused_vision_backbone')})"
        )
    if any(a is not None for a in acts):
        raise InvalidInputError(f"OpenVLA config.json: timm_override_act_layers {acts} are not supported (expected "
                                "[null, null]: GELU)")
    sizes = config.get("timm_model_kwargs") or [{}, {}]  # absent in released checkpoints: the real sizes
    try:
        return [TOWERS[i].resized(**kw) for i, kw in zip(ids, sizes, strict=True)]
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"OpenVLA config.json: {exc}") from None


# -- inputs ------------------------------------------------------------------------------------------------------
class PromptTokenizer:
    """Instruction -> ``<s>``'s id and the other prompt ids (L,) with their validity, left-padded to ``length``:
    OpenVLA's prompt, tokenized, ending with ``▁``."""

    def __init__(self, encode: Callable[[str], list[int]], empty_id: int, pad_id: int, length: int,
                 bos_id: int = 1) -> None:
        self.encode, self.empty_id, self.pad_id, self.length, self.bos_id = encode, empty_id, pad_id, length, bos_id
        self._prompt = cached_encoder(self._encode_prompt)

    @classmethod
    def from_file(cls, file: Path, pad_id: int, length: int) -> PromptTokenizer:
        """A checkpoint's ``tokenizer.json`` (its post-processor puts ``<s>`` first, as Llama-2's does)."""
        from tokenizers import Tokenizer

        if not file.is_file():
            raise InvalidInputError(f"OpenVLA checkpoint {str(file.parent)!r}: expected tokenizer.json, not found")
        tokenizer = Tokenizer.from_file(str(file))
        empty, bos = tokenizer.token_to_id(EMPTY_TOKEN), tokenizer.token_to_id("<s>")
        if empty is None or bos is None:
            raise InvalidInputError(f"OpenVLA tokenizer {str(file)!r}: expected the tokens {EMPTY_TOKEN!r} and '<s>', "
                                    f"got ids {empty} and {bos}")
        return cls(lambda text: tokenizer.encode(text).ids, empty, pad_id, length, bos)

    @classmethod
    def stand_in(cls, vocab: int, pad_id: int, length: int) -> PromptTokenizer:
        """For random weights: ``<s>`` (1), then one id per word or punctuation mark (a hash into the ids below the
        action bins), about as many tokens as Llama-2's tokenizer gives a short instruction."""
        pieces = re.compile(r"\n|[A-Za-z0-9]+|[^\sA-Za-z0-9]")

        def encode(text: str) -> list[int]:
            return [1] + [3 + zlib.crc32(p.encode()) % (vocab - 259) for p in pieces.findall(text)]

        return cls(encode, 29871, pad_id, length)

    def __call__(self, instruction: str) -> tuple[int, np.ndarray, np.ndarray]:
        return self._prompt(instruction)

    def _encode_prompt(self, instruction: str) -> tuple[int, np.ndarray, np.ndarray]:
        ids = list(self.encode(openvla_prompt(instruction)))
        if not ids or ids[0] != self.bos_id:
            raise InvalidInputError(
                f"OpenVLA tokenizer: expected the prompt to start with <s> (id {self.bos_id}), got ids {ids[:3]}: its "
                "tokenizer.json needs Llama-2's post-processor (<s> first)"
            )
        if ids[-1] != self.empty_id:
            ids.append(self.empty_id)
        text = ids[1:]
        if len(text) > self.length:
            raise InvalidInputError(
                f"instruction: its OpenVLA prompt is {len(text)} tokens after <s>, expected at most "
                f"{self.length} (policy.model.prompt_tokens): {instruction[:60]!r}"
            )
        tokens, valid = np.full(self.length, self.pad_id, np.int64), np.zeros(self.length, bool)
        tokens[self.length - len(text) :], valid[self.length - len(text) :] = text, True
        return int(ids[0]), tokens, valid


class ImageProcessor:
    """The Prismatic image processor's transform per tower: resize (``resize-naive``: to the tower's size, aspect
    ignored), ToTensor, Normalize; the towers' pixel values stacked on channels (B, 6, S, S)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        strategy = settings.get("image_resize_strategy")
        if strategy != "resize-naive":
            raise InvalidInputError(
                f"OpenVLA preprocessor_config.json: image_resize_strategy {strategy!r} is not supported (expected "
                "'resize-naive', OpenVLA's)"
            )
        self.sizes = [tuple(int(s) for s in size[1:]) for size in settings["input_sizes"]]  # (H, W) per tower
        self.interpolations = [_INTERPOLATIONS[name] for name in settings["interpolations"]]
        self.means = [torch.tensor(m, dtype=torch.float32)[:, None, None] for m in settings["means"]]
        self.stds = [torch.tensor(s, dtype=torch.float32)[:, None, None] for s in settings["stds"]]

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(H, W, 3) uint8 images -> (B, 3 * towers, S, S) float32."""
        from PIL import Image  # Pillow comes with matplotlib, an auras dependency

        rows = []
        for image in images:
            picture = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
            resized: dict[tuple[Any, ...], torch.Tensor] = {}
            towers = []
            for size, interpolation, mean, std in zip(self.sizes, self.interpolations, self.means, self.stds,
                                                      strict=True):
                key = (size, interpolation)
                if key not in resized:
                    pixels = np.asarray(picture.resize((size[1], size[0]), interpolation))  # (S, S, 3) uint8
                    resized[key] = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255)
                towers.append((resized[key] - mean) / std)
            rows.append(torch.cat(towers, dim=0))
        return torch.stack(rows)


# -- the policy --------------------------------------------------------------------------------------------------
class OpenVLA(nn.Module):
    """OpenVLA's weights (``model``: the checkpoint's module tree) with its image processor, tokenizer and action
    statistics."""

    policy_type: ClassVar[str] = "openvla"

    def __init__(self, config: dict[str, Any], preprocessor: dict[str, Any], tokenizer: PromptTokenizer,
                 settings: OpenVLAConfig, image_size: int) -> None:
        """``config``: an OpenVLA config.json; ``preprocessor``: its preprocessor_config.json; ``image_size``: the
        camera's height and width (any size: the processor resizes)."""
        super().__init__()
        self.config, self.settings, self.tokenizer = config, settings, tokenizer
        self.model = OpenVLAModel(_towers(config), list(config["image_sizes"]), dict(config["text_config"]))
        self.processor = ImageProcessor(preprocessor)
        self.unnorm_key, stats = self._action_stats(config.get("norm_stats") or {}, settings.unnorm_key)
        self.q01, self.q99 = np.asarray(stats["q01"], np.float64), np.asarray(stats["q99"], np.float64)
        self.mask = np.asarray(stats.get("mask", [True] * len(self.q01)), bool)
        self.action_dim = len(self.q01)
        bins = np.linspace(-1, 1, int(config.get("n_action_bins", 256)))
        self.bin_centers = (bins[:-1] + bins[1:]) / 2.0
        self.vocab = int(config["text_config"]["vocab_size"]) - int(config.get("pad_to_multiple_of", 0))
        self.image_size = image_size

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> OpenVLA:
        """Casts (``to(dtype=...)``) leave the Llama's rotary frequencies in float32, as transformers builds and uses
        them (bfloat16 frequencies put a prefix position of 300 off by up to 0.4 rad at head dim 128)."""
        super()._apply(fn, recurse)
        for module in self.modules():
            kept = getattr(module, "original_inv_freq", None)
            if isinstance(kept, torch.Tensor) and isinstance(getattr(module, "inv_freq", None), torch.Tensor):
                module.inv_freq = kept.to(device=module.inv_freq.device, dtype=torch.float32)
        return self

    @staticmethod
    def _action_stats(norm_stats: dict[str, Any], key: str | None) -> tuple[str, dict[str, Any]]:
        if key is None:
            if len(norm_stats) != 1:
                raise ConfigError(
                    f"openvla: the checkpoint has action statistics for {len(norm_stats)} datasets "
                    f"{sorted(norm_stats)}; choose one with --set policy.model.unnorm_key=NAME"
                )
            key = next(iter(norm_stats))
        if key not in norm_stats:
            raise ConfigError(f"openvla: policy.model.unnorm_key {key!r} is not in the checkpoint's norm_stats; "
                              f"expected one of {sorted(norm_stats)}")
        return key, norm_stats[key]["action"]

    @classmethod
    def from_checkpoint(cls, path: str | Path, settings: OpenVLAConfig | None = None, image_size: int = 224,
                        dtype: torch.dtype = torch.float32) -> OpenVLA:
        """The checkpoint at ``path``, its modules built in ``dtype`` (the weights are cast on loading)."""
        settings = settings or OpenVLAConfig()
        if settings.llm_layers is not None or settings.action_dim is not None:
            raise ConfigError("openvla: llm_layers and action_dim shape the random full-size model; a checkpoint "
                              f"({str(path)!r}) has its own (unset them)")
        config, state, preprocessor = load_openvla_checkpoint(path)
        tokenizer = PromptTokenizer.from_file(Path(path) / "tokenizer.json", int(config["pad_token_id"]),
                                              settings.prompt_tokens)
        with built_in(dtype):
            model = cls(config, preprocessor, tokenizer, settings, image_size)
        load_weights(model.model, state, str(Path(path) / "model.safetensors"), "OpenVLA")  # strict, named
        return model.eval()

    @classmethod
    def random_full_size(cls, settings: OpenVLAConfig | None = None, image_size: int = 224,
                         dtype: torch.dtype = torch.float32) -> OpenVLA:
        """OpenVLA-7B's architecture with RANDOM weights (``settings.llm_layers`` Llama layers), built in
        ``dtype``, with stand-in tokens and statistics: one dataset, ``random``, identity on [-1, 1]. For throughput
        runs only."""
        settings = settings or OpenVLAConfig()
        dim = settings.action_dim or 4
        text = {**OPENVLA_7B_TEXT, "num_hidden_layers": settings.llm_layers or 32}
        stats = {"random": {"action": {"q01": [-1.0] * dim, "q99": [1.0] * dim, "mask": [True] * dim}}}
        config = {**OPENVLA_7B, "text_config": text, "norm_stats": stats}
        tokenizer = PromptTokenizer.stand_in(int(text["vocab_size"]) - 64, int(config["pad_token_id"]),
                                             settings.prompt_tokens)
        with built_in(dtype):
            model = cls(config, OPENVLA_7B_PREPROCESSOR, tokenizer, settings, image_size)
        return model.eval()

    # -- actions ----------------------------------------------------------------------------------------------
    def detokenize(self, token_ids: Any) -> np.ndarray:
        """(B, A) token ids -> (B, 1, A) float32 actions: bin centres, un-normalised (OpenVLA's predict_action)."""
        ids = np.asarray(torch.as_tensor(token_ids).cpu(), np.int64)
        bins = np.clip(self.vocab - ids - 1, 0, len(self.bin_centers) - 1)
        normalized = self.bin_centers[bins]  # (B, A) in [-1, 1]
        actions = np.where(self.mask, 0.5 * (normalized + 1) * (self.q99 - self.q01) + self.q01, normalized)
        return actions[:, None, :].astype(np.float32)

    def as_policy(self, execute_steps: int | None = None, name: str | None = None) -> Policy:
        """Perception and generation halves over these weights; ``name``: the registry name (openvla)."""
        self.eval()
        if execute_steps not in (None, 1):
            raise InvalidInputError(f"execute_steps: OpenVLA predicts one action per request, expected 1, got "
                                    f"{execute_steps}")
        return Policy(name or self.policy_type, OpenVLAPerception(self), OpenVLAGeneration(self), execute_steps=1)


class OpenVLAPerception(ModulesPart, Perception):
    """Observations -> the prefill's cache: groups of tower blocks (both towers side by side), then one stage per
    Llama layer."""

    def __init__(self, model: OpenVLA) -> None:
        self.model = model
        size = model.image_size
        self._spec = ObservationSpec({model.settings.camera: (size, size)}, state_dim=model.settings.state_dim)

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def stages(self) -> list[Callable[[Any], Any]]:
        """Groups of tower blocks (each about one Llama layer's work), then one stage per Llama layer."""
        groups = self.vision_groups()
        vision = [functools.partial(self._vision, blocks, i == len(groups) - 1) for i, blocks in enumerate(groups)]
        text = [functools.partial(self._text, i) for i in range(len(self.model.model.layers))]
        return [functools.partial(self._first, vision[0]), *vision[1:], *text]

    def vision_groups(self) -> list[range]:
        """The tower blocks of each perception stage: as many stages as the towers cost Llama layers (counted in
        multiply-adds: a block's parameters times its tokens; at full size 3), at least one, contiguous."""
        vla = self.model.model
        towers = vla.vision_backbone.towers
        blocks = max(t.used_blocks for t in towers)
        tower_work = sum(t.used_blocks * sum(p.numel() for p in t.blocks[0].parameters())
                         * (t.num_patches + t.spec.num_prefix_tokens) for t in towers)
        prefix = 1 + towers[0].num_patches + self.model.tokenizer.length  # <s>, image tokens, prompt
        layer_work = sum(p.numel() for p in vla.layers[0].parameters()) * prefix if len(vla.layers) else 1
        return split_evenly(blocks, min(blocks, max(1, round(tower_work / layer_work))))

    @torch.inference_mode()
    def inputs(self, observations: Sequence[Observation]) -> dict[str, torch.Tensor]:
        """Observations -> ``pixel_values`` (B, 6, S, S), ``bos`` (B,), ``text`` and ``text_valid`` (B, L)."""
        if not observations:
            raise InvalidInputError("perceive: expected at least one observation, got none")
        device = self.model.model._param().device
        pixels = self.model.processor([o.images[self.model.settings.camera] for o in observations])
        bos, text, valid = zip(*(self.model.tokenizer(o.instruction) for o in observations), strict=True)
        return {
            "pixel_values": pixels.to(device),
            "bos": torch.tensor(bos, dtype=torch.int64, device=device),
            "text": torch.from_numpy(np.stack(text)).to(device),
            "text_valid": torch.from_numpy(np.stack(valid)).to(device),
        }

    @torch.inference_mode()
    def _first(self, vision: Callable[[dict[str, Any]], dict[str, Any]], observations: Sequence[Observation]
               ) -> dict[str, Any]:
        inputs = self.inputs(observations)
        towers = self.model.model.vision_backbone.towers
        first, second = torch.split(inputs.pop("pixel_values"), [3, 3], dim=1)
        return vision({**inputs, "x": [t.embed(p) for t, p in zip(towers, (first, second), strict=True)]})

    @torch.inference_mode()
    def _vision(self, blocks: range, last: bool, carry: dict[str, Any]) -> dict[str, Any]:
        vla = self.model.model
        towers = vla.vision_backbone.towers
        x = list(carry["x"])
        for index in blocks:
            x = [t.blocks[index](h) if index < t.used_blocks else h for t, h in zip(towers, x, strict=True)]
        if not last:
            return {**carry, "x": x}
        patches = torch.cat([t.patch_tokens(h) for t, h in zip(towers, x, strict=True)], dim=2)  # (B, P, D1 + D2)
        projected = vla.projector(patches)  # (B, P, W)
        return {"prefix": vla.prefix(projected, carry["bos"], carry["text"], carry["text_valid"]), "kv": {}}

    @torch.inference_mode()
    def _text(self, index: int, carry: dict[str, Any]) -> dict[str, Any]:
        vla, prefix = self.model.model, carry["prefix"]
        h, k, v = vla.layer(index, prefix["h"], prefix["positions"], prefix["mask"])
        kv = {**carry["kv"], f"kv.{index}.key": k, f"kv.{index}.value": v}
        if index < len(vla.layers) - 1:
            return {"prefix": {**prefix, "h": h}, "kv": kv}
        first = vla.logits(h[:, -1:])[:, -1].argmax(-1)  # (B,): greedy at the prefill's last position
        return {**kv, "prefix_valid": prefix["valid"], "first_token": first}


class OpenVLAGeneration(ModulesPart, AutoregressiveGeneration):
    """The action tokens after the first, greedy over the prefill's cache."""

    def __init__(self, model: OpenVLA) -> None:
        self.model = model

    @property
    def action_dim(self) -> int:
        return self.model.action_dim

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (1, self.model.action_dim)

    @property
    def num_action_tokens(self) -> int:
        return self.model.action_dim

    def _read(self, context: Context) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        vla = self.model.model
        device = vla._param().device
        try:
            kv = [(torch.as_tensor(context[f"kv.{i}.key"]).to(device), torch.as_tensor(context[f"kv.{i}.value"])
                   .to(device)) for i in range(len(vla.layers))]
            valid = torch.as_tensor(context["prefix_valid"]).to(device)
            first = torch.as_tensor(context["first_token"]).to(device)
        except KeyError as exc:
            raise InvalidInputError(f"OpenVLA generation: the context lacks {exc.args[0]!r} (expected OpenVLA's "
                                    "prefill cache)") from None
        return kv, valid, first

    @torch.inference_mode()
    def decode_classic(self, context: Context) -> torch.Tensor:
        """Token ids (B, l_a) on the CPU: the first token, then one cached step per token."""
        kv, valid, first = self._read(context)
        tokens = [first]
        for _ in range(self.num_action_tokens - 1):
            logits, new = self.model.model.extend(tokens[-1][:, None], kv, valid)  # (B, 1, V)
            kv = [(torch.cat([k, nk], 2), torch.cat([v, nv], 2)) for (k, v), (nk, nv) in zip(kv, new, strict=True)]
            valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
            tokens.append(logits[:, -1].argmax(-1))
        return torch.stack(tokens, dim=1).cpu()

    @torch.inference_mode()
    def next_tokens(self, context: Context, action_tokens: Any) -> torch.Tensor:
        """One merged causal pass over ``action_tokens[:, :-1]`` after the cache: (B, l_a) on the CPU, column 0
        the first token, column i the greedy token after ``action_tokens[:, :i]``."""
        kv, valid, first = self._read(context)
        tokens = torch.as_tensor(action_tokens, dtype=torch.int64, device=first.device)
        if tokens.shape[1] == 1:
            return first[:, None].cpu()
        logits, _ = self.model.model.extend(tokens[:, :-1], kv, valid)  # (B, l_a - 1, V)
        return torch.cat([first[:, None], logits.argmax(-1)], dim=1).cpu()

    def detokenize(self, token_ids: Any) -> np.ndarray:
        return self.model.detokenize(token_ids)


def build_openvla(config: AurasConfig) -> Policy:
    """The registry's factory: ``policy.checkpoint`` (an OpenVLA directory) or, without one, OpenVLA-7B's
    architecture with random weights; built in ``policy.dtype``; the camera is ``env.image_size`` square."""
    settings = OpenVLAConfig.parse(config.policy.model)
    refuse_scaling(config, "openvla", "set policy.model.llm_layers to build fewer Llama layers")
    if config.policy.checkpoint:
        model = OpenVLA.from_checkpoint(config.policy.checkpoint, settings, config.env.image_size,
                                        torch_dtype(config.policy.dtype))
    else:
        model = OpenVLA.random_full_size(settings, config.env.image_size, torch_dtype(config.policy.dtype))
    return model.as_policy(config.policy.execute_steps)
