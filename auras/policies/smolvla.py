"""SmolVLA as an auras policy: LeRobot SmolVLA checkpoints by path, or random weights at full size.

``policy.type=smolvla`` with ``policy.checkpoint=DIR`` loads a LeRobot SmolVLA checkpoint directory:
``config.json`` (``"type": "smolvla"``), ``model.safetensors`` and the normalisation statistics LeRobot
saves beside them (``policy_preprocessor_step_*_normalizer_processor.safetensors``). The VLM's
configuration comes from ``vlm_model_name``: a directory (absolute, or relative to the checkpoint or its parent)
holding a SmolVLM ``config.json`` (and ``tokenizer.json``), or the name of SmolVLM2-500M, whose
configuration auras carries. Without a checkpoint the same class is built at SmolVLA's full size
(SmolVLM2-500M truncated to 16 layers, a 0.75-wide expert: about 450 M parameters) with RANDOM
weights, for throughput runs; instruction tokens then come from a byte-level stand-in tokenizer.

The split (architecture in :mod:`auras.policies.smolvla_model`):

- perception: observations -> images resized with padding to ``resize_imgs_with_padding`` and scaled
  to [-1, 1], state normalised (``MEAN_STD``/``MIN_MAX`` as the checkpoint says) and zero-padded,
  the instruction (with a trailing newline) tokenized and padded to ``tokenizer_max_length`` (a fixed
  prefix length, so contexts of different requests batch); then the vision encoder layer by layer,
  the connector and prefix assembly, and the text model layer by layer. Each vision and text layer is
  one natural stage, so ``pp_perception`` cuts the prefix into groups of layers. The context is the
  per-layer prefix cache ``kv.{i}.key`` / ``kv.{i}.value`` (B, N, Hkv, D) plus ``prefix_pad`` (B, N).
- generation (family ``denoising``): ``num_steps`` Euler steps of the flow from t = 1 to 0 over the
  chunk (B, chunk_size, max_action_dim); step k runs at t = 1 - k / num_steps, so a request's steps
  can be spread over ``pp_generation`` stages, each reading the context the pipeline gives it (the
  public store's freshest prefix in ``auras`` mode). Actions are the first ``action_dim`` columns,
  unnormalised.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from auras.compiled import CompiledStage
from auras.devices import torch_dtype
from auras.errors import ConfigError, InvalidInputError
from auras.generation.base import DiffusionGeneration
from auras.generation.guidance import guide_velocity, read_guide
from auras.perception.base import Context, Perception
from auras.perception.text import PAD_ID, encode_instruction
from auras.policies.base import Policy
from auras.policies.smolvla_config import SmolVLAConfig
from auras.policies.smolvla_model import SMOLVLM2_500M, SmolVLAFlow, pad_last_dim, resize_with_pad
from auras.types import Observation, ObservationSpec

if TYPE_CHECKING:
    from auras.config import AurasConfig

__all__ = ["FULL_SIZE", "ByteTokenizer", "FileTokenizer", "SmolVLA", "build_smolvla", "load_lerobot_checkpoint"]

SMOLVLM2_NAME = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"

FULL_SIZE: dict[str, Any] = {
    "type": "smolvla",
    "input_features": {
        "observation.images.front": {"type": "VISUAL", "shape": [3, 84, 84]},
        "observation.state": {"type": "STATE", "shape": [4]},
    },
    "output_features": {"action": {"type": "ACTION", "shape": [4]}},
    "chunk_size": 50, "n_action_steps": 50, "max_state_dim": 32, "max_action_dim": 32,
    "resize_imgs_with_padding": [512, 512], "tokenizer_max_length": 48, "num_steps": 10,
    "vlm_model_name": SMOLVLM2_NAME, "attention_mode": "cross_attn", "prefix_length": -1,
    "num_expert_layers": -1, "num_vlm_layers": 16, "self_attn_every_n_layers": 2,
    "expert_width_multiplier": 0.75, "min_period": 4e-3, "max_period": 4.0, "add_image_special_tokens": False,
    "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
}
"""LeRobot's SmolVLA defaults with one 84 px camera and 4-dim state and actions (auras' tasks)."""

_NORMALIZER_GLOB = "policy_preprocessor_step_*_normalizer_processor.safetensors"


@functools.lru_cache(maxsize=256)
def _cached_instruction(text: str, length: int) -> np.ndarray:
    return encode_instruction(text, length)


def load_lerobot_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """A LeRobot SmolVLA checkpoint directory -> (config, state dict, normalisation stats by feature)."""
    from safetensors.torch import load_file

    root = Path(path)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise InvalidInputError(f"SmolVLA checkpoint {str(root)!r}: expected {config_file}, not found")
    config = json.loads(config_file.read_text())
    if config.get("type") != "smolvla":
        raise InvalidInputError(
            f'SmolVLA checkpoint {str(config_file)!r}: expected "type": "smolvla", got {config.get("type")!r}'
        )
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise InvalidInputError(f"SmolVLA checkpoint {str(root)!r}: expected {weights}, not found")
    stats = _normalizer_stats(root, config)
    return {**FULL_SIZE, **config}, load_file(weights), stats


def _normalizer_stats(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import load_file

    modes = config.get("normalization_mapping", FULL_SIZE["normalization_mapping"])
    needed = {kind for kind in ("STATE", "ACTION") if modes.get(kind, "IDENTITY") != "IDENTITY"}
    files = sorted(root.glob(_NORMALIZER_GLOB))
    if not files:
        if needed:
            raise InvalidInputError(
                f"SmolVLA checkpoint {str(root)!r}: normalization_mapping normalises {sorted(needed)} but no "
                f"normalisation statistics were found ({_NORMALIZER_GLOB}); refusing to run unnormalised"
            )
        return {}
    flat = load_file(files[0])
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        feature, _, stat = key.rpartition(".")
        stats.setdefault(feature, {})[stat] = value.float()
    return stats


def _vlm_config(config: dict[str, Any], root: Path | None) -> tuple[Any, Path | None]:
    """The SmolVLM configuration ``vlm_model_name`` names, and the directory it came from (if any)."""
    from transformers import SmolVLMConfig

    name = str(config["vlm_model_name"])
    for candidate in (Path(name), *((root / name, root.parent / name) if root is not None else ())):
        if (candidate / "config.json").is_file():
            return SmolVLMConfig.from_pretrained(str(candidate)), candidate
    if name == SMOLVLM2_NAME:
        return SmolVLMConfig(**SMOLVLM2_500M), None
    raise InvalidInputError(
        f"SmolVLA vlm_model_name {name!r}: expected a directory with a SmolVLM config.json (absolute or relative "
        f"to the checkpoint {str(root)!r}) or {SMOLVLM2_NAME!r}; no model hub is reached"
    )


class FileTokenizer:
    """Instruction -> (L,) token ids and mask, padded to ``length``, with a ``tokenizer.json`` (the text
    gets LeRobot's trailing newline first)."""

    def __init__(self, file: Path, length: int) -> None:
        from tokenizers import Tokenizer

        self.length = length
        self.max_bytes = None  # longer instructions are truncated to ``length`` tokens, as LeRobot does
        self._tokenizer = Tokenizer.from_file(str(file))
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def find(cls, directories: Sequence[Path], length: int) -> FileTokenizer:
        """The first ``tokenizer.json`` in ``directories``."""
        for directory in directories:
            if (directory / "tokenizer.json").is_file():
                return cls(directory / "tokenizer.json", length)
        raise InvalidInputError(
            f"SmolVLA: no tokenizer.json in {[str(d) for d in directories]} (the VLM config's directory or the "
            "checkpoint's); a trained checkpoint needs its tokenizer (SmolVLM2's tokenizer.json, copied there)"
        )

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        cached = self._cache.get(text)
        if cached is None:
            ids = self._tokenizer.encode(text if text.endswith("\n") else text + "\n").ids[: self.length]
            tokens, mask = np.zeros(self.length, np.int64), np.zeros(self.length, bool)
            tokens[: len(ids)], mask[: len(ids)] = ids, True
            cached = self._cache[text] = (tokens, mask)
        return cached


class ByteTokenizer:
    """Instruction -> (L,) UTF-8 byte ids + 1 and mask (:func:`auras.perception.text.encode_instruction`):
    tiny-flow's own vocabulary, and the stand-in of a random-weight model."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.max_bytes = length  # one id per byte: a longer instruction is refused

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = _cached_instruction(text, self.length)
        return ids, ids != PAD_ID


class SmolVLA(nn.Module):
    """SmolVLA's weights (``model``: LeRobot's module tree) with its normalisation and tokenizer."""

    policy_type: ClassVar[str] = "smolvla"

    def __init__(self, config: dict[str, Any], vlm_config: Any, tokenizer: Callable[[str], Any],
                 stats: dict[str, Any] | None = None) -> None:
        """``config``: LeRobot's SmolVLA config keys (see FULL_SIZE); ``vlm_config``: a SmolVLMConfig;
        ``tokenizer``: instruction -> (tokens, mask) of ``tokenizer_max_length``; ``stats``: feature ->
        mean/std/min/max tensors (required for every normalised feature)."""
        super().__init__()
        self.config = config
        self.model = SmolVLAFlow(vlm_config, config)
        self.cameras = {
            key.removeprefix("observation.images."): tuple(feature["shape"][1:])
            for key, feature in config["input_features"].items()
            if feature["type"] == "VISUAL"
        }
        state = [f for f in config["input_features"].values() if f["type"] == "STATE"]
        self.state_dim = int(state[0]["shape"][0]) if state else 0
        self.action_dim = int(config["output_features"]["action"]["shape"][0])
        self.tokenizer = tokenizer
        self.modes = config["normalization_mapping"]
        self.stats = stats or {}
        for feature, kind in (("observation.state", "STATE"), ("action", "ACTION")):
            if self.modes.get(kind, "IDENTITY") != "IDENTITY" and feature not in self.stats:
                raise InvalidInputError(f"SmolVLA: normalisation statistics for {feature!r} are missing")

    @classmethod
    def random_full_size(cls, config: dict[str, Any] | None = None) -> SmolVLA:
        """SmolVLA's full size (SmolVLM2-500M) with RANDOM weights, identity normalisation and byte tokens:
        for throughput runs only."""
        from transformers import SmolVLMConfig

        config = {**FULL_SIZE, **(config or {}), "normalization_mapping": {"VISUAL": "IDENTITY",
                  "STATE": "IDENTITY", "ACTION": "IDENTITY"}}
        return cls(config, SmolVLMConfig(**SMOLVLM2_500M), ByteTokenizer(int(config["tokenizer_max_length"])))

    @classmethod
    def from_lerobot(cls, path: str | Path) -> SmolVLA:
        config, state, stats = load_lerobot_checkpoint(path)
        vlm_config, vlm_dir = _vlm_config(config, Path(path))
        where = [d for d in (vlm_dir, Path(path)) if d is not None]
        model = cls(config, vlm_config, FileTokenizer.find(where, int(config["tokenizer_max_length"])), stats)
        expected, file = model.state_dict(), str(Path(path) / "model.safetensors")
        for key, value in state.items():
            if key not in expected:
                raise InvalidInputError(f"SmolVLA checkpoint {file!r}: unexpected key {key!r}")
            if tuple(expected[key].shape) != tuple(value.shape):
                raise InvalidInputError(
                    f"SmolVLA checkpoint {file!r}: {key!r} has shape {tuple(value.shape)}, but its config.json "
                    f"gives {tuple(expected[key].shape)}"
                )
        missing = sorted(set(expected) - set(state))
        if missing:
            raise InvalidInputError(f"SmolVLA checkpoint {file!r}: missing {len(missing)} key(s), first {missing[:3]}")
        model.load_state_dict(state)
        return model.eval()

    # -- normalisation --------------------------------------------------------------------------
    def normalize(self, feature: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        mode, s = self.modes.get(kind, "IDENTITY"), self.stats.get(feature)
        if mode == "IDENTITY" or s is None:
            return x
        if mode == "MEAN_STD":
            return (x - s["mean"].to(x)) / (s["std"].to(x) + 1e-8)
        if mode == "MIN_MAX":
            span = s["max"].to(x) - s["min"].to(x)
            return 2 * (x - s["min"].to(x)) / torch.where(span == 0, torch.full_like(span, 1e-8), span) - 1
        raise InvalidInputError(f"SmolVLA: normalisation mode {mode!r} of {kind} is not supported")

    def unnormalize_actions(self, x: torch.Tensor) -> torch.Tensor:
        mode, s = self.modes.get("ACTION", "IDENTITY"), self.stats.get("action")
        if mode == "IDENTITY" or s is None:
            return x
        if mode == "MEAN_STD":
            return x * s["std"].to(x) + s["mean"].to(x)
        if mode == "MIN_MAX":
            span = s["max"].to(x) - s["min"].to(x)
            return (x + 1) / 2 * torch.where(span == 0, torch.full_like(span, 1e-8), span) + s["min"].to(x)
        raise InvalidInputError(f"SmolVLA: normalisation mode {mode!r} of ACTION is not supported")

    def as_policy(self, execute_steps: int | None = None, name: str | None = None) -> Policy:
        """Perception and generation halves over these weights; ``name``: the registry name (smolvla)."""
        self.eval()
        steps = int(self.config.get("n_action_steps", self.config["chunk_size"]) if execute_steps is None
                    else execute_steps)
        if not 1 <= steps <= int(self.config["chunk_size"]):
            raise InvalidInputError(f"execute_steps: expected 1..{self.config['chunk_size']}, got {steps}")
        return Policy(name or self.policy_type, SmolVLAPerception(self), SmolVLAGeneration(self), execute_steps=steps)


class _Part:
    model: SmolVLA

    def to(self, device: str, dtype: str = "float32") -> None:
        self.model.to(device=torch.device(device), dtype=torch_dtype(dtype))


class SmolVLAPerception(_Part, Perception):
    """Observations -> the prefix cache, one stage per vision layer and per text layer."""

    def __init__(self, model: SmolVLA) -> None:
        self.model = model
        self._spec = ObservationSpec(dict(model.cameras), state_dim=model.state_dim,
                                     max_instruction_bytes=model.tokenizer.max_bytes)
        self._calls = self._tensor_functions(lambda fn: fn)

    def _tensor_functions(self, wrap: Callable[[Callable], Callable]) -> dict[str, Any]:
        """The tensor functions the stages call, each passed through ``wrap`` (compile)."""
        flow = self.model.model
        vision, text = len(flow.vision.encoder.layers), len(flow.text_layers)
        return {
            "patch": wrap(flow.patch_embed),
            "vision": [wrap(functools.partial(flow.vision_layer, i)) for i in range(vision)],
            "tokens": wrap(flow.image_tokens),
            "prefix": wrap(flow.embed_prefix),
            "text": [wrap(functools.partial(flow.prefix_layer, i, last=i == text - 1)) for i in range(text)],
        }

    def compile(self, mode: str, batch: int = 1) -> None:
        """Patch embedding, each vision layer, the connector, the prefix assembly and each text layer."""
        self._calls = self._tensor_functions(lambda fn: CompiledStage(fn, mode, batch))

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def stages(self) -> list[Callable[[Any], Any]]:
        flow = self.model.model
        vision, text = len(flow.vision.encoder.layers), len(flow.text_layers)
        stages: list[Callable[[Any], Any]] = [self._inputs_and_vision_layer(0)]
        stages += [self._vision_layer(i) for i in range(1, vision)]
        stages += [self._text_layer(i, i == text - 1) for i in range(text)]
        return stages

    def _param(self) -> torch.Tensor:
        return self.model.model.state_proj.weight

    @torch.inference_mode()
    def _inputs(self, observations: Sequence[Observation]) -> dict[str, Any]:
        if not observations:
            raise InvalidInputError("perceive: expected at least one observation, got none")
        param = self._param()
        flow, images = self.model.model, []
        height, width = self.model.config["resize_imgs_with_padding"] or (None, None)
        for camera in self.model.cameras:
            pixels = torch.from_numpy(np.stack([o.images[camera] for o in observations])).to(param.device)
            pixels = pixels.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, h, w) in [0, 1]
            if height is not None:
                pixels = resize_with_pad(pixels, int(height), int(width))
            images.append(self._calls["patch"]((pixels * 2.0 - 1.0).to(param.dtype)))
        state = torch.from_numpy(np.stack([o.state for o in observations])).to(param.device).float()
        state = pad_last_dim(self.model.normalize("observation.state", "STATE", state), flow.state_proj.in_features)
        tokens, masks = zip(*(self.model.tokenizer(o.instruction) for o in observations), strict=True)
        return {
            "images": images,
            "tokens": torch.from_numpy(np.stack(tokens)).to(param.device),
            "lang_mask": torch.from_numpy(np.stack(masks)).to(param.device),
            "state": state.to(param.dtype),
        }

    def _inputs_and_vision_layer(self, index: int) -> Callable[[Any], Any]:
        first = self._vision_layer(index)

        def run(observations: Sequence[Observation]) -> dict[str, Any]:
            return first(self._inputs(observations))

        return run

    def _vision_layer(self, index: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
        flow = self.model.model
        last = index == len(flow.vision.encoder.layers) - 1

        @torch.inference_mode()
        def run(carry: dict[str, Any]) -> dict[str, Any]:
            images = [self._calls["vision"][index](h) for h in carry["images"]]
            if not last:
                return {**carry, "images": images}
            tokens = [self._calls["tokens"](h) for h in images]
            prefix = self._calls["prefix"](tokens, carry["tokens"], carry["lang_mask"], carry["state"])
            return {"prefix": prefix, "kv": {}}

        return run

    def _text_layer(self, index: int, last: bool) -> Callable[[dict[str, Any]], Any]:
        @torch.inference_mode()
        def run(carry: dict[str, Any]) -> Any:
            h, k, v = self._calls["text"][index](carry["prefix"])
            kv = {**carry["kv"], f"kv.{index}.key": k, f"kv.{index}.value": v}
            if last:
                return {**kv, "prefix_pad": carry["prefix"]["pad"]}
            return {"prefix": {**carry["prefix"], "h": h}, "kv": kv}

        return run


class SmolVLAGeneration(_Part, DiffusionGeneration):
    """The flow over the action chunk; step k (of ``num_steps``) runs at t = 1 - k / num_steps."""

    def __init__(self, model: SmolVLA, seed: int = 0) -> None:
        self.model = model
        self._seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._velocity: Callable[..., torch.Tensor] = model.model.velocity  # one flow step's network

    def compile(self, mode: str, batch: int = 1) -> None:
        """The expert's velocity (one flow step), compiled for ``batch`` rows (every in-flight request)."""
        self._velocity = CompiledStage(self.model.model.velocity, mode, batch)

    @property
    def action_dim(self) -> int:
        return self.model.action_dim

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (int(self.model.config["chunk_size"]), self.action_dim)

    @property
    def num_inference_steps(self) -> int:
        return int(self.model.config["num_steps"])

    def reset(self) -> None:
        self._generator = torch.Generator().manual_seed(self._seed)

    def noise_generator(self) -> torch.Generator:
        """A fresh generator of initial noise, seeded as this generation is after ``reset``: each pipeline
        session draws its own, so a robot's noise never depends on the robots batched with it."""
        return torch.Generator().manual_seed(self._seed)

    def initial_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (batch, int(self.model.config["chunk_size"]), int(self.model.config["max_action_dim"]))
        return torch.randn(shape, generator=generator if generator is not None else self._generator)

    @torch.inference_mode()
    def denoise(self, sample: Any, step_index: Any, num_steps: Any, context: Context) -> torch.Tensor:
        flow = self.model.model
        param = flow.state_proj.weight
        x = torch.as_tensor(sample, dtype=torch.float32).to(param.device).clone()
        k0 = torch.as_tensor(step_index, dtype=torch.int64).reshape(-1).cpu()
        count = torch.as_tensor(num_steps, dtype=torch.int64).reshape(-1).cpu()
        n, batch = self.num_inference_steps, x.shape[0]
        if k0.shape != (batch,) or count.shape != (batch,) or bool((k0 < 0).any() or (k0 + count > n).any()):
            raise InvalidInputError(
                f"denoise: expected step_index and num_steps of shape ({batch},) with 0 <= step_index and "
                f"step_index + num_steps <= {n}, got {k0.tolist()} and {count.tolist()}"
            )
        layers = len(flow.text_layers)
        try:
            kv = [(context[f"kv.{i}.key"], context[f"kv.{i}.value"]) for i in range(layers)]
            pad = context["prefix_pad"]
        except KeyError as exc:
            missing = exc.args[0]
            raise InvalidInputError(
                f"denoise: the context lacks {missing!r} (expected SmolVLA's prefix cache)"
            ) from None
        guide = read_guide(context, lambda a: self.model.normalize("action", "ACTION", a), x.device)  # rtc
        dt = -1.0 / n
        # The cache is gathered once per set of active rows (rows only drop out), not once per flow step;
        # with every row active it is used as it is, copied only if it is not a contiguous inference tensor
        # (compiled steps guard on both, and would otherwise compile a second graph).
        kv = [(_as_inference(k), _as_inference(v)) for k, v in kv]
        active: tuple[int, ...] = tuple(range(batch))
        idx, cache, cache_pad = torch.arange(batch, device=x.device), kv, _as_inference(pad)
        for it in range(int(count.max()) if batch else 0):
            rows = torch.nonzero(count > it).flatten()
            if tuple(rows.tolist()) != active:
                active, idx = tuple(rows.tolist()), rows.to(x.device)
                cache, cache_pad = [(k[idx], v[idx]) for k, v in kv], pad[idx]
            time = torch.tensor([1.0 + int(k) * dt for k in k0[rows] + it], dtype=torch.float32, device=x.device)
            velocity = self._velocity(x[idx].to(param.dtype), time, cache, cache_pad).float()
            if guide is not None:
                velocity = guide_velocity(velocity, x[idx], time, (guide[0][idx], guide[1][idx]))
            x[idx] = x[idx] + dt * velocity
        return x

    @torch.inference_mode()
    def to_actions(self, sample: Any) -> np.ndarray:
        actions = torch.as_tensor(sample).float()[..., : self.action_dim]
        return self.model.unnormalize_actions(actions).cpu().numpy().astype(np.float32)


def _as_inference(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself if it is a contiguous inference tensor, else a copy that is (call in inference mode)."""
    return (
        tensor
        if tensor.is_inference() and tensor.is_contiguous()
        else tensor.clone(memory_format=torch.contiguous_format)
    )


def build_smolvla(config: AurasConfig) -> Policy:
    """The registry's factory: ``policy.checkpoint`` (a LeRobot SmolVLA directory) or, without one, the
    full-size architecture with random weights and the env's image size."""
    if config.policy.checkpoint:
        model = SmolVLA.from_lerobot(config.policy.checkpoint)
    else:
        if (config.policy.scale_perception, config.policy.scale_generation) != (1.0, 1.0):
            raise ConfigError("smolvla: scale_perception / scale_generation are not supported; it runs at full size")
        size = config.env.image_size
        full = {"input_features": {
            "observation.images.front": {"type": "VISUAL", "shape": [3, size, size]},
            "observation.state": {"type": "STATE", "shape": [4]},
        }}
        model = SmolVLA.random_full_size(full).eval()
    settings = SmolVLAConfig.parse(config.policy.model)
    if settings.num_steps is not None:
        model.config["num_steps"] = settings.num_steps
    return model.as_policy(config.policy.execute_steps)
