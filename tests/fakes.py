"""Fake perception/generation with programmable delay, for fast tests of scheduling logic."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from auras.generation.base import Generation
from auras.perception.base import Context, Perception
from auras.policies.base import Policy
from auras.types import Observation, ObservationSpec


class FakePerception(Perception):
    """Context = each observation's step id and state; sleeps ``delay_s`` per call."""

    def __init__(self, delay_s: float = 0.0, image_size: int = 8) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self._spec = ObservationSpec({"front": (image_size, image_size)}, state_dim=4)

    @property
    def spec(self) -> ObservationSpec:
        return self._spec

    def perceive(self, observations: Sequence[Observation]) -> Context:
        self.calls += 1
        time.sleep(self.delay_s)
        return {
            "step_id": np.array([o.step_id for o in observations], np.int64),  # (B,)
            "state": np.stack([o.state for o in observations]),  # (B, 4)
        }


class FakeGeneration(Generation):
    """Action = state + step id / 1000, so each action traces to its observation; sleeps ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.resets = 0

    @property
    def action_dim(self) -> int:
        return 4

    def generate(self, context: Context) -> np.ndarray:
        time.sleep(self.delay_s)
        return (context["state"] + context["step_id"][:, None] / 1000.0).astype(np.float32)  # (B, 4)

    def reset(self) -> None:
        self.resets += 1


def fake_policy(perception_s: float = 0.0, generation_s: float = 0.0) -> Policy:
    return Policy("fake", FakePerception(perception_s), FakeGeneration(generation_s))


def fake_observation(step_id: int, image_size: int = 8) -> Observation:
    return Observation(
        images={"front": np.full((image_size, image_size, 3), step_id % 256, np.uint8)},
        state=np.full(4, 0.1, np.float32),
        instruction="do the thing",
        step_id=step_id,
        capture_time=time.monotonic(),
    )


class FakeStagedPerception(FakePerception):
    """``n_stages`` natural stages; context {"H_o": (B, 1) = step id} so tests see which observation
    each generation call was conditioned on."""

    def __init__(self, n_stages: int = 4, delay_s: float = 0.0, image_size: int = 8) -> None:
        super().__init__(delay_s, image_size)
        self.n_stages = n_stages

    def stages(self):
        import torch

        def first(observations):
            time.sleep(self.delay_s / self.n_stages)
            return torch.tensor([[float(o.step_id)] for o in observations])

        def middle(x):
            time.sleep(self.delay_s / self.n_stages)
            return x

        def last(x):
            time.sleep(self.delay_s / self.n_stages)
            return {"H_o": x}

        return [first] + [middle] * (self.n_stages - 2) + [last]

    def perceive(self, observations):
        x = observations
        for stage in self.stages():
            x = stage(x)
        return x


class FakeDiffusion:
    """A DiffusionGeneration whose 'denoising' adds num_steps * 1000 + H_o, and records every call."""

    def __new__(cls, *args, **kwargs):  # build lazily so tests/fakes.py imports without torch
        from auras.generation.base import DiffusionGeneration

        class _Fake(DiffusionGeneration):
            def __init__(self, steps: int = 12, delay_s: float = 0.0) -> None:
                self.steps, self.delay_s, self.calls = steps, delay_s, []

            @property
            def action_dim(self) -> int:
                return 4

            @property
            def num_inference_steps(self) -> int:
                return self.steps

            def initial_noise(self, batch, generator=None):
                import torch

                return torch.zeros(batch, 2, 4)

            def denoise(self, sample, step_index, num_steps, context):
                h_o = context["H_o"]
                time.sleep(self.delay_s)
                self.calls.append(
                    {"batch": len(sample), "step_index": step_index.tolist(), "num_steps": num_steps.tolist(),
                     "h_o": h_o[:, 0].tolist()}
                )
                return sample + num_steps[:, None, None] * 1000 + h_o[:, :1, None]

            def to_actions(self, sample):
                return sample.numpy().astype(np.float32)

        return _Fake(*args, **kwargs)


class HangingGeneration(FakeGeneration):
    """A FakeGeneration that hangs (sleeps ``hang_s``) on the request of step id ``hang_at``."""

    def __init__(self, hang_at: int, hang_s: float = 600.0) -> None:
        super().__init__()
        self.hang_at, self.hang_s = hang_at, hang_s

    def generate(self, context: Context) -> np.ndarray:
        if self.hang_at in np.asarray(context["step_id"]).tolist():
            time.sleep(self.hang_s)
        return super().generate(context)


class _Movable:
    """A fake part that accepts any device (it records it instead of moving tensors)."""

    device = "cpu"

    def to(self, device: str, dtype: str = "float32") -> None:
        self.device = device


def movable_fake_policy(config=None) -> Policy:
    """A registry factory: the staged fake diffusion policy, whose parts accept any device (for placement
    tests on machines without CUDA)."""

    class MovablePerception(_Movable, FakeStagedPerception):
        pass

    generation = FakeDiffusion(12)
    generation.to = _Movable().to  # the fake diffusion is built lazily; give the instance a recording to()
    return Policy("fake-movable", MovablePerception(4), generation)


class HookedExecutor:
    """An executor that calls ``before(obs)`` ahead of every step of ``inner`` (a slow or failing step,
    injected through AurasAgent(executor=...)); everything else is ``inner``'s."""

    def __new__(cls, inner, before):
        from auras.pipeline.base import Executor

        class _Hooked(Executor):
            def __init__(self) -> None:
                super().__init__(inner.spec)
                self.inner = inner

            def step(self, obs):
                before(obs)
                return inner.step(obs)

            @property
            def clock(self):
                return inner.clock

            @clock.setter
            def clock(self, clock) -> None:
                inner.clock = clock

            def reset(self) -> None:
                inner.reset()

            def close(self) -> None:
                inner.close()

            @property
            def hosted_policy(self):
                return inner.hosted_policy

            def workers(self):
                return inner.workers()

            @property
            def context_transport(self) -> str:
                return inner.context_transport

        return _Hooked()


def sequential_actions(policy: Policy, observations) -> list[np.ndarray]:
    """The reference for every executor: each observation's perception, then its generation, called
    directly on ``policy`` one request at a time (what sequential execution means)."""
    return [np.asarray(policy.generation.generate(policy.perception.perceive([o]))[0]) for o in observations]
