"""tiny-vla's perception and generation halves over a :class:`~auras.policies.tiny_vla.modeling.TinyVLA`
(what the runtime schedules); the model itself is in modeling.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from auras.compiled import CompiledStage
from auras.generation.base import AutoregressiveGeneration
from auras.perception.base import Context, Perception
from auras.policies.torch_policy import (
    ModelPart,
    image_to_tensor,
    observations_to_batch,
)
from auras.types import Observation, ObservationSpec

if TYPE_CHECKING:
    from auras.policies.tiny_vla.modeling import TinyVLA

__all__ = ["TinyVLAGeneration", "TinyVLAPerception"]

class TinyVLAPerception(ModelPart, Perception):
    def __init__(self, model: TinyVLA) -> None:
        self.model = model
        size = model.config["image_size"]
        self._spec = ObservationSpec({"front": (size, size)}, state_dim=model.config["action_dim"],
                                     max_instruction_bytes=model.max_instruction_bytes)
        self._stages = self._build_stages()  # built once: perceive runs them every request

    def compile(self, mode: str, batch: int = 1) -> None:
        """Each stage's ViT layer range and the context head (projection, resampler, proprio, text), compiled."""
        self._stages = self._build_stages(lambda fn: CompiledStage(fn, mode, batch))

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def perceive(self, observations: Sequence[Observation]) -> Context:
        x: Any = observations
        for stage in self._stages:
            x = stage(x)
        return x

    def stages(self) -> list[Callable[[Any], Any]]:
        """``perception_stages`` stages: ViT layer ranges; the first also reads the observations, the last
        also projects and adds the proprio and language tokens."""
        return list(self._stages)

    def _build_stages(self, wrap: Callable[[Callable], Callable] = lambda fn: fn) -> list[Callable[[Any], Any]]:
        """The stages around the model's tensor functions, each passed through ``wrap`` (compile)."""
        model = self.model
        vit = [wrap(stage) for stage in model.vision_stages(model.config["perception_stages"])]
        finish = wrap(model._finish_context)

        def first(observations: Sequence[Observation]) -> dict[str, Any]:
            param = next(model.parameters())  # the model's device and dtype (cuda, bfloat16, ...)
            batch = {
                k: v.to(param.device)
                for k, v in observations_to_batch(observations, model.max_instruction_bytes).items()
            }
            batch["state"] = batch["state"].to(param.dtype)
            with torch.inference_mode():
                return {"tokens": vit[0](image_to_tensor(batch["image"]).to(param.dtype)), "batch": batch}

        def middle(stage: Callable) -> Callable[[dict[str, Any]], dict[str, Any]]:
            def run(x: dict[str, Any]) -> dict[str, Any]:
                with torch.inference_mode():
                    return {"tokens": stage(x["tokens"]), "batch": x["batch"]}

            return run

        def last(x: dict[str, Any]) -> Context:
            with torch.inference_mode():
                return finish(x["tokens"], x["batch"])

        return [first, *(middle(s) for s in vit[1:]), last] if len(vit) > 1 else [first, last]


class TinyVLAGeneration(ModelPart, AutoregressiveGeneration):
    def __init__(self, model: TinyVLA) -> None:
        self.model = model
        self._merged_logits: Callable[..., torch.Tensor] = model.merged_logits  # one merged causal pass

    def compile(self, mode: str, batch: int = 1) -> None:
        """The merged causal pass, compiled for ``batch`` rows. The KV-cached classic decode (one block,
        and the startup decode) stays eager: its cache grows by one position per token."""
        self._merged_logits = CompiledStage(self.model.merged_logits, mode, batch)

    @property
    def action_dim(self) -> int:
        return self.model.config["action_dim"]

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (self.model.chunk_horizon, self.action_dim)

    @property
    def num_action_tokens(self) -> int:
        return self.model.num_action_tokens

    def decode_classic(self, context: Context) -> torch.Tensor:
        """Token ids (B, l_a) on the CPU, wherever the model runs."""
        with torch.inference_mode():
            return self.model.decode_classic(context).cpu()

    def merged_logits(self, context: Context, action_tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._merged_logits(context, self._on_device(action_tokens))

    def next_tokens(self, context: Context, action_tokens: torch.Tensor) -> torch.Tensor:
        """Greedy ids (B, l_a) on the CPU (the driver keeps token state in numpy)."""
        with torch.inference_mode():
            logits = self._merged_logits(context, self._on_device(action_tokens))  # (B, l_a, V)
            return self.model.select_tokens(logits).cpu()  # BOS is never chosen

    def _on_device(self, tokens: Any) -> torch.Tensor:
        return torch.as_tensor(tokens, device=next(self.model.parameters()).device)

    def detokenize(self, token_ids: torch.Tensor) -> np.ndarray:
        return self.model.detokenize(torch.as_tensor(token_ids))
