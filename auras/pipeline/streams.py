"""CUDA streams for perception and generation sharing one GPU in one process.

With ``fetch_offset`` -1 the frame executor runs a frame's perception (in a worker thread) and its
generation (in the caller's thread) at the same time. On one GPU that overlap exists only if their
kernels go to different CUDA streams: :class:`StagePairStreams` gives each side its own stream
(``torch.cuda.Stream``), waits for perception's stream before its contexts are handed over (in
perception's thread, so generation never blocks on it), and marks every handed-over tensor as used
by generation's stream (``Tensor.record_stream``) so the caching allocator does not reuse its memory
for perception while generation may still read it. On the CPU every method is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["StagePairStreams"]


class StagePairStreams:
    """A perception stream and a generation stream on ``device`` (``cuda`` / ``cuda:N``; else no-ops)."""

    def __init__(self, device: str) -> None:
        self.enabled = device.startswith("cuda")
        self._streams: dict[str, Any] = {}
        if self.enabled:
            import torch

            self._streams = {role: torch.cuda.Stream(device=device) for role in ("perception", "generation")}

    @contextlib.contextmanager
    def on(self, role: str) -> Iterator[None]:
        """Queue the calling thread's kernels on ``role``'s stream (``perception`` or ``generation``)."""
        if not self.enabled:
            yield
            return
        import torch

        with torch.cuda.stream(self._streams[role]):
            yield

    def hand_over(self, contexts: Iterable[Any]) -> None:
        """Called by perception after it finished ``contexts`` (mappings of tensors): wait for its
        stream, then tie the tensors' memory to generation's stream."""
        if not self.enabled:
            return
        self._streams["perception"].synchronize()
        generation = self._streams["generation"]
        for context in contexts:
            for value in context.values():
                if hasattr(value, "record_stream") and value.device.type == "cuda":
                    value.record_stream(generation)

    def names(self) -> dict[str, str]:
        """Role -> stream, for reports (empty on the CPU)."""
        return {role: repr(stream) for role, stream in self._streams.items()}
