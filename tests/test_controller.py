"""The adaptive pipeline: the depth decision, and re-planning a running pipeline without losing or
repeating an action."""

from __future__ import annotations

import pytest

from auras import AurasAgent, load_config
from auras.clock import FakeClock
from auras.errors import ConfigError
from auras.pipeline.controller import DepthController
from auras.pipeline.pacing import pacer_for
from auras.policies.base import Policy
from auras.policies.delay import with_injected_delay
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation


def _drive(controller: DepthController, frame_s, frames: int) -> list[int]:
    """Feed ``frames`` frames whose time is ``frame_s(depth)``; the depth after each."""
    depths = []
    for _ in range(frames):
        controller.observe(frame_s(controller.depth), staleness_ms=10.0)
        depths.append(controller.depth)
    return depths


def test_the_controller_deepens_until_the_target_holds_and_comes_back_when_the_load_drops():
    """Frames cost 114 ms / depth, paced 1.05x apart: 25 Hz needs depth 3 (3 holds 25.1 Hz, 2 holds 16.7),
    which depth 1's shortfall (8.4 Hz) says in one step; with the cost halved, depth 2 leaves room
    (33 Hz >= 1.15 x 25) and depth 1 does not, so it settles at 2."""
    c = DepthController(25.0, max_depth=12, start=1, window=5)
    depths = _drive(c, lambda d: 0.120 / d * 0.95, 40)
    assert depths[-1] == 3 and [r.new for r in c.replans] == [3]
    depths = _drive(c, lambda d: 0.060 / d * 0.95, 60)
    assert depths[-1] == 2 and c.replans[-1].new == 2
    assert all(r.reason for r in c.replans)


def test_a_shortfall_deepens_in_one_step_with_frames_that_keep_a_fixed_cost_in_several():
    """Frames of 20 ms + 240 ms / depth: 20 Hz needs depth 9 (paced, 8 holds 19.0 Hz and 9 20.4 Hz).
    The proportional estimate undershoots, never overshoots, and a re-plan at most doubles the depth:
    2 -> 4 (the estimate says 6), ceil(4 x 20 / 11.9) = 7, 8, 9: four windows where one stage at a
    time takes seven. max_depth caps it."""
    c = DepthController(20.0, max_depth=16, start=2, window=4)
    _drive(c, lambda d: 0.020 + 0.240 / d, 40)
    assert [r.new for r in c.replans] == [4, 7, 8, 9] and c.depth == 9
    capped = DepthController(20.0, max_depth=4, start=2, window=4)
    _drive(capped, lambda d: 0.800 / d, 8)
    assert [r.new for r in capped.replans] == [4]


def test_one_window_of_stalls_deepens_at_most_twofold():
    """Three frames of a 20-frame window stalled for a second (a paused machine): p90 says 0.9 Hz
    against a 20 Hz target, an estimate of depth 88; the controller doubles instead."""
    c = DepthController(20.0, max_depth=64, start=4, window=20)
    for i in range(20):
        c.observe(1.0 if i < 3 else 0.040, 10.0)
    assert [r.new for r in c.replans] == [8]


def test_a_deep_jump_stops_short_of_a_depth_measured_no_faster_and_not_at_one_that_held_an_old_load():
    c = DepthController(20.0, max_depth=16, start=3, window=4)
    c.measured[4] = (21.0, 10.0, 0)  # depth 4 held the target, perhaps under a lighter load
    _drive(c, lambda d: 0.200 / d, 4)  # depth 3 holds 14.3 Hz now: the estimate says 5
    assert [r.new for r in c.replans] == [5]
    c = DepthController(10.0, max_depth=16, start=3, window=4)
    c.measured[5] = (4.0, 10.0, 0)  # depth 5 was measured slower than depth 3 is now
    _drive(c, lambda d: 0.400 / d, 4)  # depth 3 holds 7.1 Hz: the estimate says 5
    assert [r.new for r in c.replans] == [4]


def test_without_a_target_it_finds_the_fastest_depth_and_a_staleness_bound_caps_it():
    cost = {1: 0.1, 2: 0.06, 3: 0.05, 4: 0.055, 5: 0.06}  # batching helps up to depth 3, then it costs
    c = DepthController(0.0, max_depth=5, start=1, window=4)
    _drive(c, lambda d: cost[d], 60)
    assert c.depth == 3
    bounded = DepthController(0.0, max_depth=5, start=3, window=4, staleness_bound_ms=30.0)
    for _ in range(8):
        bounded.observe(cost[bounded.depth], staleness_ms=20.0 * bounded.depth)  # deeper: older actions
    assert bounded.depth == 1 and "above the bound" in bounded.replans[0].reason


