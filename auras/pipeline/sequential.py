"""`sequential` mode: perception then generation for each observation, nothing in flight between.

The baseline of the Auras paper. Observations that arrive while a step runs are the caller's to
drop (``AurasAgent.step`` blocks until the action is ready). On the Ray backend a dead or hung actor
is replaced and the step raises WorkerRestartedError (nothing is in flight, so nothing else is lost).
"""

from __future__ import annotations

from auras.errors import WorkerDiedError
from auras.pipeline.base import Executor, LocalPolicyParts, PolicyParts
from auras.policies.base import Policy
from auras.types import Action, Observation, StepTimings

__all__ = ["SequentialExecutor"]


class SequentialExecutor(Executor):
    def __init__(self, policy: Policy | None = None, parts: PolicyParts | None = None) -> None:
        """Run ``policy`` in this process, or the policy hosted by ``parts``."""
        self.parts = parts if parts is not None else LocalPolicyParts(_given(policy))
        super().__init__(self.parts.spec)
        self.frame = 0  # step calls so far: in sequential mode one frame is one whole request

    def step(self, obs: Observation) -> Action:
        start = self.clock.now()
        try:
            context = self.parts.perceive([obs])
            perceived = self.clock.now()
            actions = self.parts.generate(context)  # (1, A) or (1, H, A)
        except WorkerDiedError as exc:
            restart = getattr(self.parts, "restart", None)
            if restart is None:
                raise
            raise self.recover(exc, obs.step_id, restart, frame=self.frame) from exc
        done = self.clock.now()
        timings = StepTimings(
            stages_ms={"perception": (perceived - start) * 1e3, "generation": (done - perceived) * 1e3},
            latency_ms=(done - start) * 1e3,
        )
        return Action(
            actions[0],
            obs.step_id,
            obs.capture_time,
            timings,
            context_step_id=obs.step_id,
            staleness_frames=0,
            frame=self._next_frame(),
            staleness_ms=(done - obs.capture_time) * 1e3,
        )

    def _next_frame(self) -> int:
        self.frame += 1
        return self.frame - 1

    def reset(self) -> None:
        self.parts.reset()

    @property
    def hosted_policy(self) -> Policy | None:
        return self.parts.policy if isinstance(self.parts, LocalPolicyParts) else None

    def close(self) -> None:
        self.parts.close()


def _given(policy: Policy | None) -> Policy:
    if policy is None:
        raise TypeError("SequentialExecutor: expected a policy or parts, got neither")
    return policy
