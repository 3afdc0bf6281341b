"""OpenVLA-style action tokenizer: uniform bins per action dimension, bounds from the data.

Each dimension d is cut into ``n_bins`` equal bins between ``low[d]`` and ``high[d]``; a value maps
to the index of its bin (values outside the bounds clip to the end bins) and a token maps back to
its bin centre, so the round trip error of an in-bounds value is at most half a bin.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auras.errors import InvalidInputError

__all__ = ["ActionTokenizer"]


class ActionTokenizer:
    def __init__(self, low: np.ndarray, high: np.ndarray, n_bins: int = 256) -> None:
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if low.shape != high.shape or low.ndim != 1:
            raise InvalidInputError(
                f"ActionTokenizer: expected 1-d low/high of equal shape, got {low.shape}, {high.shape}"
            )
        if not np.all(high > low):
            raise InvalidInputError(f"ActionTokenizer: expected high > low in every dimension, got {low} / {high}")
        if n_bins < 2:
            raise InvalidInputError(f"ActionTokenizer: expected n_bins >= 2, got {n_bins}")
        self.low, self.high, self.n_bins = low, high, int(n_bins)

    @classmethod
    def fit(cls, actions: np.ndarray, n_bins: int = 256, margin: float = 1e-6) -> ActionTokenizer:
        """Bounds = per-dimension min and max of ``actions`` (N, A) (widened by ``margin`` if flat)."""
        actions = np.asarray(actions, np.float64).reshape(-1, np.shape(actions)[-1])
        low, high = actions.min(0), actions.max(0)
        flat = high - low < margin
        return cls(np.where(flat, low - margin, low), np.where(flat, high + margin, high), n_bins)

    @property
    def action_dim(self) -> int:
        return int(self.low.shape[0])

    @property
    def bin_width(self) -> np.ndarray:
        return (self.high - self.low) / self.n_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """(..., A) float -> (..., A) int64 token ids in [0, n_bins)."""
        actions = np.asarray(actions, np.float64)
        if actions.shape[-1] != self.action_dim:
            raise InvalidInputError(f"encode: expected (..., {self.action_dim}) actions, got {actions.shape}")
        ids = np.floor((actions - self.low) / self.bin_width).astype(np.int64)
        return np.clip(ids, 0, self.n_bins - 1)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """(..., A) token ids -> (..., A) float32 bin centres."""
        ids = np.asarray(ids)
        if ids.shape[-1] != self.action_dim:
            raise InvalidInputError(f"decode: expected (..., {self.action_dim}) token ids, got {ids.shape}")
        ids = np.clip(ids, 0, self.n_bins - 1)
        return (self.low + (ids + 0.5) * self.bin_width).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "n_bins": self.n_bins}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionTokenizer:
        return cls(np.array(data["low"]), np.array(data["high"]), int(data["n_bins"]))