def test_bad_controller_settings_are_refused():
    with pytest.raises(ConfigError, match=r"starting depth in 1\.\.4"):
        DepthController(10.0, max_depth=4, start=5)
    with pytest.raises(ConfigError, match="mode pipeline or auras"):
        load_config(None, ["pipeline.controller=adaptive", "pipeline.mode=sequential"])
    load_config(None, ["pipeline.controller=adaptive", "pipeline.mode=auras", "pipeline.backend=ray"])  # runs on ray
    # a re-plan is a session of the same actors: a pair of GPU actors needs no room for a second pair
    load_config(None, ["pipeline.controller=adaptive", "pipeline.mode=auras", "pipeline.backend=ray",
                       "policy.device=cuda"])


@pytest.mark.parametrize("mode", ["auras", "pipeline"])
def test_a_load_step_re_plans_the_running_pipeline_without_losing_or_repeating_an_action(mode):
    """On a fake clock, a fake diffusion policy whose generation costs exactly 120 ms per request (spread
    over the depth like the injected delay), target 20 Hz: depth 2 (60 ms frames) cannot hold it, depth 3
    (40 ms) can, so the pipeline settles at 3; then generation doubles and it deepens again; then it drops
    to a quarter and the pipeline comes back to shallower depths. Every admitted request's action comes out
    exactly once, in order, through every switch."""
    clock = FakeClock()
    generation = with_injected_delay(Policy("fake-dp", FakeStagedPerception(2), FakeDiffusion(12)), 0.0, 120.0,
                                     sleep=clock.sleep)
    overrides = [f"pipeline.mode={mode}", "pipeline.controller=adaptive", "pipeline.target_hz=20",
                 "pipeline.controller_window=5"]
    with AurasAgent(load_config(None, overrides), policy=generation, clock=clock) as agent:
        executor = agent.executor
        made = [executor.current]
        make = executor.make_frames
        executor.make_frames = lambda shape: made.append(make(shape)) or made[-1]
        actions = []
        for i in range(45):
            actions.append(agent.step(fake_observation(i)))
        first = agent.stats()["controller"]
        first_depth = first["pp_generation"]
        generation.generation.injected_s = 0.240  # generation twice as slow
        for i in range(45, 110):
            actions.append(agent.step(fake_observation(i)))
        deep = agent.stats()["controller"]
        generation.generation.injected_s = 0.060
        for i in range(110, 190):
            actions.append(agent.step(fake_observation(i)))
        stats = agent.stats()["controller"]
        inflight = executor.current.inflight + (executor.draining.inflight if executor.draining else 0)
    # 120 ms over depth 2 cannot hold 20 Hz (15.9 Hz measured), over 3 it can (23.8 Hz): exactly, on this clock
    held = [int(d) for d, m in first["measured"].items() if m["rate_hz"] >= 0.97 * 20]
    assert min(held) == 3 and first_depth == 3, first
    assert deep["pp_generation"] == 6 and len(deep["replans"]) > len(first["replans"]), deep  # deepened again
    assert stats["pp_generation"] == 2, stats  # back down once generation costs a quarter
    assert [(r["old"], r["new"]) for r in stats["replans"]] == [
        (1, 3), (3, 2), (2, 3), (3, 6), (6, 5), (5, 7), (7, 6), (6, 3), (3, 2), (2, 1), (1, 2)
    ], stats  # the same decisions on every run and machine
    distinct = list({id(a): a for a in actions}.values())
    steps = [a.step_id for a in distinct]
    assert steps == sorted(set(steps)), "an action came out twice or out of order"
    assert len(distinct) == sum(f.admitted for f in made) - inflight, "an admitted request's action was lost"
    if mode == "auras":
        assert all(a.context_step_id >= a.step_id for a in distinct)


