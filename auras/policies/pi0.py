"""π0 and π0.5 as auras policies: LeRobot checkpoints by path, or random weights at full size.

``policy.type=pi0`` (or ``pi05``) with ``policy.checkpoint=DIR`` loads a LeRobot π0 (π0.5) checkpoint directory:
``config.json`` (``"type": "pi0"`` / ``"pi05"``), ``model.safetensors`` and the normalisation statistics LeRobot
saves beside them (``policy_preprocessor_step_*_normalizer_processor.safetensors``; ``MEAN_STD``, ``MIN_MAX``,
``QUANTILES`` and ``QUANTILE10`` as ``normalization_mapping`` says). The instruction is tokenized with the tokenizer
the saved preprocessor names (``tokenizer_name``: PaliGemma's, which a deployment copies beside the checkpoint; a
directory resolved against the checkpoint and its parent, or ``policy.model.tokenizer``), padded to its
``max_length``. Architecture sizes are read from the weights (:func:`auras.policies.pi0_model.pi0_sizes`). Without a
checkpoint the same classes are built at full size (PaliGemma 3B's SigLIP so400m and Gemma 2B, the Gemma 300M
expert: about 3.5 B parameters) with RANDOM weights, for throughput runs.

The split is the family's (:mod:`auras.policies.flow_vla`; architecture in :mod:`auras.policies.pi0_model`):

- perception: each camera's image resized with padding to ``image_resolution`` (LeRobot's centred padding) and
  scaled to [-1, 1]; cameras the robot does not send (``policy.model.cameras``) are LeRobot's empty cameras, -1
  images masked out of the prefix. Then SigLIP layer by layer, the projector, the instruction tokens and the Gemma
  layers over that prefix. π0's prefix holds no proprioception: its normalised state, zero-padded to
  ``max_state_dim``, rides in the context as ``state`` (so in mode ``auras`` the public context hands every
  in-flight request the freshest observation's state together with its prefix). π0.5 writes the normalised state
  into the prompt instead, as 256-bin tokens (``Task: <instruction>, State: <bins>;\\nAction: ``), and its
  context is the prefix cache alone.
- generation (family ``denoising``): ``num_inference_steps`` Euler steps of the flow through the Gemma expert, which
  attends over the prefix cache (π0: a state token first; π0.5: the time through adaptive norms).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from auras.devices import torch_dtype
from auras.errors import ConfigError, InvalidInputError
from auras.perception.base import Context
from auras.policies.base import Policy
from auras.policies.flow_vla import ByteTokenizer, FlowVLA, read_lerobot_checkpoint
from auras.policies.modules import built_in, cached_encoder, load_weights, refuse_scaling
from auras.policies.pi0_config import Pi0Config, Pi05Config
from auras.policies.pi0_model import Pi0Flow, Pi05Flow, pi0_sizes, resize_with_pad_centered
from auras.policies.smolvla_model import pad_last_dim
from auras.types import Observation, ObservationSpec

if TYPE_CHECKING:
    from auras.config import AurasConfig

__all__ = ["FULL_SIZE", "PaliGemmaTokenizer", "Pi0", "Pi05", "build_pi0", "build_pi05", "state_prompt"]

_GEMMA_2B = dict(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
_GEMMA_300M = dict(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)
FULL_SIZE: dict[str, Any] = {
    "sizes": {
        "vlm": _GEMMA_2B, "expert": _GEMMA_300M, "vocab_size": 257_152, "max_state_dim": 32, "max_action_dim": 32,
        "vision": dict(hidden_size=1152, patch_size=14, num_channels=3, image_size=224, num_hidden_layers=27,
                       intermediate_size=4304),
    },
    "vision_heads": 16,
    "config": {
        "chunk_size": 50, "n_action_steps": 50, "max_state_dim": 32, "max_action_dim": 32, "num_inference_steps": 10,
        "image_resolution": [224, 224], "tokenizer_max_length": 48, "min_period": 4e-3, "max_period": 4.0,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "IDENTITY", "ACTION": "IDENTITY"},
    },
}
"""π0's full size (LeRobot's gemma_2b / gemma_300m variants, PaliGemma's SigLIP so400m at 224 px) and defaults."""

