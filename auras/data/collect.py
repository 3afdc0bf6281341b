"""`auras collect`: record scripted-expert episodes into a ReplayDataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from auras.data.dataset import ReplayDataset
from auras.errors import ConfigError

__all__ = ["collect"]


def collect(
    task: str,
    episodes: int,
    out: str | Path,
    seed: int = 0,
    horizon: int = 200,
    image_size: int = 84,
    only_success: bool = False,
    progress: Callable[[int, int, bool], None] | None = None,
) -> dict:
    """Run the expert of ``task`` for ``episodes`` episodes on seeds ``seed + i`` and append them.

    Each step stores the observation the expert acted on and the action it applied. With
    ``only_success`` failed episodes are not stored (they are still counted in the summary).
    """
    from auras.envs import make_env
    from auras.envs.experts import make_expert

    dataset = ReplayDataset(out, mode="a", image_size=image_size)
    stored_seeds = dataset.seeds(task)
    repeated = sorted(stored_seeds & set(range(seed, seed + episodes)))
    if repeated:
        raise ConfigError(
            f"collect: {out} already has {task} episodes on seeds {repeated[:5]}{' ...' if len(repeated) > 5 else ''}; "
            f"recording them again would duplicate them: pass --seed {max(stored_seeds) + 1} (the next unused) or "
            f"another --out"
        )
    expert = make_expert(task)
    stored = succeeded = 0
    with make_env(task, horizon=horizon, image_size=image_size, terminate_on_success=True) as env:
        for i in range(episodes):
            expert.reset()
            obs, info = env.reset(seed=seed + i)
            images, states, actions = [], [], []
            success = False
            for _ in range(horizon):
                action = expert.act(info["privileged_state"])
                images.append(obs["image"])
                states.append(obs["state"])
                actions.append(action)
                obs, _, terminated, truncated, info = env.step(action)
                success = success or bool(info["success"])
                if terminated or truncated:
                    break
            succeeded += success
            if success or not only_success:
                dataset.append_episode(
                    task,
                    env.instruction,
                    seed + i,
                    success,
                    np.stack(images),
                    np.stack(states).astype(np.float32),
                    np.stack(actions).astype(np.float32),
                )
                stored += 1
            if progress:
                progress(i + 1, episodes, success)
    return {
        "task": task,
        "episodes_run": episodes,
        "episodes_stored": stored,
        "expert_success": succeeded / episodes,
        **ReplayDataset(out).summary(),
    }