def test_the_adaptive_controller_sets_the_frame_period_and_the_pacer_follows_it():
    """Before any frame is measured the period is the target's (50 ms at 20 Hz); fast frames keep it there
    (intervals hold at the target); frames slower than the target set it to 1.05 x their p90."""
    c = DepthController(20.0, max_depth=4, start=4, window=50)
    assert c.period_s == pytest.approx(0.05)
    for _ in range(10):
        c.observe(0.01, 5.0)
    assert c.period_s == pytest.approx(0.05)
    for _ in range(40):
        c.observe(0.08, 5.0)
    assert c.period_s == pytest.approx(1.05 * 0.08)
    policy = Policy("fake-dp", FakeStagedPerception(2), FakeDiffusion(12))
    overrides = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.target_hz=20"]
    with AurasAgent(load_config(None, overrides), policy=policy) as agent:
        pacer = pacer_for(agent)
        assert pacer.period_s == pytest.approx(0.05) == agent.frame_period_s
    with AurasAgent(load_config(None, ["pipeline.frame_period_ms=30"]), policy=policy) as agent:
        assert pacer_for(agent).period_s == pytest.approx(0.03) and agent.frame_period_s is None


@pytest.mark.parametrize("fetch_offset", [0, -1])
def test_a_draining_pipeline_reads_the_contexts_of_the_pipeline_replacing_it(fetch_offset):
    """Depth 4 -> 6 in mode auras: the old pipeline admits nothing while its requests drain. Its
    generation calls read the new pipeline's contexts (the fake's H_o is the observation's step id) as
    a steady pipeline reads its own: with fetch_offset 0 the context perceived in the same frame (the
    observation just offered), with -1 the previous frame's. Without the lending every drained action
    would read the last context admitted before the switch (step 9)."""
    generation = FakeDiffusion(12)
    policy = Policy("fake-dp", FakeStagedPerception(2), generation)
    overrides = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.pp_generation=4",
                 "pipeline.target_hz=1", "pipeline.controller_window=1000",
                 f"pipeline.fetch_offset={fetch_offset}"]
    with AurasAgent(load_config(None, overrides), policy=policy) as agent:
        executor = agent.executor
        for i in range(10):
            agent.step(fake_observation(i))
        old = executor.current
        executor.switch(6)
        drained = []
        for i in range(10, 30):
            emitted_before = old.emitted
            action = agent.step(fake_observation(i))
            if old.emitted > emitted_before:  # the old pipeline emitted this step's action
                read = generation.calls[-1]["h_o"]  # its generation call runs last in the frame
                drained.append((i, action.context_step_id, read))
                assert action.staleness_frames == -fetch_offset, action  # as a steady pipeline's
        assert executor.draining is None
    assert len(drained) == 3 - fetch_offset, drained  # in flight after a frame: lifetime - 1
    lag = -fetch_offset
    for i, context_step, read in drained[lag:]:  # with -1 the first drained frame precedes any new context
        assert context_step == i - lag, drained
        assert set(read) == {float(i - lag)}, drained  # every in-flight request read that one context


def test_going_down_to_a_one_frame_pipeline_admits_again_once_the_old_one_is_empty():
    """A one-frame pipeline emits in the frame it admits, so it may only start once the old pipeline
    has emitted its last action; it must then start (a pipeline that never admits again would hand the
    robot the same action forever)."""
    policy = Policy("fake-dp", FakeStagedPerception(2), FakeDiffusion(12))
    overrides = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.pp_generation=3",
                 "pipeline.target_hz=1", "pipeline.controller_window=1000"]
    with AurasAgent(load_config(None, overrides), policy=policy) as agent:
        executor = agent.executor
        actions = [agent.step(fake_observation(i)) for i in range(6)]
        executor.switch(1)
        actions += [agent.step(fake_observation(i)) for i in range(6, 12)]
        assert executor.draining is None and executor.shape.pp_generation == 1
    steps = [a.step_id for a in actions]
    assert steps[-3:] == [9, 10, 11], steps  # depth 1 answers each observation in its own step
    after = list({id(a): a for a in actions[6:]}.values())  # the fill repeats observation 0, so only these
    assert [a.step_id for a in after] == sorted({a.step_id for a in after}), steps  # none twice, none late