STATE_BINS = 256


def state_prompt(instruction: str, state: np.ndarray) -> str:
    """π0.5's prompt: the instruction cleaned as LeRobot cleans it and the normalised, padded state as 256 bins of
    [-1, 1] (openpi's ``PaligemmaTokenizer``)."""
    bins = np.digitize(state, bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1
    cleaned = instruction.strip().replace("_", " ").replace("\n", " ")
    return f"Task: {cleaned}, State: {' '.join(map(str, bins))};\nAction: "


class PaliGemmaTokenizer:
    """Text -> (L,) token ids and mask, right-padded to ``length`` and truncated, as LeRobot's tokenizer step does
    (transformers' tokenizer from a local directory); ``newline``: end the text with one (π0's preprocessor)."""

    def __init__(self, directory: Path, length: int, newline: bool) -> None:
        from transformers import AutoTokenizer

        self.length, self.newline = length, newline
        self.max_bytes = None  # longer instructions are truncated to ``length`` tokens, as LeRobot does
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self._encode = cached_encoder(self._encode_text)

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        return self._encode(text)

    def _encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if self.newline and not text.endswith("\n"):
            text += "\n"
        out = self._tokenizer(text, max_length=self.length, truncation=True, padding="max_length",
                              padding_side="right", return_tensors="np")
        return out["input_ids"][0].astype(np.int64), out["attention_mask"][0].astype(bool)


class Pi0(FlowVLA):
    """π0's weights (``model``: :class:`Pi0Flow`) with its normalisation, tokenizer and cameras."""

    policy_type: ClassVar[str] = "pi0"
    flow_class: ClassVar[type[Pi0Flow]] = Pi0Flow
    settings_class: ClassVar[type[Pi0Config]] = Pi0Config
    full_size_tokens: ClassVar[int] = 48  # LeRobot's tokenizer_max_length

    def __init__(self, config: dict[str, Any], flow: Pi0Flow, tokenizer: Any, stats: dict[str, Any] | None = None,
                 cameras: Sequence[str] | None = None) -> None:
        """``config``: LeRobot's π0 config keys; ``cameras``: the ones the robot sends (default: all)."""
        super().__init__(config, tokenizer, stats)
        self.model = flow
        sent = list(self.cameras) if cameras is None else list(cameras)
        unknown = [c for c in sent if c not in self.cameras]
        if not sent or unknown:
            raise ConfigError(
                f"policy.model.cameras: expected a non-empty subset of the checkpoint's cameras {list(self.cameras)}, "
                f"got {sent}"
            )
        self.sent_cameras = [c for c in self.cameras if c in sent]  # LeRobot's order: present, then empty ones
        self.empty_cameras = [c for c in self.cameras if c not in sent]

    @classmethod
    def from_lerobot(cls, path: str | Path, settings: Pi0Config | None = None, dtype: torch.dtype = torch.float32
                     ) -> Pi0:
        """A LeRobot checkpoint directory, its modules built in ``dtype``."""
        settings = settings or cls.settings_class()
        what = {"pi0": "π0", "pi05": "π0.5"}[cls.policy_type]
        config, state, stats = read_lerobot_checkpoint(path, (cls.policy_type,), what)
        file = str(Path(path) / "model.safetensors")
        try:
            sizes = pi0_sizes(state)
        except KeyError as exc:
            missing = exc.args[0]
            raise InvalidInputError(f"{what} checkpoint {file!r}: expected π0's weights, no {missing!r}") from None
        heads = settings.vision_heads or _vision_heads(sizes["vision"]["hidden_size"])
        with built_in(dtype):
            flow = cls.flow_class(sizes, chunk_size=int(config["chunk_size"]), vision_heads=heads,
                                  min_period=float(config["min_period"]), max_period=float(config["max_period"]))
        tokenizer = PaliGemmaTokenizer(_tokenizer_dir(Path(path), settings.tokenizer, what), _token_length(
            Path(path), config), newline=cls.policy_type == "pi0")
        model = cls(config, flow, tokenizer, stats, settings.cameras)
        load_weights(model.model, Pi0Flow.lerobot_keys(state), file, what)
        if settings.num_steps is not None:
            model.config["num_inference_steps"] = settings.num_steps
        return model.eval()

    @classmethod
    def random_full_size(cls, cameras: dict[str, tuple[int, int]], state_dim: int = 4, action_dim: int = 4,
                         dtype: torch.dtype = torch.float32, **config: Any) -> Pi0:
        """π0 (π0.5) at full size (:data:`FULL_SIZE`) with RANDOM weights built in ``dtype``, identity normalisation
        and byte tokens: for throughput runs only. ``cameras``: name -> (height, width)."""
        config = {**FULL_SIZE["config"], "tokenizer_max_length": cls.full_size_tokens, **config,
                  "type": cls.policy_type,
                  "input_features": {**{f"observation.images.{c}": {"type": "VISUAL", "shape": [3, *hw]}
                                        for c, hw in cameras.items()},
                                     "observation.state": {"type": "STATE", "shape": [state_dim]}},
                  "output_features": {"action": {"type": "ACTION", "shape": [action_dim]}}}
        with built_in(dtype):
            flow = cls.flow_class(FULL_SIZE["sizes"], chunk_size=int(config["chunk_size"]),
                                  vision_heads=FULL_SIZE["vision_heads"])
        return cls(config, flow, ByteTokenizer(int(config["tokenizer_max_length"]))).eval()

    @property
    def num_steps(self) -> int:
        return int(self.config["num_inference_steps"])

    @property
    def observation_spec(self) -> ObservationSpec:
        return replace(super().observation_spec, cameras={c: self.cameras[c] for c in self.sent_cameras})

    def prepare(self, observations: Sequence[Observation]) -> dict[str, Any]:
        device = self.weight().device
        images = {c: torch.from_numpy(np.stack([o.images[c] for o in observations])).to(device).permute(0, 3, 1, 2)
                  .float() / 255.0 for c in self.sent_cameras}
        state = torch.from_numpy(np.stack([o.state for o in observations])).to(device).float()
        return self.prepare_tensors(images, state, [o.instruction for o in observations])

    def prepare_tensors(self, images: dict[str, torch.Tensor], state: torch.Tensor, instructions: Sequence[str]
                        ) -> dict[str, Any]:
        """:meth:`prepare` from tensors: ``images`` camera -> (B, 3, h, w) in [0, 1], ``state`` (B, state_dim)
        as the robot reports it, one instruction per row."""
        pixels, masks = self._images(images)
        state = self._state(state)
        return {"pixels": pixels, "prefix_args": (masks, *self._tokens(instructions)),
                "context": {"state": state.to(self.weight().dtype)}}

    def _images(self, images: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The cameras' prepared images (B, 3, S, S) and masks (B,): the sent cameras, then the empty ones."""
        param = self.weight()
        height, width = (int(n) for n in self.config["image_resolution"])
        pixels, masks = [], []
        for camera in self.sent_cameras:
            image = images[camera].to(param.device).float()
            pixels.append(resize_with_pad_centered(image, height, width).to(param.dtype))
            masks.append(torch.ones(image.shape[0], dtype=torch.bool, device=param.device))
        for _ in self.empty_cameras:
            pixels.append(-torch.ones_like(pixels[0]))
            masks.append(torch.zeros_like(masks[0]))
        return pixels, masks

    def _state(self, state: torch.Tensor) -> torch.Tensor:
        """The normalised state, zero-padded to max_state_dim (B, S), float32."""
        state = self.normalize("observation.state", "STATE", state.float().to(self.weight().device))
        return pad_last_dim(state, int(self.config["max_state_dim"]))

    def _tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, masks = zip(*(self.tokenizer(t) for t in texts), strict=True)
        device = self.weight().device
        return torch.from_numpy(np.stack(tokens)).to(device), torch.from_numpy(np.stack(masks)).to(device)

    def flow_extras(self, context: Context) -> tuple[torch.Tensor, ...]:
        return (torch.as_tensor(context["state"]),)


class Pi05(Pi0):
    """π0.5: the normalised state is written into the prompt; the flow reads the prefix cache alone."""

    policy_type: ClassVar[str] = "pi05"
    flow_class: ClassVar[type[Pi0Flow]] = Pi05Flow
    settings_class: ClassVar[type[Pi0Config]] = Pi05Config
    full_size_tokens: ClassVar[int] = 200  # LeRobot's: the prompt carries the state's bins

    @property
    def observation_spec(self) -> ObservationSpec:
        """The instruction shares the prompt with the state: a tokenizer that refuses long text (the random-weight
        stand-in) leaves it what the rest of the prompt does not take."""
        spec = super().observation_spec
        if spec.max_instruction_bytes is None:
            return spec
        rest = len(state_prompt("", np.ones(int(self.config["max_state_dim"]))).encode())  # 3-digit bins: the most
        return replace(spec, max_instruction_bytes=max(0, spec.max_instruction_bytes - rest))

    def prepare_tensors(self, images: dict[str, torch.Tensor], state: torch.Tensor, instructions: Sequence[str]
                        ) -> dict[str, Any]:
        pixels, masks = self._images(images)
        rows = self._state(state).cpu().numpy()
        tokens = self._tokens([state_prompt(text, row) for text, row in zip(instructions, rows, strict=True)])
        return {"pixels": pixels, "prefix_args": (masks, *tokens), "context": {}}

    def flow_extras(self, context: Context) -> tuple[torch.Tensor, ...]:
        return ()


def _vision_heads(width: int) -> int:
    """SigLIP's head count, which the weights do not hold: so400m (PaliGemma's, width 1152) has 16; other widths
    (test-sized towers) are taken to use heads of 16 dims."""
    return 16 if width == 1152 else max(1, width // 16)


def _preprocessor_step(root: Path, name: str) -> dict[str, Any] | None:
    file = root / "policy_preprocessor.json"
    if not file.is_file():
        return None
    steps = json.loads(file.read_text()).get("steps", [])
    return next((s.get("config", {}) for s in steps if s.get("registry_name") == name), None)


def _token_length(root: Path, config: dict[str, Any]) -> int:
    step = _preprocessor_step(root, "tokenizer_processor") or {}
    return int(step.get("max_length", config.get("tokenizer_max_length", 48)))


def _tokenizer_dir(root: Path, override: str | None, what: str) -> Path:
    step = _preprocessor_step(root, "tokenizer_processor") or {}
    name = override or step.get("tokenizer_name") or "google/paligemma-3b-pt-224"
    candidates = [Path(name)] if Path(name).is_absolute() else [Path(name), root / name, root.parent / name]
    for candidate in candidates:
        if (candidate / "tokenizer.json").is_file() or (candidate / "tokenizer.model").is_file():
            return candidate
    raise InvalidInputError(
        f"{what} checkpoint {str(root)!r}: its tokenizer {name!r} was not found as a directory with tokenizer.json "
        f"(tried {[str(c) for c in candidates]}); no model hub is reached: copy PaliGemma's tokenizer beside the "
        "checkpoint, or point policy.model.tokenizer at it"
    )


def _build(cls: type[Pi0], config: AurasConfig) -> Policy:
    settings = cls.settings_class.parse(config.policy.model)
    refuse_scaling(config, cls.policy_type)
    dtype = torch_dtype(config.policy.dtype)
    if config.policy.checkpoint:
        model = cls.from_lerobot(config.policy.checkpoint, settings, dtype)
    else:
        size = config.env.image_size
        model = cls.random_full_size({"front": (size, size)}, dtype=dtype)
        if settings.num_steps is not None:
            model.config["num_inference_steps"] = settings.num_steps
    return model.as_policy(config.policy.execute_steps, name=cls.policy_type)


def build_pi0(config: AurasConfig) -> Policy:
    """The registry's factory for ``pi0``: ``policy.checkpoint`` (a LeRobot π0 directory) or, without one, the
    full-size architecture with random weights and the env's image size."""
    return _build(Pi0, config)


def build_pi05(config: AurasConfig) -> Policy:
    """The registry's factory for ``pi05`` (as :func:`build_pi0`)."""
    return _build(Pi05, config)
