"""The "VLM prefix + flow-matching action expert" family: SmolVLA, π0 and π0.5 as auras policies.

Each of these LeRobot policies splits the same way, and this module holds what they share:

- reading a LeRobot checkpoint directory (``config.json``, ``model.safetensors``, the normalisation statistics
  of its saved pre/post-processors) and checking the weights against the architecture, key by key;
- :class:`Normalizer`: LeRobot's normalisation modes (``MEAN_STD``, ``MIN_MAX``, ``QUANTILES``, ``QUANTILE10``)
  with its epsilon;
- :class:`FlowVLAPerception` (perception): observations -> the model's inputs (:meth:`FlowVLA.prepare`), then
  the vision encoder layer by layer, the image tokens and prefix assembly, and the language model layer by layer.
  Each vision and language layer is one natural stage, so ``pp_perception`` cuts the prefix into groups of layers.
  The context is the per-layer prefix cache ``kv.{i}.key`` / ``kv.{i}.value`` (B, N, Hkv, D) with ``prefix_pad``
  (B, N), plus what the model adds (:meth:`FlowVLA.prepare`'s ``context``: π0's normalised state);
- :class:`FlowVLAGeneration` (family ``denoising``): ``num_steps`` Euler steps of the flow from t = 1 to 0 over the
  chunk (B, chunk_size, max_action_dim); step k runs at t = 1 - k / num_steps, so a request's steps can be spread
  over ``pp_generation`` stages, each reading the context the pipeline gives it (the public store's freshest one in
  ``auras`` mode). rtc's guide (:mod:`auras.generation.guidance`) steers each step. Actions are the first
  ``action_dim`` columns, unnormalised.

A model of the family is a :class:`FlowVLA`: its ``model`` (the torch module tree, named as LeRobot names it) has
``patch_embed``, ``vision_layer``, ``image_tokens``, ``embed_prefix``, ``prefix_layer`` and ``velocity(x_t, time,
cache, prefix_pad, *extras)``; the subclass says how observations become inputs and which context entries the
flow reads beyond the cache.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from auras.compiled import CompiledStage
from auras.errors import InvalidInputError
from auras.generation.base import DiffusionGeneration, SeededNoise
from auras.generation.guidance import PULL, GuidanceRule, guide_velocity, read_guide
from auras.perception.base import Context, Perception
from auras.perception.text import PAD_ID, encode_instruction
from auras.policies.base import Policy
from auras.policies.modules import ModulesPart
from auras.types import Observation, ObservationSpec

__all__ = [
    "NORMALIZER_GLOB",
    "ByteTokenizer",
    "FlowVLA",
    "FlowVLAGeneration",
    "FlowVLAPerception",
    "Normalizer",
    "read_lerobot_checkpoint",
]

NORMALIZER_GLOB = "policy_preprocessor_step_*_normalizer_processor.safetensors"
"""Where LeRobot saves a checkpoint's normalisation statistics (its preprocessor's normaliser step)."""

_MODE_STATS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
               "QUANTILE10": ("q10", "q90")}


class Normalizer:
    """LeRobot's ``NormalizerProcessorStep`` for the state and the actions: ``modes`` (feature type -> mode, as in a
    config's ``normalization_mapping``) over ``stats`` (feature -> statistic name -> tensor)."""

    def __init__(self, modes: dict[str, str], stats: dict[str, dict[str, torch.Tensor]], what: str,
                 eps: float = 1e-8) -> None:
        self.modes, self.stats, self.eps = dict(modes), stats, eps
        for feature, kind in (("observation.state", "STATE"), ("action", "ACTION")):
            mode = self.modes.get(kind, "IDENTITY")
            if mode == "IDENTITY":
                continue
            if mode not in _MODE_STATS:
                raise InvalidInputError(
                    f"{what}: normalisation mode {mode!r} of {kind} is not supported (expected IDENTITY or one of "
                    f"{sorted(_MODE_STATS)})"
                )
            missing = [s for s in _MODE_STATS[mode] if s not in self.stats.get(feature, {})]
            if missing:
                raise InvalidInputError(
                    f"{what}: normalisation statistics {missing} of {feature!r} are missing ({kind} is {mode})"
                )

    def _low_span(self, feature: str, mode: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = (self.stats[feature][s].to(x) for s in _MODE_STATS[mode])
        span = high - low
        return low, torch.where(span == 0, torch.full_like(span, self.eps), span)

    def normalize(self, feature: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.modes.get(kind, "IDENTITY")
        if mode == "IDENTITY" or feature not in self.stats:
            return x
        if mode == "MEAN_STD":
            s = self.stats[feature]
            return (x - s["mean"].to(x)) / (s["std"].to(x) + self.eps)
        low, span = self._low_span(feature, mode, x)
        return 2 * (x - low) / span - 1

    def unnormalize(self, feature: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.modes.get(kind, "IDENTITY")
        if mode == "IDENTITY" or feature not in self.stats:
            return x
        if mode == "MEAN_STD":
            s = self.stats[feature]
            return x * s["std"].to(x) + s["mean"].to(x)
        low, span = self._low_span(feature, mode, x)
        if mode == "MIN_MAX":
            return (x + 1) / 2 * span + low
        return (x + 1.0) * span / 2.0 + low


def read_lerobot_checkpoint(path: str | Path, types: Sequence[str], what: str
                            ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """A LeRobot checkpoint directory whose ``config.json`` has ``"type"`` in ``types`` -> (config, state dict,
    normalisation statistics by feature). ``what`` names the model in errors."""
    from safetensors.torch import load_file

    root = Path(path)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise InvalidInputError(f"{what} checkpoint {str(root)!r}: expected {config_file}, not found")
    config = json.loads(config_file.read_text())
    if config.get("type") not in types:
        expected = " or ".join(f'"type": "{t}"' for t in types)
        raise InvalidInputError(
            f"{what} checkpoint {str(config_file)!r}: expected {expected}, got {config.get('type')!r}"
        )
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise InvalidInputError(f"{what} checkpoint {str(root)!r}: expected {weights}, not found")
    return config, load_file(weights), _normalizer_stats(root, config, what)


def _normalizer_stats(root: Path, config: dict[str, Any], what: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    modes = config.get("normalization_mapping", {})
    needed = {kind for kind in ("STATE", "ACTION") if modes.get(kind, "IDENTITY") != "IDENTITY"}
    files = sorted(root.glob(NORMALIZER_GLOB))
    if not files:
        if needed:
            raise InvalidInputError(
                f"{what} checkpoint {str(root)!r}: normalization_mapping normalises {sorted(needed)} but no "
                f"normalisation statistics were found ({NORMALIZER_GLOB}); refusing to run unnormalised"
            )
        return {}
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(files[0]).items():
        feature, _, stat = key.rpartition(".")
        stats.setdefault(feature, {})[stat] = value.float()
    return stats


@functools.lru_cache(maxsize=256)
def _cached_instruction(text: str, length: int) -> np.ndarray:
    return encode_instruction(text, length)


class ByteTokenizer:
    """Instruction -> (L,) UTF-8 byte ids + 1 and mask (:func:`auras.perception.text.encode_instruction`):
    tiny-flow's own vocabulary, and the stand-in of a random-weight model."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.max_bytes = length  # one id per byte: a longer instruction is refused

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = _cached_instruction(text, self.length)
        return ids, ids != PAD_ID


class FlowVLA(nn.Module):
    """A model of the family (see the module doc): ``model`` (the torch modules), its LeRobot ``config``, the
    normaliser and the tokenizer. Subclasses say how observations become the model's inputs."""

    policy_type: ClassVar[str]
    model: nn.Module

    def __init__(self, config: dict[str, Any], tokenizer: Any, stats: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.cameras = {
            key.removeprefix("observation.images."): tuple(feature["shape"][1:])
            for key, feature in config["input_features"].items()
            if feature["type"] == "VISUAL"
        }
        state = [f for f in config["input_features"].values() if f["type"] == "STATE"]
        self.state_dim = int(state[0]["shape"][0]) if state else 0
        self.action_dim = int(config["output_features"]["action"]["shape"][0])
        self.tokenizer = tokenizer
        self.normalizer = Normalizer(config["normalization_mapping"], stats or {}, type(self).__name__)

    @property
    def modes(self) -> dict[str, str]:
        return self.normalizer.modes

    def normalize(self, feature: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        return self.normalizer.normalize(feature, kind, x)

    def unnormalize_actions(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalizer.unnormalize("action", "ACTION", x)

    # -- what a subclass says ---------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Euler steps of the flow per request."""
        raise NotImplementedError

    @property
    def observation_spec(self) -> ObservationSpec:
        """What each observation carries: every camera, the state, an instruction the tokenizer accepts."""
        return ObservationSpec(dict(self.cameras), state_dim=self.state_dim,
                               max_instruction_bytes=self.tokenizer.max_bytes)

    def prepare(self, observations: Sequence[Observation]) -> dict[str, Any]:
        """Observations -> ``pixels`` (one (B, 3, S, S) tensor in [-1, 1] per image, in the model's dtype),
        ``prefix_args`` (the arguments of ``model.embed_prefix`` after the image tokens) and ``context`` (tensors
        the context carries besides the prefix cache, for the flow)."""
        raise NotImplementedError

    def flow_extras(self, context: Context) -> tuple[torch.Tensor, ...]:
        """The context entries ``model.velocity`` reads after the cache and its pad mask (batch-first tensors)."""
        return ()

    def weight(self) -> torch.Tensor:
        """A parameter: the device and dtype the model runs in."""
        return self.model.action_in_proj.weight

    def as_policy(self, execute_steps: int | None = None, name: str | None = None) -> Policy:
        """Perception and generation halves over these weights; ``name``: the registry name."""
        self.eval()
        chunk = int(self.config["chunk_size"])
        steps = int(self.config.get("n_action_steps", chunk) if execute_steps is None else execute_steps)
        if not 1 <= steps <= chunk:
            raise InvalidInputError(f"execute_steps: expected 1..{chunk}, got {steps}")
        return Policy(name or self.policy_type, FlowVLAPerception(self), FlowVLAGeneration(self), execute_steps=steps)


class FlowVLAPerception(ModulesPart, Perception):
    """Observations -> the prefix cache, one stage per vision layer and per language layer."""

    def __init__(self, model: FlowVLA) -> None:
        self.model = model
        self._spec = model.observation_spec
        self._calls = self._tensor_functions(lambda fn: fn)

    def _tensor_functions(self, wrap: Callable[[Callable], Callable]) -> dict[str, Any]:
        """The tensor functions the stages call, each passed through ``wrap`` (compile)."""
        flow = self.model.model
        return {
            "patch": wrap(flow.patch_embed),
            "vision": [wrap(functools.partial(flow.vision_layer, i)) for i in range(flow.num_vision_layers)],
            "tokens": wrap(flow.image_tokens),
            "prefix": wrap(flow.embed_prefix),
            "text": [wrap(functools.partial(flow.prefix_layer, i, last=i == flow.num_prefix_layers - 1))
                     for i in range(flow.num_prefix_layers)],
        }

    def compile(self, mode: str, batch: int = 1) -> None:
        """Patch embedding, each vision layer, the image tokens, the prefix assembly and each language layer."""
        self._calls = self._tensor_functions(lambda fn: CompiledStage(fn, mode, batch))

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def stages(self) -> list[Callable[[Any], Any]]:
        flow = self.model.model
        vision, text = flow.num_vision_layers, flow.num_prefix_layers
        stages: list[Callable[[Any], Any]] = [self._inputs_and_vision_layer(0)]
        stages += [self._vision_layer(i) for i in range(1, vision)]
        stages += [self._text_layer(i, i == text - 1) for i in range(text)]
        return stages

    def _inputs_and_vision_layer(self, index: int) -> Callable[[Any], Any]:
        first = self._vision_layer(index)

        @torch.inference_mode()
        def run(observations: Sequence[Observation]) -> dict[str, Any]:
            if not observations:
                raise InvalidInputError("perceive: expected at least one observation, got none")
            inputs = self.model.prepare(observations)
            images = [self._calls["patch"](pixels) for pixels in inputs.pop("pixels")]
            return first({**inputs, "images": images})

        return run

    def _vision_layer(self, index: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
        last = index == self.model.model.num_vision_layers - 1

        @torch.inference_mode()
        def run(carry: dict[str, Any]) -> dict[str, Any]:
            images = [self._calls["vision"][index](h) for h in carry["images"]]
            if not last:
                return {**carry, "images": images}
            tokens = [self._calls["tokens"](h) for h in images]
            prefix = self._calls["prefix"](tokens, *carry["prefix_args"])
            return {"prefix": prefix, "kv": {}, "context": carry["context"]}

        return run

    def _text_layer(self, index: int, last: bool) -> Callable[[dict[str, Any]], Any]:
        @torch.inference_mode()
        def run(carry: dict[str, Any]) -> Any:
            h, k, v = self._calls["text"][index](carry["prefix"])
            kv = {**carry["kv"], f"kv.{index}.key": k, f"kv.{index}.value": v}
            if last:
                return {**kv, "prefix_pad": carry["prefix"]["pad"], **carry["context"]}
            return {"prefix": {**carry["prefix"], "h": h}, "kv": kv, "context": carry["context"]}

        return run


class FlowVLAGeneration(ModulesPart, SeededNoise, DiffusionGeneration):
    """The flow over the action chunk; step k (of ``num_steps``) runs at t = 1 - k / num_steps."""

    def __init__(self, model: FlowVLA, seed: int = 0) -> None:
        self.model = model
        self.seed_noise(seed)
        self._velocity: Callable[..., torch.Tensor] = model.model.velocity  # one flow step's network
        self.guidance: GuidanceRule = PULL  # how rtc's guide steers each step (staleness.rtc_guidance)

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
        return self.model.num_steps

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, int(self.model.config["chunk_size"]), int(self.model.config["max_action_dim"]))

    @torch.inference_mode()
    def denoise(self, sample: Any, step_index: Any, num_steps: Any, context: Context) -> torch.Tensor:
        model = self.model
        param = model.weight()
        x = torch.as_tensor(sample, dtype=torch.float32).to(param.device).clone()
        k0 = torch.as_tensor(step_index, dtype=torch.int64).reshape(-1).cpu()
        count = torch.as_tensor(num_steps, dtype=torch.int64).reshape(-1).cpu()
        n, batch = self.num_inference_steps, x.shape[0]
        if k0.shape != (batch,) or count.shape != (batch,) or bool((k0 < 0).any() or (k0 + count > n).any()):
            raise InvalidInputError(
                f"denoise: expected step_index and num_steps of shape ({batch},) with 0 <= step_index and "
                f"step_index + num_steps <= {n}, got {k0.tolist()} and {count.tolist()}"
            )
        try:
            kv = [(context[f"kv.{i}.key"], context[f"kv.{i}.value"]) for i in range(model.model.num_prefix_layers)]
            pad = context["prefix_pad"]
            extras = model.flow_extras(context)
        except KeyError as exc:
            raise InvalidInputError(
                f"denoise: the context lacks {exc.args[0]!r} (expected {type(model).__name__}'s prefix cache)"
            ) from None
        guide = read_guide(context, lambda a: model.normalize("action", "ACTION", a), x.device)  # rtc
        dt = -1.0 / n
        # The cache is gathered once per set of active rows (rows only drop out), not once per flow step;
        # with every row active it is used as it is, copied only if it is not a contiguous inference tensor
        # (compiled steps guard on both, and would otherwise compile a second graph).
        kv = [(_as_inference(k), _as_inference(v)) for k, v in kv]
        extras = tuple(_as_inference(e.to(param.device)) for e in extras)
        active: tuple[int, ...] = tuple(range(batch))
        idx, cache, cache_pad, rows_extras = torch.arange(batch, device=x.device), kv, _as_inference(pad), extras
        for it in range(int(count.max()) if batch else 0):
            rows = torch.nonzero(count > it).flatten()
            if tuple(rows.tolist()) != active:
                active, idx = tuple(rows.tolist()), rows.to(x.device)
                cache, cache_pad = [(k[idx], v[idx]) for k, v in kv], pad[idx]
                rows_extras = tuple(e[idx] for e in extras)
            time = torch.tensor([1.0 + int(k) * dt for k in k0[rows] + it], dtype=torch.float32, device=x.device)
            velocity = self._velocity(x[idx].to(param.dtype), time, cache, cache_pad, *rows_extras).float()
            if guide is not None:
                velocity = guide_velocity(velocity, x[idx], time, (guide[0][idx], guide[1][idx]), self.guidance)
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