def test_room_above_the_target_makes_it_shallower_in_proportion_at_most_halving():
    """Frames of 10 ms + 200 ms / depth at depth 16 hold 42 Hz against a 10 Hz target: the estimate
    says depth 4, a re-plan halves at most (16 -> 8 -> 4 -> 3); depth 3 still leaves room (12.4 Hz),
    depth 2 misses (8.7 Hz), so it comes back to 3 and stays. A depth recently measured below the
    target stops the descent above it."""
    c = DepthController(10.0, max_depth=32, start=16, window=4)
    _drive(c, lambda d: 0.010 + 0.200 / d, 40)
    assert [r.new for r in c.replans] == [8, 4, 3, 2, 3] and c.depth == 3, c.replans
    c = DepthController(10.0, max_depth=32, start=16, window=4)
    c.measured[6] = (9.0, 10.0, 0)
    _drive(c, lambda d: 0.010 + 0.200 / d, 4)
    assert [r.new for r in c.replans] == [8]  # the estimate (4) and the halving (8): 8 is above 6
    c = DepthController(10.0, max_depth=32, start=8, window=4)
    c.measured[5] = (9.0, 10.0, 0)
    _drive(c, lambda d: 0.005 + 0.100 / d, 4)  # 8 holds 54 Hz: estimate 2, halving 4, 5 missed: 6
    assert [r.new for r in c.replans] == [6]



def test_three_frames_far_too_slow_close_the_window_early_and_one_stall_does_not():
    c = DepthController(20.0, max_depth=16, start=3, window=20)
    for _ in range(5):
        c.observe(0.040, 10.0)  # 40 ms frames: on target
    assert c.observe(0.500, 10.0) is None  # one stall is not a slow-down
    for _ in range(3):
        c.observe(0.040, 10.0)
    decisions = [c.observe(0.090, 10.0) for _ in range(3)]  # 90 ms: 1.8x the 50 ms period
    assert decisions[:2] == [None, None] and decisions[2] == 6 and c.replans[0].frame == 12


ADAPTIVE_BY_HAND = ["pipeline.mode=auras", "pipeline.controller=adaptive", "pipeline.pp_generation=3",
                    "pipeline.target_hz=1", "pipeline.controller_window=1000"]


def test_a_re_plan_after_another_robot_replaced_the_shared_workers_restarts_it_once_and_no_one_twice():
    """Robot b replaced the shared engine's workers after robot a's last frame; a then re-plans. Its new
    session must run on the workers a's old session ran on: a sees one restart and the workers are not
    replaced a second time (which would restart b, and every robot of the engine, again)."""
    from auras.errors import WorkerRestartedError
    from auras.pipeline import build_executor
    from auras.pipeline.engine import FrameEngine
    from auras.pipeline.frames import FrameExecutor, FrameShape

    config = load_config(None, ADAPTIVE_BY_HAND)
    engine = FrameEngine(Policy("fake-dp", FakeStagedPerception(2), FakeDiffusion(12)))
    a, b = build_executor(config, engine=engine), FrameExecutor(engine, FrameShape(1, 3))
    for i in range(5):
        a.step(fake_observation(i))
        b.step(fake_observation(i))
    b.replace_workers()
    a.switch(5)
    with pytest.raises(WorkerRestartedError):
        a.step(fake_observation(5))
    assert engine.counters.replacements == 1 and a.restarts == 1
    for i in range(6, 12):
        b.step(fake_observation(i))  # b never restarts again
        action = a.step(fake_observation(i))
    assert action.context_step_id >= 6 and b.restarts == 0
    a.close()
    b.close()
    engine.close()


def test_a_reset_during_a_re_plan_resets_the_policy_and_the_engine_counts_one_robot():
    """An agent's adaptive pipeline mid re-plan has two sessions on its engine: they count as one robot
    (admission and the router read it), and a reset then still resets the policy's per-episode state (the
    draining session, closed by the reset, is no other robot)."""
    generation = FakeDiffusion(12)
    resets = []
    generation.reset = lambda: resets.append(1)
    with AurasAgent(load_config(None, ADAPTIVE_BY_HAND), policy=Policy("fake-dp", FakeStagedPerception(2),
                                                                       generation)) as agent:
        executor = agent.executor
        for i in range(6):
            agent.step(fake_observation(i))
        executor.switch(5)
        agent.step(fake_observation(6))
        assert executor.draining is not None
        assert executor.engine.sessions == 1 and executor.engine.stats()["sessions"] == 1
        before = len(resets)
        agent.reset()
        assert len(resets) == before + 1
