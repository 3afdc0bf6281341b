"""agent.stream(): submit observations from one thread, iterate actions in another."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from auras import AurasAgent, load_config
from auras.errors import AgentClosedError, InvalidInputError, StepFailedError
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation


def _agent(mode: str = "auras", delay_s: float = 0.0, generation=None) -> AurasAgent:
    config = load_config(overrides=[f"pipeline.mode={mode}", "pipeline.pp_generation=3"])
    generation = generation if generation is not None else FakeDiffusion(12, delay_s)
    return AurasAgent(config, policy=Policy("fake-dp", FakeStagedPerception(4), generation))


@pytest.mark.parametrize("mode", ["sequential", "auras", "parallel"])
def test_a_fast_camera_drops_frames_and_every_action_traces_to_an_admitted_one(mode):
    with _agent(mode, delay_s=0.005) as agent, agent.stream() as stream:
        enough = threading.Event()

        def camera():
            i = 0
            while not enough.is_set():
                stream.submit(fake_observation(i))
                i += 1
                time.sleep(0.001)  # faster than the policy

        producer = threading.Thread(target=camera)
        producer.start()
        actions = [stream.get(timeout=30) for _ in range(8)]
        enough.set()
        producer.join()
    assert stream.dropped > 0 and stream.admitted + stream.dropped <= stream.submitted
    # after close every submitted observation is accounted for exactly once, also those in flight
    assert stream.submitted == stream.dropped + stream.answered + stream.unanswered
    step_ids = [a.step_id for a in actions]
    assert stream.answered >= len(set(step_ids)) and stream.emitted >= stream.answered
    assert step_ids == sorted(step_ids) and max(step_ids) < stream.submitted
    frames = [a.frame for a in actions]
    assert frames == sorted(frames)


def test_iteration_yields_actions_in_order_and_ends_after_close():
    with _agent() as agent:
        stream = agent.stream()
        for i in range(5):
            stream.submit(fake_observation(i))
            time.sleep(0.01)
        first = next(iter(stream))
        stream.close()
        rest = list(stream)  # undelivered actions stay readable, then iteration stops
    assert [a.frame for a in [first, *rest]] == sorted(a.frame for a in [first, *rest])
    with pytest.raises(AgentClosedError):
        stream.submit(fake_observation(9))


def test_bad_input_is_rejected_in_the_callers_thread_and_the_stream_keeps_going():
    with _agent() as agent, agent.stream() as stream:
        bad = fake_observation(0)
        object.__setattr__(bad, "images", {"front": np.zeros((3, 3, 3), np.uint8)})
        with pytest.raises(InvalidInputError, match="front"):
            stream.submit(bad)
        with pytest.raises(InvalidInputError, match=r"expected an auras\.Observation"):
            stream.submit("not an observation")
        stream.submit(fake_observation(1))
        assert stream.get(timeout=30).step_id == 1


def test_an_executor_error_reaches_the_consumer():
    class Broken:
        def __new__(cls):
            diffusion = FakeDiffusion(12)

            def denoise(*args):
                raise ValueError("denoiser exploded")

            diffusion.denoise = denoise
            return diffusion

    with _agent("auras", generation=Broken()) as agent, agent.stream() as stream:
        stream.submit(fake_observation(0))
        with pytest.raises(StepFailedError, match="denoiser exploded"):
            stream.get(timeout=30)


def test_a_replaced_worker_is_reported_and_the_stream_goes_on():
    from auras.errors import WorkerRestartedError
    from auras.pipeline import build_executor
    from tests.fakes import HookedExecutor

    events, calls = [], []

    def before(obs) -> None:
        calls.append(obs.step_id)
        if len(calls) == 2:
            raise WorkerRestartedError("generation worker replaced")

    config = load_config(overrides=["pipeline.mode=auras", "pipeline.pp_generation=3"])
    inner = build_executor(config, Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12)))
    with AurasAgent(config, executor=HookedExecutor(inner, before)) as agent, \
            agent.stream(on_event=events.append) as stream:
        for i in range(3):
            stream.submit(fake_observation(i))
            while len(calls) <= i:
                time.sleep(0.001)
        first, third = stream.get(timeout=30), stream.get(timeout=30)
    assert (first.step_id, third.step_id) != (None, None) and stream.restarts == 1
    assert [e["event"] for e in events] == ["worker_restarted"] and events[0]["step_id"] == 1


def test_paced_frames_start_a_period_apart_and_admit_the_newest_observation_at_their_tick():
    """frame_period_ms 40 with a 1 kHz camera and ~5 ms frames: frames start >= 40 ms apart (unpaced they
    would run back to back), and each admits an observation submitted at most a few ms before its tick."""
    config = load_config(overrides=["pipeline.mode=auras", "pipeline.pp_generation=3", "pipeline.frame_period_ms=40"])
    agent = AurasAgent(config, policy=Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12, 0.005)))
    submitted_at: dict[int, float] = {}
    with agent, agent.stream() as stream:
        enough = threading.Event()

        def camera():
            i = 0
            while not enough.is_set():
                submitted_at[i] = time.monotonic()
                stream.submit(fake_observation(i))
                i += 1
                time.sleep(0.001)

        producer = threading.Thread(target=camera)
        producer.start()
        actions = [stream.get(timeout=30) for _ in range(8)]
        enough.set()
        producer.join()
    filled = [a for a in actions if a.step_id != actions[0].step_id]  # the fill replays the first observation
    admitted = [submitted_at[a.step_id] for a in filled]
    gaps = np.diff(admitted)
    assert len(gaps) >= 4
    # the period apart (unpaced: ~5 ms); a starved camera thread can make one admitted frame a few ms older
    assert gaps.mean() >= 0.036 and gaps.min() >= 0.020, gaps
    assert stream.pacer.waited_s > 0 and stream.dropped > 8 * 20  # it waited; the camera's frames in between dropped


def test_on_action_receives_every_action_in_order_in_the_streams_thread_and_iteration_only_waits_for_the_end():
    got, threads = [], set()

    def on_action(action):
        got.append(action)
        threads.add(threading.current_thread().name)

    with _agent() as agent:
        stream = agent.stream(on_action=on_action)
        for i in range(6):
            stream.submit(fake_observation(i))
            time.sleep(0.02)
        stream.close()
        assert list(stream) == []  # nothing queued: the callback had every action
    assert got and [a.frame for a in got] == sorted(a.frame for a in got) and threads == {"auras-stream"}
    assert stream.emitted == len(got) and stream.submitted == stream.dropped + stream.answered + stream.unanswered


def test_an_error_in_on_action_ends_the_stream_and_reaches_the_consumer():
    def on_action(action):
        raise RuntimeError("the robot link is gone")

    with _agent() as agent, agent.stream(on_action=on_action) as stream:
        stream.submit(fake_observation(0))
        with pytest.raises(StepFailedError, match="robot link"):
            stream.get(timeout=30)


def test_release_on_tick_holds_each_paced_action_for_its_tick():
    overrides = ["pipeline.mode=auras", "pipeline.pp_generation=3", "pipeline.frame_period_ms=40",
                 "pipeline.release=on_tick"]
    agent = AurasAgent(load_config(overrides=overrides),
                       policy=Policy("fake-dp", FakeStagedPerception(4), FakeDiffusion(12, 0.002)))
    with agent, agent.stream() as stream:
        for i in range(5):
            stream.submit(fake_observation(i))
            stream.get(timeout=30)
    assert stream.pacer.on_tick and stream.pacer.held_s > 0  # ~2 ms frames held towards their 40 ms ticks
