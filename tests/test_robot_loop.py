"""The robot side of a real-time loop (auras.robot_loop): one implementation for the bench's realtime
clock and `auras robot-sim`; in lockstep the in-process and served paths apply identical rows."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pytest
from gymnasium import spaces

from auras.agent import AurasAgent
from auras.bridge.robot_sim import executor_for, run_robot
from auras.bridge.server import BridgeServer
from auras.config import load_config
from auras.robot_loop import AgentLink, LinkAction, Lockstep, RealTime, run_robot_episode
from auras.staleness import ChunkExecutor, executor_from_config
from auras_client.client import RobotClient
from tests.ports import free_service_port

H, A = 4, 4


class CountingEnv:
    """A stand-in task: the state is the step count; records every action applied."""

    control_dt = 0.001
    action_space = spaces.Box(-1.0, 1.0, (A,), np.float32)
    instruction = "count"

    def __init__(self, horizon: int = 12) -> None:
        self.horizon, self.t, self.applied = horizon, 0, []

    def reset(self, seed: int | None = None) -> None:
        self.t, self.applied = 0, []

    def observe(self) -> dict:
        return {"image": np.zeros((8, 8, 3), np.uint8), "state": np.full(4, self.t, np.float32)}

    def privileged_state(self) -> np.ndarray:
        return np.zeros(1)

    def advance(self, action: np.ndarray):
        self.applied.append(np.array(action))
        self.t += 1
        return 0.0, False, self.t >= self.horizon, {"success": False}


class ScriptedLink:
    """Answers observation k with a chunk whose rows are 100 * k + row index + 1 (in 1e-4 units), as an action whose
    request is ``request_of(k)`` (a pipeline's older request) and whose context is k, captured
    ``age_s`` before it is read."""

    def __init__(self, request_of=lambda k: k, age_s: float = 0.0) -> None:
        self.request_of, self.age_s = request_of, age_s
        self.sent: list[int] = []
        self._answered: list[LinkAction] = []

    def reset(self) -> None:
        self.sent, self._answered = [], []

    def send(self, t: int, image: np.ndarray, state: np.ndarray, extras: Mapping[str, np.ndarray]) -> int:
        k = len(self.sent)
        self.sent.append(int(state[0]))
        chunk = np.repeat((100.0 * k + np.arange(1, H + 1, dtype=np.float32))[:, None], A, axis=1) / 1e4
        now = time.monotonic()
        self._answered.append(LinkAction(chunk, self.request_of(k), k, now - self.age_s, 1.0, time.monotonic))
        return k

    def latest(self) -> LinkAction | None:
        return max(self._answered, key=lambda a: a.order, default=None)

    def answers(self) -> int:
        return len(self._answered)

    def wait_answers(self, count: int, timeout_s: float) -> None:
        assert self.answers() >= count


def _rows(env: CountingEnv) -> list[float]:
    return [round(float(a[0]) * 1e4) if np.any(a) else None for a in env.applied]


def test_lockstep_lands_each_action_its_delay_after_the_observation_and_runs_it_from_row_zero():
    env, link = CountingEnv(horizon=12), ScriptedLink()
    robot = run_robot_episode(link, env, 0, ChunkExecutor("none", 1, (H, A)), camera_hz=1000, clock=Lockstep(2))
    # sent at 0, lands at 2 (row 0 = value 1); the next goes out at 2 (one in flight), lands at 4; ...
    assert link.sent == [0, 2, 4, 6, 8, 10]
    assert _rows(env) == [None, None, 1, 2, 101, 102, 201, 202, 301, 302, 401, 402]
    assert robot.staleness_steps == [2] * 5 and robot.actions_applied == 5 and robot.idle_steps == 2
    assert [len(r) for r in robot.applied] == [A] * 12


def test_an_action_for_an_old_request_with_a_newer_context_takes_over():
    """A filling pipeline answers request 0 several times, each with a newer context: each is fresher
    (ranked by request alone, the robot would keep running the first chunk)."""
    env, link = CountingEnv(horizon=8), ScriptedLink(request_of=lambda k: 0)
    run_robot_episode(link, env, 0, ChunkExecutor("none", 1, (H, A)), camera_hz=1000, clock=Lockstep(2))
    assert _rows(env) == [None, None, 1, 2, 101, 102, 201, 202]


def test_time_aligned_strategies_run_a_chunk_from_the_row_of_the_current_step():
    env, link = CountingEnv(horizon=6), ScriptedLink()
    run_robot_episode(link, env, 0, ChunkExecutor("rtc", 1, (H, A)), camera_hz=1000, clock=Lockstep(2))
    # captured at 0, landed at 2: rows 2 and 3 (values 3, 4) (row i belongs to step 0 + i); the next from 2 lands at 4
    assert _rows(env) == [None, None, 3, 4, 103, 104]


def test_the_camera_rate_limits_what_the_robot_sends():
    env, link = CountingEnv(horizon=12), ScriptedLink()
    run_robot_episode(link, env, 0, ChunkExecutor("none", 1, (H, A)), camera_hz=250, clock=Lockstep(1))
    assert link.sent == [0, 4, 8]  # 1 kHz control, 250 Hz camera: every 4th step


def test_chunk_blend_sends_only_when_the_queue_is_short():
    env, link = CountingEnv(horizon=10), ScriptedLink()
    run_robot_episode(link, env, 0, ChunkExecutor("chunk_blend", 1, (H, A), queue_threshold=0.5), camera_hz=1000,
                      clock=Lockstep(1))
    assert link.sent == [0, 2, 4, 6, 8]  # 4 rows a chunk: the next request once 2 are left


def test_realtime_never_applies_an_action_older_than_the_ttl():
    env, link = CountingEnv(horizon=5), ScriptedLink(age_s=1.0)
    robot = run_robot_episode(link, env, 0, ChunkExecutor("none", 1, (H, A)), camera_hz=1000,
                              clock=RealTime(ttl_s=0.5))
    assert robot.actions_applied == 0 and robot.expired == 4 and robot.idle_steps == 5  # seen at steps 1-4
    assert _rows(env) == [None] * 5


def test_a_failed_agent_surfaces_in_the_robot_loop():
    from auras.policies.base import Policy
    from tests.fakes import FakeGeneration, FakePerception

    class Failing(FakeGeneration):
        def generate(self, context):
            raise RuntimeError("generation broke")

    agent = AurasAgent(load_config(), policy=Policy("fake", FakePerception(image_size=8), Failing()))
    with agent, AgentLink(agent, "x") as link, pytest.raises(RuntimeError, match="generation broke"):
        run_robot_episode(link, CountingEnv(horizon=50), 0, ChunkExecutor("none", 1, (1, A)), camera_hz=1000,
                          clock=Lockstep(1, timeout_s=30))


def test_an_agent_that_failed_on_the_server_surfaces_in_the_robot_loop():
    """Served, as in process: the robot loop raises instead of standing still for the rest of the run."""
    from auras.errors import StepFailedError
    from auras.policies.base import Policy
    from tests.fakes import FakeGeneration, FakePerception

    class Failing(FakeGeneration):
        def generate(self, context):
            raise RuntimeError("generation broke")

    def agent() -> AurasAgent:
        return AurasAgent(load_config(), policy=Policy("fake", FakePerception(image_size=8), Failing()))

    address = f"tcp://127.0.0.1:{free_service_port()}"
    with (
        BridgeServer(bind=address, agent_factory=agent).start(),
        RobotClient(address, cameras={"front": (8, 8)}, instruction="x", timeout_s=60.0) as client,
        pytest.raises(StepFailedError, match="the agent failed on the server"),
    ):
        run_robot(client, CountingEnv(horizon=30_000), 0, camera_hz=100, executor=ChunkExecutor("none", 1, (1, A)))


@pytest.mark.mujoco
@pytest.mark.parametrize(
    ("preset", "task", "overrides"),
    [
        ("pipeline-tiny-dp", "button-press-v3", []),
        ("pipeline-tiny-flow", "push-v3", []),
        ("pipeline-tiny-vla", "push-v3", []),
        ("pipeline-tiny-dp", "push-v3", ["pipeline.mode=pipeline", "staleness.strategy=roll_forward"]),
    ],
    ids=["tiny-dp-chunk_blend", "tiny-flow-rtc", "tiny-vla-public_context", "tiny-dp-roll_forward"],
)
def test_in_process_and_served_robots_apply_the_same_rows_at_the_same_steps(preset, task, overrides):
    """The shipped presets (auras with chunk_blend, with rtc, with the public context alone) and
    roll_forward in lockstep: the robot loop through an in-process agent and through `auras serve` +
    the client applies bitwise the same rows. Fails if the client drops a filling pipeline's fresher
    actions, if a strategy's guide or state is lost on the wire, or if either path runs the executor
    differently."""
    from auras.envs import make_env

    config = load_config(preset, overrides)
    seeds = (100_000, 100_001)
    with make_env(task, horizon=50) as env:
        with AurasAgent(config) as agent, AgentLink(agent, env.instruction) as link:
            executor = executor_from_config(agent.config, agent.policy_spec)
            local = [run_robot_episode(link, env, s, executor, clock=Lockstep(3)) for s in seeds]
        address = f"tcp://127.0.0.1:{free_service_port()}"
        with (
            BridgeServer(config, address).start(),
            RobotClient(address, instruction=env.instruction, ttl_s=60.0, timeout_s=60.0) as client,
        ):
            executor = executor_for(client)
            served = [run_robot(client, env, s, executor=executor, clock=Lockstep(3)) for s in seeds]
    for here, there in zip(local, served, strict=True):
        assert here.actions_applied >= 5 and here.actions_applied == there.actions_applied
        assert np.array_equal(np.stack(here.applied), np.stack(there.applied))
        assert here.staleness_steps == there.staleness_steps
