"""SmolVLA as an auras policy: LeRobot SmolVLA checkpoints by path, or random weights at full size.

``policy.type=smolvla`` with ``policy.checkpoint=DIR`` loads a LeRobot SmolVLA checkpoint directory:
``config.json`` (``"type": "smolvla"``), ``model.safetensors`` and the normalisation statistics LeRobot
saves beside them (``policy_preprocessor_step_*_normalizer_processor.safetensors``). The VLM's
configuration comes from ``vlm_model_name``: a directory (absolute, or relative to the checkpoint or its parent)
holding a SmolVLM ``config.json`` (and ``tokenizer.json``), or the name of SmolVLM2-500M, whose
configuration auras carries. Without a checkpoint the same class is built at SmolVLA's full size
(SmolVLM2-500M truncated to 16 layers, a 0.75-wide expert: about 450 M parameters) with RANDOM
weights, for throughput runs; instruction tokens then come from a byte-level stand-in tokenizer.

The split is the family's (:mod:`auras.policies.flow_vla`; architecture in :mod:`auras.policies.smolvla_model`):

- perception: observations -> images resized with padding to ``resize_imgs_with_padding`` and scaled
  to [-1, 1], state normalised as the checkpoint says and zero-padded (the prefix's last token),
  the instruction (with a trailing newline) tokenized and padded to ``tokenizer_max_length`` (a fixed
  prefix length, so contexts of different requests batch); then the vision encoder layer by layer,
  the connector and prefix assembly, and the text model layer by layer. The context is the
  per-layer prefix cache ``kv.{i}.key`` / ``kv.{i}.value`` (B, N, Hkv, D) plus ``prefix_pad`` (B, N).
- generation (family ``denoising``): ``num_steps`` Euler steps of the flow over the chunk through the
  expert. Actions are the first ``action_dim`` columns, unnormalised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from auras.errors import InvalidInputError
from auras.policies.base import Policy
from auras.policies.flow_vla import ByteTokenizer, FlowVLA, read_lerobot_checkpoint
from auras.policies.modules import cached_encoder, load_weights, refuse_scaling
from auras.policies.smolvla_config import SmolVLAConfig
from auras.policies.smolvla_model import SMOLVLM2_500M, SmolVLAFlow, pad_last_dim, resize_with_pad
from auras.types import Observation

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


def load_lerobot_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """A LeRobot SmolVLA checkpoint directory -> (config, state dict, normalisation stats by feature)."""
    config, state, stats = read_lerobot_checkpoint(path, ("smolvla",), "SmolVLA")
    return {**FULL_SIZE, **config}, state, stats


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
        self._encode = cached_encoder(self._encode_text)

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
        return self._encode(text)

    def _encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = self._tokenizer.encode(text if text.endswith("\n") else text + "\n").ids[: self.length]
        tokens, mask = np.zeros(self.length, np.int64), np.zeros(self.length, bool)
        tokens[: len(ids)], mask[: len(ids)] = ids, True
        return tokens, mask


class SmolVLA(FlowVLA):
    """SmolVLA's weights (``model``: LeRobot's module tree) with its normalisation and tokenizer."""

    policy_type: ClassVar[str] = "smolvla"

    def __init__(self, config: dict[str, Any], vlm_config: Any, tokenizer: Callable[[str], Any],
                 stats: dict[str, Any] | None = None) -> None:
        """``config``: LeRobot's SmolVLA config keys (see FULL_SIZE); ``vlm_config``: a SmolVLMConfig;
        ``tokenizer``: instruction -> (tokens, mask) of ``tokenizer_max_length``; ``stats``: feature ->
        mean/std/min/max tensors (required for every normalised feature)."""
        super().__init__(config, tokenizer, stats)
        self.model = SmolVLAFlow(vlm_config, config)

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
        load_weights(model, state, str(Path(path) / "model.safetensors"), "SmolVLA")
        return model.eval()

    @property
    def num_steps(self) -> int:
        return int(self.config["num_steps"])

    def prepare(self, observations: Sequence[Observation]) -> dict[str, Any]:
        """Images resized with padding and scaled to [-1, 1]; the normalised state zero-padded (the prefix's last
        token); the instruction tokens."""
        param = self.weight()
        flow, pixels = self.model, []
        height, width = self.config["resize_imgs_with_padding"] or (None, None)
        for camera in self.cameras:
            image = torch.from_numpy(np.stack([o.images[camera] for o in observations])).to(param.device)
            image = image.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, h, w) in [0, 1]
            if height is not None:
                image = resize_with_pad(image, int(height), int(width))
            pixels.append((image * 2.0 - 1.0).to(param.dtype))
        state = torch.from_numpy(np.stack([o.state for o in observations])).to(param.device).float()
        state = pad_last_dim(self.normalize("observation.state", "STATE", state), flow.state_proj.in_features)
        tokens, masks = zip(*(self.tokenizer(o.instruction) for o in observations), strict=True)
        lang = (torch.from_numpy(np.stack(tokens)).to(param.device), torch.from_numpy(np.stack(masks)).to(param.device))
        return {"pixels": pixels, "prefix_args": (*lang, state.to(param.dtype)), "context": {}}


def build_smolvla(config: AurasConfig) -> Policy:
    """The registry's factory: ``policy.checkpoint`` (a LeRobot SmolVLA directory) or, without one, the
    full-size architecture with random weights and the env's image size."""
    refuse_scaling(config, "smolvla")
    if config.policy.checkpoint:
        model = SmolVLA.from_lerobot(config.policy.checkpoint)
    else:
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
