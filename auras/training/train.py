"""`auras train`: behaviour cloning of a learned policy on `auras collect` demonstrations.

Fixed seeds (numpy, torch, batch order, augmentation); AdamW with cosine decay; periodic
closed-loop evaluation in the env on validation seeds (90000 + i: disjoint from the training seeds
that `auras collect` uses by default and from the benchmark's held-out seeds >= 100000); the
checkpoint with the best mean evaluation success is kept (``best/``) alongside the last one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auras.agent import AurasAgent
from auras.bench.episodes import run_episode
from auras.data.chunks import ChunkSamples
from auras.data.dataset import ReplayDataset
from auras.envs import make_env
from auras.errors import ConfigError
from auras.perception.text import encode_instruction
from auras.registry import POLICIES

__all__ = ["demonstration_batch", "evaluate", "policy_class", "train"]

VALIDATION_SEED = 90_000
TRAINABLE = ("from_samples", "from_pretrained", "compute_loss", "as_policy", "save_pretrained")


def policy_class(name: str) -> Any:
    """The trainable model class registered as ``name`` (a LearnedPolicy: tiny-vla, tiny-dp, tiny-flow, or one an
    installed package registers); ConfigError for unknown or untrainable names."""
    entry = POLICIES.get(name)
    missing = [m for m in TRAINABLE if not hasattr(entry, m)]
    if missing:
        raise ConfigError(
            f"policy {name!r} is not trainable with auras train: its registry entry is {entry!r}, which lacks "
            f"{missing}; register a LearnedPolicy subclass (as the shipped tiny-vla and tiny-dp are) to train it"
        )
    return entry


def evaluate(model: Any, tasks: Sequence[str], episodes: int, seed: int = VALIDATION_SEED,
             horizon: int = 200) -> dict[str, float]:
    """Closed-loop success rate per task (sequential agent, frame clock)."""
    import torch

    model.eval()
    rates = {}
    with torch.no_grad(), AurasAgent(policy=model.as_policy()) as agent:
        for task in tasks:
            with make_env(task, horizon=horizon) as env:
                wins = sum(run_episode(agent, env, seed + i).success for i in range(episodes))
            rates[task] = wins / episodes
    return rates


def _to_torch(batch: dict[str, np.ndarray], instruction_ids: np.ndarray):
    import torch

    return {
        "image": torch.from_numpy(batch["image"]),
        "state": torch.from_numpy(batch["state"]),
        "actions": torch.from_numpy(batch["actions"]),
        "instruction_ids": torch.from_numpy(instruction_ids[batch["task"]]),
    }


def demonstration_batch(model: Any, data: str | Path, tasks: Sequence[str] | None, count: int, seed: int = 0):
    """``count`` random demonstration steps of dataset ``data`` (``tasks``: only these), as the training
    loop feeds them to ``model``: (the numpy batch with ``task`` and ``instruction`` per row, the torch
    batch for ``compute_loss`` / ``encode``)."""
    steps = ChunkSamples(ReplayDataset(data), model.chunk_horizon, tasks)
    instruction_ids = np.stack([encode_instruction(t, model.max_instruction_bytes) for t in steps.instructions])
    raw = steps.batch(np.random.default_rng(seed).integers(0, len(steps), count))
    raw["instruction"] = np.array([steps.instructions[t] for t in raw["task"]])
    return raw, _to_torch(raw, instruction_ids)


def train(
    policy: str,
    data: str | Path,
    out: str | Path,
    tasks: Sequence[str] | None = None,
    steps: int = 20_000,
    batch_size: int = 64,
    lr: float = 3e-4,
    weight_decay: float = 1e-4,
    ema_decay: float = 0.999,
    seed: int = 0,
    threads: int = 1,
    eval_every: int = 2_000,
    eval_episodes: int = 5,
    max_minutes: float | None = None,
    overrides: dict[str, Any] | None = None,
    init: str | Path | None = None,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``policy`` on dataset ``data``; write checkpoints and ``train_log.jsonl`` under ``out``."""
    import torch

    cls = policy_class(policy)
    overrides = {key.removeprefix("policy.model."): value for key, value in (overrides or {}).items()}
    cls.config_class.parse(overrides, where="--set")  # unknown keys and bad values fail here, before any data loads
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)

    horizon = (overrides or {}).get("chunk_horizon", cls.defaults()["chunk_horizon"])
    samples = ChunkSamples(ReplayDataset(data), horizon, tasks)
    # A stopped run (max_minutes) ends its cosine schedule early: size ``steps`` to the time budget.
    if init is not None:  # continue from a checkpoint (its normalisation and tokenizer bounds stay)
        if fixed := sorted(set(overrides or {}) - cls.config_class.TRAINING_KEYS):
            raise ConfigError(
                f"model overrides {fixed} cannot change a model loaded from --init {init}; continuing a run may "
                f"only set training-only keys: {sorted(cls.config_class.TRAINING_KEYS)}"
            )
        model = cls.from_pretrained(init, **(overrides or {}))
    else:
        model = cls.from_samples(samples.actions, samples.states, samples.instructions, **(overrides or {}))
    instruction_ids = np.stack([encode_instruction(t, model.max_instruction_bytes) for t in samples.instructions])
    # Evaluate and ship an exponential moving average of the weights (as Diffusion Policy does):
    # closed-loop success depends on it far more than the loss suggests.
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay), use_buffers=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 500) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("w")
    meta = {
        "policy": policy, "data": str(data), "tasks": samples.tasks, "episodes": samples.episodes,
        "samples": len(samples), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "ema_decay": ema_decay, "parameters": model.num_parameters(), "init": str(init) if init else None,
    }
    log.write(json.dumps({"event": "start", **meta}) + "\n")
    log.flush()
    best, history, start = -1.0, [], time.monotonic()
    losses: list[float] = []
    step = 0
    for step in range(1, steps + 1):
        model.train()
        batch = _to_torch(samples.batch(rng.integers(0, len(samples), batch_size)), instruction_ids)
        loss = model.compute_loss(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ema.update_parameters(model)
        losses.append(loss.item())
        out_of_time = max_minutes is not None and time.monotonic() - start > max_minutes * 60
        minutes = (time.monotonic() - start) / 60
        record: dict[str, Any] = {"step": step, "loss": float(np.mean(losses[-100:])), "minutes": minutes}
        if step % eval_every == 0 or step == steps or out_of_time:
            shipped = ema.module
            rates = evaluate(shipped, samples.tasks, eval_episodes)
            mean = float(np.mean(list(rates.values())))
            record.update({"eval": rates, "eval_mean": mean})
            history.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            shipped.save_pretrained(out / "last", {**meta, "step": step, "eval": rates})
            if mean >= best:
                best = mean
                shipped.save_pretrained(out / "best", {**meta, "step": step, "eval": rates})
        if progress and (step % 50 == 0 or "eval" in record):
            progress(step, steps, record)
        if out_of_time:
            break
    log.write(json.dumps({"event": "end", "steps_done": step, "best_eval_mean": best}) + "\n")
    log.close()
    return {**meta, "steps_done": step, "best_eval_mean": best, "history": history, "out": str(out)}
