"""Byte-level instruction tokenizer (no vocabulary files, nothing to download).

Token id = UTF-8 byte + 1; id 0 is padding. Instructions longer than ``max_length`` bytes are
rejected rather than silently cut.
"""

from __future__ import annotations

import numpy as np

from auras.errors import InvalidInputError

__all__ = ["PAD_ID", "VOCAB_SIZE", "encode_instruction"]

PAD_ID = 0
VOCAB_SIZE = 257


def encode_instruction(text: str, max_length: int) -> np.ndarray:
    """(max_length,) int64: byte ids + 1, right-padded with 0."""
    data = text.strip().encode("utf-8")
    if not data:
        raise InvalidInputError("instruction: expected non-empty text, got ''")
    if len(data) > max_length:
        raise InvalidInputError(
            f"instruction: expected at most {max_length} UTF-8 bytes for this policy, got {len(data)}: {text!r}"
        )
    ids = np.zeros(max_length, np.int64)
    ids[: len(data)] = np.frombuffer(data, np.uint8).astype(np.int64) + 1
    return ids
