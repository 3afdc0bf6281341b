"""Compiled stages: ``torch.compile`` around one stage callable, with shapes held static.

``policy.compile`` is ``off``, ``default`` or ``reduce-overhead`` (torch.compile's modes). A policy
that supports it wraps each of its stage callables (a perception stage, the network of one denoising
step, one merged causal pass) in a :class:`CompiledStage` when its hosting worker asks
(``PolicyPart.compile``). On a CPU torch compiles through inductor to C++; on a GPU ``default``
becomes Triton kernels and ``reduce-overhead`` also captures them in a CUDA graph, replayed with one
launch per stage: the launch mechanism the pipeline's short stages need.

Static shapes: a graph (and a CUDA graph above all) serves one input shape. The frame pipeline
batches every in-flight request's stage into one call, so the batch grows while the pipeline fills
and shrinks when a request leaves a denoising stage early. A :class:`CompiledStage` therefore pads
every batch-first tensor argument to ``batch`` rows (one robot's in-flight maximum, given by the
worker) by repeating the last row, runs the one graph, and slices every batch-first output back to
the rows asked for. Rows are independent in every stage auras compiles (no batch statistics), so
padding never changes a real row's result. A frame engine batches many robots' rows: a larger batch
pads to the next size of ``batch`` x 2^k (one graph per size, as LLM servers capture CUDA graphs per
batch bucket), so a fleet of up to N robots compiles at most log2(N) + 1 graphs per stage, and a
small frame after a large one pads to its own size, not the largest.

Compile time is startup, not throughput: every call that met a new input signature (and therefore
compiled) is timed, and :func:`compile_stats` reports the total for this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from auras.errors import ConfigError

__all__ = ["COMPILE_MODES", "CompileStats", "CompiledStage", "check_compile_mode", "compile_stats"]

COMPILE_MODES = ("off", "default", "reduce-overhead")
BACKEND: Any = "inductor"
"""torch.compile's backend for every CompiledStage built without one (tests count graphs with their own)."""

_lock = threading.Lock()
_totals = {"graphs": 0, "ms": 0.0}


@dataclass(frozen=True, slots=True)
class CompileStats:
    """This process's compiled stages: input signatures compiled and the time their first calls took."""

    graphs: int
    compile_ms: float


def compile_stats() -> CompileStats:
    with _lock:
        return CompileStats(int(_totals["graphs"]), float(_totals["ms"]))


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ConfigError(f"policy.compile: expected one of {list(COMPILE_MODES)}, got {mode!r}")
    return mode


RECOMPILE_LIMIT = 1024
"""Graphs dynamo keeps per code object. A policy's layer stages share one function (``partial(layer, i)`` for every
layer), and each layer index is a graph of its own: dynamo's default (8) would run every layer past the eighth
eagerly, without a word."""


def _allow_a_graph_per_stage(torch: Any) -> None:
    config = torch._dynamo.config
    for name, limit in (("recompile_limit", RECOMPILE_LIMIT), ("accumulated_recompile_limit", 4 * RECOMPILE_LIMIT)):
        if hasattr(config, name) and getattr(config, name) < limit:
            setattr(config, name, limit)


class CompiledStage:
    """``fn`` under ``torch.compile(mode=mode, dynamic=False)``, called with its batch padded to ``batch`` rows
    (or to ``batch`` x 2^k for more: :meth:`padded_size`).

    ``fn``'s tensor arguments (also inside dicts, lists and tuples) are batch-first with one batch
    size B; tensors whose first dimension is not B (shared tables) pass unchanged. Outputs whose
    first dimension is the padded size are cut back to B. ``backend``: torch.compile's backend
    (default :data:`BACKEND`, inductor).
    """

    def __init__(self, fn: Callable[..., Any], mode: str, batch: int = 1, backend: Any = None) -> None:
        import torch

        if check_compile_mode(mode) == "off":
            raise ConfigError("CompiledStage: mode 'off' compiles nothing; call the stage itself")
        if batch < 1:
            raise ConfigError(f"CompiledStage: expected a batch of at least 1 row, got {batch}")
        self.fn, self.mode, self.batch = fn, mode, batch
        self.graphs = 0  # input signatures compiled by this stage
        self.compile_ms = 0.0
        backend = BACKEND if backend is None else backend
        options = {"mode": None if mode == "default" else mode} if backend == "inductor" else {}
        _allow_a_graph_per_stage(torch)
        self._compiled = torch.compile(fn, dynamic=False, backend=backend, **options)
        self._seen: set[tuple[Any, ...]] = set()
        self._graphed = mode == "reduce-overhead"

    def padded_size(self, rows: int) -> int:
        """The rows a call of ``rows`` runs with: ``batch``, or the smallest ``batch`` x 2^k that holds them."""
        size = self.batch
        while size < rows:
            size *= 2
        return size

    def __call__(self, *args: Any) -> Any:
        import torch

        rows = _batch_size(args)
        if rows is None or rows == 0:
            return self.fn(*args)  # nothing batch-first to hold static: run as is
        size = self.padded_size(rows)
        padded = _map_tensors(args, lambda t: _pad(t, rows, size))
        signature = _signature(padded)
        first = signature not in self._seen
        start = time.perf_counter()
        if self._graphed:
            torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are no longer read
        out = self._compiled(*padded)
        # a CUDA graph's outputs live in memory its next replay overwrites: hand out copies
        out = _map_tensors(out, lambda t: _cut(t, rows, size, copy=self._graphed))
        if first:
            self._seen.add(signature)
            spent = (time.perf_counter() - start) * 1e3
            self.graphs += 1
            self.compile_ms += spent
            with _lock:
                _totals["graphs"] += 1
                _totals["ms"] += spent
        return out


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    if _is_tensor(value):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def _first_tensor(value: Any) -> Any:
    if _is_tensor(value):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _batch_size(args: tuple[Any, ...]) -> int | None:
    first = _first_tensor(args)
    return int(first.shape[0]) if first is not None and first.dim() > 0 else None


def _pad(t: Any, rows: int, batch: int) -> Any:
    import torch

    if t.dim() == 0 or t.shape[0] != rows or rows == batch:
        return t
    return torch.cat([t, t[-1:].expand(batch - rows, *t.shape[1:])])


def _cut(t: Any, rows: int, batch: int, copy: bool) -> Any:
    if t.dim() > 0 and t.shape[0] == batch and rows != batch:
        t = t[:rows]
    return t.clone() if copy else t


def _signature(args: Any) -> tuple[Any, ...]:
    found: list[Any] = []
    _map_tensors(args, lambda t: found.append((tuple(t.shape), t.dtype, t.device.type)))
    return tuple(found)
