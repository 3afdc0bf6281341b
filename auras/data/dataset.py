"""Demonstration datasets on disk: a Zarr store in Diffusion Policy's ReplayBuffer layout.

Why this format: Diffusion Policy (the model family tiny-dp follows) and many robot-learning codebases
store demonstrations as one Zarr group with every step of every episode concatenated along axis 0
and ``meta/episode_ends`` marking the episode boundaries. Zarr is chunked and compressed
(appending an episode writes only new chunks; reading step i touches one chunk), so datasets are
appendable and lazily loadable without holding everything in memory.

Layout::

    DIR/                         zarr group; attrs: format, version, image_size, state_dim,
                                 action_dim, cameras, tasks (names; index = task id)
      data/image_front   (N, S, S, 3) uint8   camera frames
      data/state         (N, 4)       float32 proprio (hand xyz, gripper)
      data/action        (N, 4)       float32 expert action applied at that step
      data/step          (N,)         int32   step index within its episode
      meta/episode_ends  (E,)         int64   exclusive end of each episode (cumulative)
      meta/episode_seed  (E,)         int64   env seed of each episode
      meta/episode_success (E,)       bool    whether the expert succeeded
      meta/episode_task  (E,)         int32   index into attrs["tasks"]

Instructions come from the task catalogue (``auras.tasks.TASKS[name].instruction``) and are
also recorded in ``attrs["instructions"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auras.errors import InvalidInputError

__all__ = ["Episode", "ReplayDataset"]

FORMAT = "auras-replay"
VERSION = 1
_STEP_CHUNK = 256


@dataclass(frozen=True, slots=True)
class Episode:
    """One episode's arrays (loaded on access from the store)."""

    index: int
    task: str
    instruction: str
    seed: int
    success: bool
    images: np.ndarray  # (T, S, S, 3) uint8
    state: np.ndarray  # (T, 4) float32
    action: np.ndarray  # (T, 4) float32


