"""Contexts as data: batching the rows of several requests, and moving a context between processes
and devices.

A context is a flat mapping ``name -> batch-first tensor or array`` of any shape (see
:mod:`auras.perception.base`). :func:`concat_contexts` joins the contexts of several requests into
one batch (row b = request b), which is how the generation worker feeds one batched call.

Between processes a context travels as a :class:`NumpyContext`: every tensor as a host numpy array
(Ray channels and the object store move those as raw buffers, never as pickled tensors), with its
torch dtype recorded. Reduced precision crosses intact: a bfloat16 tensor, which numpy cannot hold,
travels as its raw 16-bit pattern and comes back as the same bfloat16 values. :func:`as_torch`
restores tensors and puts them on the receiving worker's device. A CUDA worker moves them through
pinned (page-locked) host memory with non-blocking copies (``pinned=True``): the device-to-host copies
of every key are queued and waited for once, and the host-to-device copies overlap the receiver's
work on its stream. :func:`transport_name` says which of these paths a pair of workers uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auras.errors import InvalidInputError

__all__ = [
    "TRANSPORTS",
    "NumpyContext",
    "as_numpy",
    "as_torch",
    "concat_contexts",
    "concat_rows",
    "context_batch_size",
    "split_rows",
    "transport_name",
]

TRANSPORTS = {
    "in-process": "one process: the context's tensors are handed over as they are (moved if the devices differ)",
    "host": "host numpy arrays through Ray's shared-memory channels (CPU workers)",
    "pinned-host": "device -> pinned host memory -> Ray's shared-memory channels -> pinned host -> device, "
    "non-blocking copies (CUDA workers)",
}

# torch dtypes numpy has no type for travel as raw bits of the same width
_RAW_BITS = {"bfloat16": "int16"}


@dataclass(frozen=True, slots=True)
class NumpyContext:
    """A context in transit between processes: every array as numpy; ``torch_dtypes`` maps each key
    that was a torch tensor to its torch dtype name."""

    arrays: dict[str, Any]
    torch_dtypes: dict[str, str]


def context_batch_size(context: Any) -> int:
    """B of a context (the length of its first entry)."""
    for value in context.values():
        return len(value)
    raise InvalidInputError("context: expected at least one named tensor, got an empty mapping")


def concat_contexts(contexts: Sequence[Any]) -> dict[str, Any]:
    """Join contexts row-wise: each key's tensors (or arrays) concatenated along dim 0.

    Every context must have the same keys and, per key, the same shape past the batch dimension.
    A single context is returned as it is (no copy).
    """
    if not contexts:
        raise InvalidInputError("concat_contexts: expected at least one context, got none")
    if len(contexts) == 1:
        return dict(contexts[0])
    keys = list(contexts[0])
    joined: dict[str, Any] = {}
    for name in keys:
        parts = []
        for i, context in enumerate(contexts):
            if name not in context or len(context) != len(keys):
                raise InvalidInputError(
                    f"concat_contexts: expected every context to have keys {keys}, context {i} has {list(context)}"
                )
            parts.append(context[name])
        joined[name] = _cat(name, parts)
    return joined


def _cat(name: str, parts: list[Any]) -> Any:
    tails = {tuple(p.shape[1:]) for p in parts}
    if len(tails) > 1:
        raise InvalidInputError(f"concat_contexts: key {name!r} has rows of different shapes {sorted(tails)}")
    if hasattr(parts[0], "detach"):
        import torch

        return torch.cat([torch.as_tensor(p) for p in parts])
    return np.concatenate([np.asarray(p) for p in parts])


def concat_rows(values: Sequence[Any]) -> Any:
    """Join values of the same structure row-wise: nested mappings of batch-first tensors or arrays (a
    perception stage's carry) are joined leaf by leaf along dim 0. TypeError for anything else (the
    caller then runs the values one at a time)."""
    first = values[0]
    if isinstance(first, dict):
        if any(not isinstance(v, dict) or v.keys() != first.keys() for v in values):
            raise TypeError("concat_rows: mappings with different keys")
        return {k: concat_rows([v[k] for v in values]) for k in first}
    if not all(hasattr(v, "shape") and len(v.shape) > 0 for v in values):
        raise TypeError(f"concat_rows: expected batch-first tensors or arrays, got {type(first).__name__}")
    return _cat("row", list(values))


def split_rows(value: Any, counts: Sequence[int]) -> list[Any]:
    """Undo :func:`concat_rows`: ``value``'s rows cut into consecutive groups of ``counts`` rows, each with
    the same structure. TypeError when a leaf is not batch-first with ``sum(counts)`` rows."""
    if isinstance(value, dict):
        parts = {k: split_rows(v, counts) for k, v in value.items()}
        return [{k: parts[k][i] for k in value} for i in range(len(counts))]
    if not hasattr(value, "shape") or len(value.shape) == 0 or value.shape[0] != sum(counts):
        raise TypeError(f"split_rows: expected a batch-first tensor or array of {sum(counts)} rows")
    out, start = [], 0
    for count in counts:
        out.append(value[start : start + count])
        start += count
    return out


def transport_name(in_process: bool, *devices: str) -> str:
    """The path a context takes between workers on ``devices`` (a key of :data:`TRANSPORTS`)."""
    if in_process:
        return "in-process"
    return "pinned-host" if any(d.startswith("cuda") for d in devices) else "host"


def as_numpy(context: Any, pinned: bool = False) -> NumpyContext:
    """Torch tensors -> host numpy arrays (no copy for contiguous CPU tensors of numpy dtypes).
    ``pinned``: device tensors are copied into page-locked host memory, all copies queued before one wait."""
    if pinned:
        context = _to_pinned_host(context)
    arrays, dtypes = {}, {}
    for name, value in context.items():
        if hasattr(value, "detach"):
            tensor = value.detach().cpu()
            dtype = str(tensor.dtype).removeprefix("torch.")
            dtypes[name] = dtype
            if dtype in _RAW_BITS:
                import torch

                tensor = tensor.contiguous().view(getattr(torch, _RAW_BITS[dtype]))
            arrays[name] = tensor.numpy()
        else:
            arrays[name] = value
    return NumpyContext(arrays, dtypes)


def _to_pinned_host(context: Any) -> dict[str, Any]:
    import torch

    out, waited = {}, False
    for name, value in context.items():
        if hasattr(value, "detach") and value.device.type == "cuda":
            host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            host.copy_(value.detach(), non_blocking=True)
            out[name], waited = host, True
        else:
            out[name] = value
    if waited:
        torch.cuda.current_stream().synchronize()  # the copies are queued on this stream; wait once
    return out


def as_torch(context: Any, device: str | None = None, pinned: bool = False) -> Any:
    """Undo :func:`as_numpy`: tensors come back (as copies of the possibly read-only received buffers)
    with their original dtype, on ``device`` when given. A context that never left its process is
    returned as it is, moved to ``device`` when given. ``pinned`` (a CUDA ``device``): the copy of each
    received buffer is page-locked, so its copy to the device does not block the caller."""
    if not isinstance(context, NumpyContext):
        if device is None:
            return context
        return {k: v.to(device, non_blocking=True) if hasattr(v, "detach") else v for k, v in context.items()}
    if not context.torch_dtypes:  # a numpy-only context (no torch needed to receive it)
        return dict(context.arrays)
    import torch

    out = {}
    for name, value in context.arrays.items():
        dtype = context.torch_dtypes.get(name)
        if dtype is None:
            out[name] = value
            continue
        array = np.asarray(value)
        if pinned and device not in (None, "cpu"):
            like = torch.from_numpy(np.empty(0, array.dtype)).dtype
            tensor = torch.empty(array.shape, dtype=like, pin_memory=True)
            tensor.numpy()[...] = array  # our own copy: the received buffer may be read-only and reused
        else:
            tensor = torch.from_numpy(np.array(array))
        if dtype in _RAW_BITS:
            tensor = tensor.view(getattr(torch, dtype))
        out[name] = tensor.to(device, non_blocking=True) if device not in (None, "cpu") else tensor
    return out
