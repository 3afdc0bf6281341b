"""Action tokenizer and instruction bytes."""

from __future__ import annotations

import numpy as np
import pytest

from auras.errors import InvalidInputError
from auras.generation.tokenizer import ActionTokenizer
from auras.perception.text import encode_instruction


def test_round_trip_error_below_half_a_bin():
    rng = np.random.default_rng(0)
    actions = rng.uniform([-1, -0.5, 0, -2], [1, 0.5, 3, 2], size=(5000, 4))
    tok = ActionTokenizer.fit(actions, n_bins=256)
    ids = tok.encode(actions)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() <= 255
    error = np.abs(tok.decode(ids) - actions)
    assert np.all(error <= tok.bin_width / 2 + 1e-6)


def test_out_of_bounds_clip_to_end_bins_and_dict_round_trip():
    tok = ActionTokenizer(np.array([-1.0]), np.array([1.0]), n_bins=4)
    assert tok.encode(np.array([[-5.0], [5.0], [1.0]])).ravel().tolist() == [0, 3, 3]
    assert ActionTokenizer.from_dict(tok.to_dict()).encode(np.array([[0.1]])).item() == 2


def test_tokenizer_errors():
    with pytest.raises(InvalidInputError, match="expected high > low"):
        ActionTokenizer(np.array([1.0]), np.array([1.0]))
    tok = ActionTokenizer(np.zeros(4), np.ones(4))
    with pytest.raises(InvalidInputError, match=r"expected \(\.\.\., 4\) actions, got \(2, 3\)"):
        tok.encode(np.zeros((2, 3)))
    flat = ActionTokenizer.fit(np.zeros((10, 2)))  # constant data still gives valid bins
    assert np.all(flat.high > flat.low)


def test_instruction_bytes():
    ids = encode_instruction("push", 8)
    assert ids.tolist() == [ord("p") + 1, ord("u") + 1, ord("s") + 1, ord("h") + 1, 0, 0, 0, 0]
    with pytest.raises(InvalidInputError, match="expected at most 4 UTF-8 bytes for this policy, got 5"):
        encode_instruction("press", 4)
    with pytest.raises(InvalidInputError, match="expected non-empty text"):
        encode_instruction("  ", 4)
