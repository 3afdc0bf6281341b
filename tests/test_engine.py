"""The frame engine: many robots' pipelines batched over one policy, each robot acting exactly as alone.

The invariance tests run every shipped family (denoising: tiny-dp, tiny-flow and SmolVLA; autoregressive:
tiny-vla; one-shot: the expert) with robots whose observations (and instructions) differ, alone and then
as sessions of one engine whose every frame batches all of them, and compare each robot's actions. A
deliberate mix-up of two robots' contexts inside the engine must fail the comparison.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from auras import load_config
from auras.errors import ConfigError
from auras.pipeline.engine import FrameEngine
from auras.pipeline.frames import FrameExecutor, FrameShape
from auras.pipeline.workers import GenerationWorker
from auras.policies.base import Policy
from auras.policies.build import build_policy
from auras.types import Observation
from tests.fakes import FakeDiffusion, FakeStagedPerception

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINTS = {"smolvla": FIXTURES / "smolvla-tiny" / "checkpoint", "pi0": FIXTURES / "pi0-tiny" / "checkpoint",
               "pi05": FIXTURES / "pi05-tiny" / "checkpoint"}
INSTRUCTIONS = ["push the puck", "press the button", "open the drawer", "reach the red target"]

# fp32 on the CPU: the largest difference between a robot's action alone and batched (measured on the
# shipped policies: 0 for the one-shot expert, float32 rounding for the networks; see docs/fleet.md)
TOLERANCE = 1e-4
EXTRA_SIZE = 39  # Meta-World's full simulator state, what the privileged expert reads


def _policy(name: str) -> Policy:
    overrides = [f"policy.type={name}"]
    if name in CHECKPOINTS:
        overrides.append(f"policy.checkpoint={CHECKPOINTS[name]}")
    return build_policy(load_config(overrides=overrides))


def _observations(policy: Policy, robot: int, steps: int) -> list[Observation]:
    """Robot ``robot``'s own stream: its images, state, extras and instruction differ from the others'."""
    spec = policy.perception.spec
    rng = np.random.default_rng(100 + robot)
    return [
        Observation(
            images={cam: rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for cam, hw in spec.cameras.items()},
            state=rng.uniform(-0.2, 0.8, spec.state_dim).astype(np.float32),
            instruction=INSTRUCTIONS[robot % len(INSTRUCTIONS)],
            step_id=step,
            capture_time=0.0,
            extras={name: rng.uniform(-0.2, 0.8, EXTRA_SIZE).astype(np.float32) for name in spec.extras},
        )
        for step in range(steps)
    ]


def _alone(policy: Policy, shape: FrameShape, public: bool, streams: list[list[Observation]]) -> list[list]:
    out = []
    for stream in streams:
        executor = FrameExecutor(policy, shape, public)
        out.append([executor.step(obs) for obs in stream])
        executor.close()
    return out


def _together(engine: FrameEngine, shapes: list[FrameShape], public: bool, streams: list[list[Observation]]):
    """Every robot steps from its own thread; the engine waits for all of them, so each frame batches all."""
    executors = [FrameExecutor(engine, shape, public) for shape in shapes]
    out: list[list] = [[] for _ in streams]
    errors: list[BaseException] = []

    def robot(i: int) -> None:
        try:
            out[i] = [executors[i].step(obs) for obs in streams[i]]
        except BaseException as exc:
            errors.append(exc)
        finally:
            executors[i].close()  # leaves the engine: the others stop waiting for it

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return out


def _max_deviation(alone: list[list], together: list[list]) -> float:
    worst = 0.0
    for solo, batched in zip(alone, together, strict=True):
        assert [a.step_id for a in solo] == [a.step_id for a in batched]
        assert [a.context_step_id for a in solo] == [a.context_step_id for a in batched]
        for a, b in zip(solo, batched, strict=True):
            worst = max(worst, float(np.max(np.abs(a.values - b.values))))
    return worst


def _engine(policy: Policy, robots: int) -> FrameEngine:
    # a long wait: every frame waits for every robot, so the test sees full batches (asserted below)
    return FrameEngine(policy, wait_ms=5000.0, active_window_s=60.0)


SLOW = pytest.mark.slow  # the default run keeps one case per shipped policy; -m slow adds the other shapes
CASES = [
    pytest.param("tiny-dp", FrameShape(2, 3), True, id="tiny-dp-auras"),
    pytest.param("tiny-dp", FrameShape(2, 3), False, id="tiny-dp-pipeline", marks=SLOW),
    pytest.param("tiny-flow", FrameShape(2, 5), True, id="tiny-flow-auras"),
    pytest.param("tiny-vla", FrameShape(2, 4), True, id="tiny-vla-auras"),
    pytest.param("tiny-vla", FrameShape(2, 4), False, id="tiny-vla-pipeline", marks=SLOW),
    pytest.param("tiny-vla", FrameShape(1, 1), False, id="tiny-vla-sequential", marks=SLOW),
    pytest.param("expert", FrameShape(1, 1), False, id="expert-oneshot"),
    pytest.param("smolvla", FrameShape(3, 5), True, id="smolvla-auras"),
    pytest.param("pi0", FrameShape(2, 5), True, id="pi0-auras"),  # its state rides in the public context
    pytest.param("pi05", FrameShape(2, 5), True, id="pi05-auras", marks=SLOW),
]


@pytest.mark.parametrize(("name", "shape", "public"), CASES)
def test_a_robot_acts_the_same_alone_and_batched_with_others(name, shape, public):
    policy = _policy(name)
    robots, steps = 5, 8
    streams = [_observations(policy, r, steps) for r in range(robots)]
    alone = _alone(policy, shape, public, streams)
    engine = _engine(policy, robots)
    together = _together(engine, [shape] * robots, public, streams)
    assert engine.counters.largest == robots  # the robots really shared frames
    assert engine.counters.frames == engine.counters.plans // robots
    engine.close()
    assert _max_deviation(alone, together) <= TOLERANCE
    # the robots' actions differ from each other: a mix-up would show
    assert not np.allclose(together[0][-1].values, together[1][-1].values)


def _mixing_up_two_robots_contexts(monkeypatch) -> None:
    """A defect on purpose: the generation worker hands robot 0's requests robot 1's contexts."""
    original = GenerationWorker._generate

    def mixed(self, ready):
        sessions = [state for _, state in ready]
        if len(sessions) >= 2:
            a, b = sessions[0], sessions[1]
            a.store, b.store = b.store, a.store
            a.own, b.own = b.own, a.own
            try:
                return original(self, ready)
            finally:
                a.store, b.store = b.store, a.store
                a.own, b.own = b.own, a.own
        return original(self, ready)

    monkeypatch.setattr(GenerationWorker, "_generate", mixed)


@pytest.mark.parametrize(("name", "shape", "public"), [CASES[0], pytest.param("tiny-vla", FrameShape(2, 4), False,
                                                                             id="tiny-vla-pipeline", marks=SLOW),
                                                      pytest.param("pi0", FrameShape(2, 5), True, id="pi0-auras")])
def test_a_mix_up_of_two_robots_contexts_fails_the_invariance_check(name, shape, public, monkeypatch):
    policy = _policy(name)
    streams = [_observations(policy, r, 6) for r in range(3)]
    alone = _alone(policy, shape, public, streams)
    _mixing_up_two_robots_contexts(monkeypatch)
    engine = _engine(policy, 3)
    together = _together(engine, [shape] * 3, public, streams)
    engine.close()
    assert _max_deviation(alone, together) > TOLERANCE


def test_sessions_of_different_depths_share_an_engine_and_each_acts_as_alone():
    policy = _policy("tiny-dp")
    shapes = [FrameShape(1, 1), FrameShape(2, 3), FrameShape(3, 5), FrameShape(2, 2)]
    streams = [_observations(policy, r, 7) for r in range(len(shapes))]
    alone = [_alone(policy, shape, True, [stream])[0] for shape, stream in zip(shapes, streams, strict=True)]
    engine = _engine(policy, len(shapes))
    together = _together(engine, shapes, True, streams)
    engine.close()
    assert _max_deviation(alone, together) <= TOLERANCE


def _adaptive(engine: FrameEngine, own: bool = False):
    """A tiny-dp auras pipeline of depth 3 whose controller never re-plans by itself (the test does)."""
    from auras.pipeline import adaptive_executor

    config = load_config(overrides=["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.pp_perception=2",
                                    "pipeline.pp_generation=3", "pipeline.target_hz=1",
                                    "pipeline.controller_window=1000"])
    return adaptive_executor(config, engine, FrameShape(2, 3), owns_engine=own)


def test_an_adaptive_robot_re_plans_as_sessions_of_the_shared_engine_and_acts_as_alone():
    """Robot 0's adaptive pipeline goes 3 -> 5 -> 2 deep while robots 1 and 2 (depth 3) share its frames. A
    re-plan is a new session of the same engine (no new workers), every robot's actions equal its run
    alone (robot 0's alone: the same re-plans on an engine of its own), and no frame waits for the half
    of a re-plan that steps second (the engine waits 30 s for a session that is expected and late)."""
    policy = _policy("tiny-dp")
    switches = {4: 5, 10: 2}
    streams = [_observations(policy, r, 18) for r in range(3)]

    def run_adaptive(executor, stream):
        actions = []
        for i, obs in enumerate(stream):
            if i in switches:
                executor.switch(switches[i])
            actions.append(executor.step(obs))
        return actions

    solo_executor = _adaptive(FrameEngine(policy), own=True)
    alone = [run_adaptive(solo_executor, streams[0]), *_alone(policy, FrameShape(2, 3), True, streams[1:])]
    assert solo_executor.controller_stats()["pp_generation"] == 2
    solo_executor.close()

    engine = FrameEngine(policy, wait_ms=30000.0, active_window_s=60.0)
    workers = engine.group
    adaptive = _adaptive(engine)
    static = [FrameExecutor(engine, FrameShape(2, 3)) for _ in range(2)]
    out: list[list] = [[], [], []]
    errors: list[BaseException] = []

    def robot(i: int) -> None:
        try:
            out[i] = run_adaptive(adaptive, streams[0]) if i == 0 else [static[i - 1].step(o) for o in streams[i]]
        except BaseException as exc:
            errors.append(exc)
        finally:
            (adaptive if i == 0 else static[i - 1]).close()

    start = time.monotonic()
    threads = [threading.Thread(target=robot, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    took = time.monotonic() - start
    assert not errors, errors
    assert took < 25.0, f"a frame waited for the second half of a re-plan ({took:.1f} s)"
    assert engine.group is workers and engine.counters.replacements == 0  # no new workers for a re-plan
    assert engine.counters.largest == 3 and engine.sessions == 0
    engine.close()
    assert _max_deviation(alone, out) <= TOLERANCE


def test_sessions_of_one_engine_share_fetch_offset():
    engine = FrameEngine(_policy("tiny-dp"))
    with pytest.raises(ConfigError, match="fetch_offset"):
        FrameExecutor(engine, FrameShape(2, 3, -1))
    engine.close()


class _FailingOnRobot(FakeStagedPerception):
    """Raises on observations whose instruction is 'fail' (one robot's bad data)."""

    def __init__(self) -> None:
        super().__init__(2)

    def stages(self):
        inner = super().stages()

        def first(observations):
            if any(o.instruction == "fail" for o in observations):
                raise ValueError("this robot's observation breaks the model")
            return inner[0](observations)

        return [first, *inner[1:]]


def test_one_robots_failure_fails_only_that_robot():
    policy = Policy("fake-dp", _FailingOnRobot(), FakeDiffusion(12))
    engine = FrameEngine(policy, wait_ms=5000.0, active_window_s=60.0)
    good, bad = FrameExecutor(engine, FrameShape(1, 2)), FrameExecutor(engine, FrameShape(1, 2))
    results: dict[str, list] = {"good": [], "bad": []}

    def run(name, executor, instruction):
        for step in range(4):
            obs = Observation({"front": np.zeros((8, 8, 3), np.uint8)}, np.full(4, step, np.float32), instruction,
                              step, 0.0)
            try:
                results[name].append(executor.step(obs).step_id)
            except ValueError as exc:
                results[name].append(str(exc))
        executor.close()

    threads = [threading.Thread(target=run, args=("good", good, "go")),
               threading.Thread(target=run, args=("bad", bad, "fail"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    engine.close()
    assert results["good"] == [0, 0, 1, 2]  # as alone (the fill admits step 0 twice): never saw the failure
    assert results["bad"] == ["this robot's observation breaks the model"] * 4


def test_failures_in_a_row_leave_no_request_behind_in_the_workers():
    """Perception fails a robot's frame twice in a row, then serves again: the generation worker holds only
    the requests still in flight (the first failure's requests are forgotten though the second failed frame
    never reached generation), so repeated bad frames cannot grow a robot's state without bound."""
    policy = Policy("fake-dp", _FailingOnRobot(), FakeDiffusion(12))
    engine = FrameEngine(policy)
    robot = FrameExecutor(engine, FrameShape(1, 3))

    def obs(step: int, instruction: str = "go") -> Observation:
        return Observation({"front": np.zeros((8, 8, 3), np.uint8)}, np.full(4, step, np.float32), instruction,
                           step, 0.0)

    for step in range(4):
        robot.step(obs(step))
    for step in (4, 5):
        with pytest.raises(ValueError, match="breaks the model"):
            robot.step(obs(step, "fail"))
    for step in range(6, 10):
        robot.step(obs(step))
    held = engine.group.instances[1].sessions[robot.session]
    inflight = {request for request, _ in robot._inflight}
    assert set(held.state) <= inflight and set(held.spent) <= inflight and set(held.perception_ms) <= inflight
    robot.close()
    engine.close()


def test_a_robot_that_steps_while_another_replaces_the_workers_restarts_once_and_goes_on():
    """Robot a found the workers dead and replaces them (slowly, as placing actors is); robot b steps
    meanwhile. b's plan names requests the old workers held, so it must not run on the new ones: b gets
    exactly one WorkerRestartedError, a its action, and both go on."""
    from auras.errors import WorkerRestartedError
    from tests.fakes import fake_observation

    policy = Policy("fake-dp", FakeStagedPerception(2), FakeDiffusion(12))
    engine = FrameEngine(policy, wait_ms=300.0, active_window_s=60.0)
    a, b = FrameExecutor(engine, FrameShape(1, 3)), FrameExecutor(engine, FrameShape(1, 3))

    def both(first, second) -> dict:
        out: dict = {}

        def run(name, call):
            try:
                out[name] = call()
            except Exception as exc:  # the test inspects it
                out[name] = exc

        threads = [threading.Thread(target=run, args=("a", first)), threading.Thread(target=run, args=("b", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return out

    for i in range(4):
        both(lambda i=i: a.step(fake_observation(i)), lambda i=i: b.step(fake_observation(i)))
    place = engine.backend.place
    engine.backend.place = lambda recipes, threads=0: (time.sleep(0.5), place(recipes, threads))[1]

    def a_replaces():
        a.replace_workers()
        return a.step(fake_observation(10))

    def b_steps_meanwhile():
        time.sleep(0.1)
        return b.step(fake_observation(10))

    out = both(a_replaces, b_steps_meanwhile)
    assert isinstance(out["b"], WorkerRestartedError) and b.restarts == 1, out
    assert out["a"].step_id == 10  # a's first action on the new workers answers its own observation
    after = both(lambda: a.step(fake_observation(11)), lambda: b.step(fake_observation(11)))
    assert after["a"].context_step_id == after["b"].context_step_id == 11, after  # both serve fresh again
    assert engine.counters.replacements == 1
    a.close()
    b.close()
    engine.close()


def test_the_router_sends_each_new_robot_to_the_least_loaded_engine_and_a_returning_robot_home():
    from auras.pipeline.router import EngineRouter

    class _Engine:  # what the router reads of an engine
        def __init__(self) -> None:
            self.sessions = 0

    first, second = _Engine(), _Engine()
    router = EngineRouter([first, second])

    def join(robot):
        engine = router.assign(robot)
        engine.sessions += 1
        return engine

    assert join("a") is first and join("b") is second and join("c") is first  # least loaded, first on a tie
    first.sessions -= 1  # robot a leaves ...
    assert join("a") is first  # ... and comes back to its engine (affinity)
    first.sessions += 2  # its engine got busy: 4 against 1
    assert join("a") is second  # balance wins over affinity