class ReplayDataset:
    """Open (or create) a dataset directory; append episodes; read steps and episodes lazily."""

    def __init__(
        self,
        path: str | Path,
        mode: str = "r",
        *,
        image_size: int = 84,
        state_dim: int = 4,
        action_dim: int = 4,
    ) -> None:
        import zarr

        if mode not in ("r", "a"):
            raise InvalidInputError(f"ReplayDataset mode: expected 'r' or 'a', got {mode!r}")
        self.path = Path(path)
        exists = (self.path / "zarr.json").is_file()
        if not exists and mode == "r":
            raise InvalidInputError(
                f"no auras dataset at {str(self.path)!r} (expected a zarr group; run `auras collect`)"
            )
        self._root = zarr.open_group(str(self.path), mode="a" if mode == "a" else "r")
        if not exists:
            self._create(image_size, state_dim, action_dim)
        attrs = dict(self._root.attrs)
        if attrs.get("format") != FORMAT or attrs.get("version") != VERSION:
            raise InvalidInputError(
                f"{str(self.path)!r}: expected an {FORMAT} v{VERSION} dataset, "
                f"got format={attrs.get('format')!r} version={attrs.get('version')!r}"
            )
        if mode == "a" and exists and attrs["image_size"] != image_size:
            raise InvalidInputError(
                f"{str(self.path)!r}: expected {attrs['image_size']}px images (the dataset's size), got {image_size}px"
            )
        self.attrs = attrs

    def _create(self, image_size: int, state_dim: int, action_dim: int) -> None:
        root = self._root
        root.attrs.update(
            {
                "format": FORMAT,
                "version": VERSION,
                "image_size": image_size,
                "state_dim": state_dim,
                "action_dim": action_dim,
                "cameras": ["front"],
                "tasks": [],
                "instructions": [],
            }
        )
        step_arrays = {
            "data/image_front": (
                (0, image_size, image_size, 3),
                (_STEP_CHUNK // 4, image_size, image_size, 3),
                "uint8",
            ),
            "data/state": ((0, state_dim), (_STEP_CHUNK * 16, state_dim), "float32"),
            "data/action": ((0, action_dim), (_STEP_CHUNK * 16, action_dim), "float32"),
            "data/step": ((0,), (_STEP_CHUNK * 16,), "int32"),
            "meta/episode_ends": ((0,), (4096,), "int64"),
            "meta/episode_seed": ((0,), (4096,), "int64"),
            "meta/episode_success": ((0,), (4096,), "bool"),
            "meta/episode_task": ((0,), (4096,), "int32"),
        }
        for name, (shape, chunks, dtype) in step_arrays.items():
            root.create_array(name, shape=shape, chunks=chunks, dtype=dtype)

    # -- writing ----------------------------------------------------------------------------------
    def append_episode(
        self,
        task: str,
        instruction: str,
        seed: int,
        success: bool,
        images: np.ndarray,
        state: np.ndarray,
        action: np.ndarray,
    ) -> int:
        """Append one episode; returns its index. Arrays are (T, ...) with the same T."""
        steps = len(images)
        size = self.attrs["image_size"]
        expected = {
            "images": ((steps, size, size, 3), np.uint8),
            "state": ((steps, self.attrs["state_dim"]), np.float32),
            "action": ((steps, self.attrs["action_dim"]), np.float32),
        }
        for name, array in (("images", images), ("state", state), ("action", action)):
            shape, dtype = expected[name]
            if array.shape != shape or array.dtype != dtype:
                raise InvalidInputError(
                    f"append_episode {name}: expected shape {shape} {np.dtype(dtype)}, got {array.shape} {array.dtype}"
                )
        if steps == 0:
            raise InvalidInputError("append_episode: expected at least one step, got an empty episode")
        tasks = list(self.attrs["tasks"])
        if task not in tasks:
            tasks.append(task)
            self.attrs["tasks"] = tasks
            self.attrs["instructions"] = [*self.attrs["instructions"], instruction]
            self._root.attrs.update({"tasks": tasks, "instructions": self.attrs["instructions"]})
        root = self._root
        end = self.num_steps + steps
        root["data/image_front"].append(images, axis=0)
        root["data/state"].append(state, axis=0)
        root["data/action"].append(action, axis=0)
        root["data/step"].append(np.arange(steps, dtype=np.int32), axis=0)
        # meta last: a crash mid-append leaves trailing steps that no episode claims, never a
        # half-written episode
        root["meta/episode_seed"].append(np.array([seed], dtype=np.int64))
        root["meta/episode_success"].append(np.array([success], dtype=bool))
        root["meta/episode_task"].append(np.array([tasks.index(task)], dtype=np.int32))
        root["meta/episode_ends"].append(np.array([end], dtype=np.int64))
        return self.num_episodes - 1

    # -- reading ----------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return int(self._root["meta/episode_ends"].shape[0])

    @property
    def num_steps(self) -> int:
        ends = self._root["meta/episode_ends"]
        return int(ends[-1]) if ends.shape[0] else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._root["meta/episode_ends"][:]

    @property
    def episode_task(self) -> np.ndarray:
        """(E,) index of each episode's task in ``attrs["tasks"]``."""
        return self._root["meta/episode_task"][:]

    def seeds(self, task: str) -> set[int]:
        """The env seeds of the stored episodes of ``task``."""
        tasks = list(self.attrs.get("tasks", []))
        if task not in tasks:
            return set()
        chosen = self._root["meta/episode_task"][:] == tasks.index(task)
        return {int(seed) for seed in self._root["meta/episode_seed"][:][chosen]}

    def array(self, name: str) -> Any:
        """The lazy zarr array ``data/<name>`` (index it to read)."""
        return self._root[f"data/{name}"]

    def episode(self, index: int) -> Episode:
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index}: dataset has {self.num_episodes} episodes")
        index %= self.num_episodes
        ends = self.episode_ends
        start, end = (int(ends[index - 1]) if index else 0), int(ends[index])
        task = self.attrs["tasks"][int(self._root["meta/episode_task"][index])]
        return Episode(
            index=index,
            task=task,
            instruction=self.attrs["instructions"][self.attrs["tasks"].index(task)],
            seed=int(self._root["meta/episode_seed"][index]),
            success=bool(self._root["meta/episode_success"][index]),
            images=self._root["data/image_front"][start:end],
            state=self._root["data/state"][start:end],
            action=self._root["data/action"][start:end],
        )

    def summary(self) -> dict[str, Any]:
        success = self._root["meta/episode_success"][:]
        return {
            "path": str(self.path),
            "episodes": self.num_episodes,
            "steps": self.num_steps,
            "tasks": list(self.attrs["tasks"]),
            "success_rate": float(success.mean()) if len(success) else None,
        }
