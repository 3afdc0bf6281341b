"""Training samples from a ReplayDataset: (observation at t, actions t..t+H-1).

Actions past the end of an episode repeat its last action (as Diffusion Policy pads), so every
step of every episode is a sample. The whole dataset is read into memory once (84x84 frames:
~21 KB each; 60k frames ~1.3 GB).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auras.data.dataset import ReplayDataset
from auras.errors import InvalidInputError

__all__ = ["ChunkSamples"]


class ChunkSamples:
    """Indexable samples: dict(image (S,S,3) uint8, state (4,), actions (H, A), task int)."""

    def __init__(self, dataset: ReplayDataset, horizon: int, tasks: Sequence[str] | None = None) -> None:
        if horizon < 1:
            raise InvalidInputError(f"horizon: expected >= 1, got {horizon}")
        names = list(dataset.attrs["tasks"])
        wanted = list(tasks) if tasks else names
        missing = [t for t in wanted if t not in names]
        if missing:
            raise InvalidInputError(f"tasks {missing} are not in dataset {str(dataset.path)!r} (it has {names})")
        ends = dataset.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        episode_task = dataset.episode_task
        keep = [i for i in range(len(ends)) if names[int(episode_task[i])] in wanted]
        images, states, actions = (
            dataset.array("image_front"),
            dataset.array("state"),
            dataset.array("action"),
        )
        self.tasks = wanted
        self.instructions = [dataset.attrs["instructions"][names.index(t)] for t in wanted]
        self.horizon = horizon
        parts_img, parts_state, parts_act, parts_idx, parts_task = [], [], [], [], []
        offset = 0
        for i in keep:
            s, e = int(starts[i]), int(ends[i])
            parts_img.append(images[s:e])
            parts_state.append(states[s:e])
            act = actions[s:e]
            parts_act.append(act)
            length = e - s
            steps = np.arange(length)[:, None] + np.arange(horizon)[None, :]  # (T, H)
            parts_idx.append(offset + np.minimum(steps, length - 1))
            parts_task.append(np.full(length, wanted.index(names[int(episode_task[i])]), np.int64))
            offset += length
        if not keep:
            raise InvalidInputError(f"dataset {str(dataset.path)!r} has no episodes of tasks {wanted}")
        self.images = np.concatenate(parts_img)  # (N, S, S, 3) uint8
        self.states = np.concatenate(parts_state).astype(np.float32)  # (N, 4)
        self.actions = np.concatenate(parts_act).astype(np.float32)  # (N, A)
        self.chunk_index = np.concatenate(parts_idx)  # (N, H) rows of self.actions
        self.task = np.concatenate(parts_task)  # (N,)
        self.episodes = len(keep)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Samples ``index`` (B,) stacked: image (B,S,S,3) uint8, state (B,4), actions (B,H,A), task (B,)."""
        return {
            "image": self.images[index],
            "state": self.states[index],
            "actions": self.actions[self.chunk_index[index]],
            "task": self.task[index],
        }
