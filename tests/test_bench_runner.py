"""Bench planning (cells, presets, sweeps), the smoke bench with fake stages, the tuner's search logic,
injected delays and model scaling."""

from __future__ import annotations

import json
import time
from importlib import resources

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from auras.agent import AurasAgent
from auras.bench.runner import plan_cells, with_relative_figures
from auras.bench.sweep import settings_and_sweep
from auras.bench.tune import TunePoint, grid, pareto, write_preset
from auras.cli import app
from auras.config import load_config
from auras.errors import ConfigError
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation, fake_policy

# -- planning --------------------------------------------------------------------------------------


def test_one_value_sets_a_key_and_a_list_sweeps_it():
    flags = {"pp_generation": "2,4,8", "pp_perception": "1", "alpha": None}
    overrides, sweep = settings_and_sweep(flags, ["generation=10"], ["policy.execute_steps=4,8"])
    assert overrides == ["pipeline.pp_perception=1", "policy.delay_generation_ms=10"]
    assert sweep == {"pipeline.pp_generation": ["2", "4", "8"], "policy.execute_steps": ["4", "8"]}
    with pytest.raises(ConfigError, match="--delay-ms: expected perception=MS"):
        settings_and_sweep({}, ["vision=3"], [])
    with pytest.raises(ConfigError, match="--sweep: expected KEY=V1,V2"):
        settings_and_sweep({}, [], ["pipeline.pp_generation"])


def test_cells_take_each_policys_preset_and_a_sweep_adds_only_cells_that_differ():
    run, cells = plan_cells(
        "default",
        ["bench.policies=[tiny-dp,tiny-vla]", "bench.modes=[sequential,auras]"],
        {"pipeline.pp_generation": [2, 4]},
    )
    assert run.bench.tasks == ["push-v3"]
    labels = [(c.config.policy.type, c.label) for c in cells]
    # sequential ignores pp_generation: one sequential cell per policy, not one per sweep value
    assert labels == [  # tiny-dp's preset adds chunk_blend to every mode (configs/pipeline-tiny-dp.yaml)
        ("tiny-dp", "sequential chunk_blend"), ("tiny-dp", "auras 1x2 chunk_blend"),
        ("tiny-dp", "auras 1x4 chunk_blend"),
        ("tiny-vla", "sequential"), ("tiny-vla", "auras 1x2"), ("tiny-vla", "auras 1x4"),
    ]
    vla = next(c.config for c in cells if c.config.policy.type == "tiny-vla" and c.config.pipeline.mode == "auras")
    assert vla.pipeline.emit == "public"  # from configs/pipeline-tiny-vla.yaml
    assert all(c.config.env.task == "push-v3" for c in cells)


def test_user_overrides_beat_the_policy_preset():
    _, cells = plan_cells("default", ["bench.policies=[tiny-dp]", "bench.modes=[auras]", "pipeline.pp_generation=3"])
    assert [c.config.pipeline.pp_generation for c in cells] == [3]  # the preset says 5


def test_a_bad_sweep_value_fails_before_anything_runs():
    with pytest.raises(ConfigError, match=r"pipeline\.pp_generation: got 0"):
        plan_cells("default", [], {"pipeline.pp_generation": [2, 0]})


def _row(mode, hz, rate, delay=0.0):
    point = {"policy.delay_generation_ms": delay}
    metrics = {"throughput_hz": hz, "success_rate": rate, "speedup": None, "relative_accuracy": None}
    return {"task": "t", "policy": "p", "mode": mode, "point": point, "metrics": metrics}


def test_speedup_pairs_each_row_with_the_sequential_row_of_the_same_delay():
    rows = [
        _row("sequential", 10, 0.5),
        _row("auras", 25, 0.5),
        _row("sequential", 5, 0.4, 20),
        _row("auras", 15, 0.2, 20),
    ]
    with_relative_figures(rows)
    assert [r["metrics"]["speedup"] for r in rows] == [1.0, 2.5, 1.0, 3.0]
    assert [r["metrics"]["relative_accuracy"] for r in rows] == [1.0, 1.0, 1.0, 0.5]


def test_success_lost_is_measured_against_the_frame_clock_twin_of_each_cell():
    rows = []
    for clock, rate in (("frame", 0.9), ("virtual", 0.6), ("realtime", 0.3)):
        row = _row("auras", 20, rate)
        row["point"]["bench.clock"], row["clock"] = clock, clock
        rows.append(row)
    with_relative_figures(rows)
    assert [r["metrics"]["success_lost"] for r in rows] == pytest.approx([0.0, 0.3, 0.6])


def test_the_realtime_metrics_of_a_cell_come_from_its_episodes():
    from auras.bench.episodes import EpisodeRecord, StreamRecord
    from auras.bench.runner import _summarize

    episodes = [
        EpisodeRecord(1, True, 100, 80, latency_ms=[10.0, 20.0, 30.0, 40.0], staleness_ms=[100.0, 300.0],
                      expired=2, overruns=1, deadline_misses=2, fallback_s=0.25, control_dt_s=0.0125),
        EpisodeRecord(2, False, 100, None, latency_ms=[50.0] * 6, staleness_ms=[260.0, 10.0], deadline_misses=1,
                      fallback_s=0.5, control_dt_s=0.0125),
    ]
    stream = StreamRecord([0.0, 0.1, 0.2], [5.0, 5.0, 5.0], {"perception": [1.0]}, 3.0)
    metrics = _summarize(episodes, stream, ttl_ms=250.0)
    assert metrics["control_rate_hz"] == pytest.approx(10 / 2.5)  # 10 new actions in 200 steps of 12.5 ms
    assert metrics["stale_action_ratio"] == pytest.approx(2 / 4)  # 300 and 260 ms are older than 250
    assert metrics["deadline_misses"] == 3 and metrics["fallback_s"] == pytest.approx(0.75)
    assert metrics["expired_actions"] == 2 and metrics["overruns"] == 1
    assert set(metrics["episode_latency_ms"]) == {"p50", "p95", "p99"}
    assert metrics["episode_latency_ms"]["p50"] == pytest.approx(50.0)


# -- the smoke bench with fake stages ---------------------------------------------------------------


def _fake_iterative_policy() -> Policy:
    return Policy("fake", FakeStagedPerception(2, 0.0, image_size=84), FakeDiffusion(10, 0.0), execute_steps=2)


@pytest.fixture
def fake_learned_policy(monkeypatch):
    """`policy.type=tiny-dp` builds a fake two-stage perception + fake diffusion whose costs are the
    config's injected delays (which build_policy adds, as for any policy)."""
    import auras.policies.build

    real = auras.policies.build.policy_factory

    def factory(name):
        return (lambda config: _fake_iterative_policy()) if name == "tiny-dp" else real(name)

    monkeypatch.setattr(auras.policies.build, "policy_factory", factory)


def _schema() -> dict:
    return json.loads(resources.files("auras.bench").joinpath("results.schema.json").read_text())


@pytest.mark.mujoco
def test_smoke_bench_with_fake_stages_writes_a_valid_document_and_plots(fake_learned_policy, tmp_path):
    result = CliRunner().invoke(app, [
        "bench", "--env", "mujoco", "--policy", "tiny-dp", "-t", "reach-v3", "--modes", "sequential,pipeline,auras",
        "--pp-generation", "2,4", "-n", "1", "--clock", "frame", "--delay-ms", "generation=20",
        "--delay-ms", "perception=2", "--set", "bench.stream_steps=20", "--set", "env.horizon=20",
        "--set", "bench.warmup_steps=5", "--set", "staleness.strategy=none", "--out", str(tmp_path),
        "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(document, _schema())
    labels = [r["label"] for r in document["results"]]
    assert labels == ["sequential", "pipeline 1x2", "auras 1x2", "pipeline 1x4", "auras 1x4"]
    assert document["sweep"] == {"pipeline.pp_generation": ["2", "4"]}
    for row in document["results"]:
        m = row["metrics"]
        assert m["throughput_hz"] > 0 and m["speedup"] is not None and m["episodes"] == 1
        assert len(row["samples"]["intervals_ms"]) == m["stream_actions"] - 1
    auras4 = document["results"][-1]  # 20 ms of generation over 4 stages: ~2 + 5 ms per frame, not 22 ms
    assert auras4["settings"]["pp_generation"] == 4 and auras4["metrics"]["speedup"] > 1.5
    for name in ("throughput_success.png", "intervals.png", "latency_cdf.png", "degree_sweep.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.mujoco
def test_bench_prints_a_progress_line_per_episode_when_not_on_a_terminal(fake_learned_policy, tmp_path):
    """Redirected to a file, the bench says what it is doing as it goes, not only the table at the end."""
    result = CliRunner().invoke(app, [
        "bench", "--env", "mujoco", "--policy", "tiny-dp", "-t", "reach-v3", "--modes", "sequential", "-n", "2",
        "--clock", "frame", "--set", "bench.stream_steps=10", "--set", "env.horizon=10", "--set",
        "bench.warmup_steps=2", "--set", "staleness.strategy=none", "--out", str(tmp_path), "--no-plots",
    ])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " s  [1/1] tiny-dp reach-v3 sequential" in line]
    assert [line.split(" s  ", 1)[1] for line in lines] == [
        "[1/1] tiny-dp reach-v3 sequential: episodes 1/3", "[1/1] tiny-dp reach-v3 sequential: episodes 2/3",
        "[1/1] tiny-dp reach-v3 sequential: throughput 3/3"], result.output


@pytest.mark.mujoco
def test_bench_envs_runs_a_cells_episodes_through_one_engine_and_says_so(fake_learned_policy, tmp_path):
    """--envs 2: the cell's episodes run as sessions of one engine (its stats in the row); a throughput-only
    cell runs no episodes, so it says 1. Under the frame clock the engine's frames wait long for every env."""
    from auras.bench.runner import FRAME_CLOCK_WAIT_MS, bench_engine_wait_ms

    result = CliRunner().invoke(app, [
        "bench", "--env", "mujoco", "--policy", "tiny-dp", "-t", "reach-v3", "--modes", "sequential", "-n", "2",
        "--envs", "2", "--clock", "frame", "--sweep", "bench.accuracy=true,false", "--set", "bench.stream_steps=10",
        "--set", "env.horizon=10", "--set", "bench.warmup_steps=2", "--set", "staleness.strategy=none",
        "--out", str(tmp_path), "--no-plots", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    together, throughput_only = json.loads((tmp_path / "results.json").read_text())["results"]
    assert together["settings"]["envs"] == 2 and together["metrics"]["engine"]["frames"] > 0
    assert throughput_only["settings"]["envs"] == 1 and "engine" not in throughput_only["metrics"]
    assert bench_engine_wait_ms(load_config(overrides=["bench.clock=frame"])) == FRAME_CLOCK_WAIT_MS
    assert bench_engine_wait_ms(load_config(overrides=["bench.clock=virtual", "serve.engine_wait_ms=7"])) == 7


@pytest.mark.mujoco
def test_served_bench_runs_its_episodes_through_an_auras_serve_process(tmp_path):
    """--sweep bench.served=false,true: the same cell in process and through `auras serve` + the client,
    side by side. The scripted expert (privileged) succeeds on both paths; the served cell's server
    log is kept and shows the robot's session."""
    result = CliRunner().invoke(app, [
        "bench", "--env", "mujoco", "--policy", "expert", "-t", "reach-v3", "--modes", "sequential", "-n", "2",
        "--clock", "realtime", "--sweep", "bench.served=false,true", "--set", "bench.stream_steps=10",
        "--set", "bench.warmup_steps=2", "--set", "env.horizon=120", "--out", str(tmp_path), "--no-progress",
        "--no-plots",
    ])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(document, _schema())
    assert [(r["label"], r["served"]) for r in document["results"]] == [("sequential", False),
                                                                       ("sequential served", True)]
    for row in document["results"]:
        assert row["metrics"]["episodes"] == 2 and row["metrics"]["successes"] == 2, row["metrics"]
    assert "session" in (tmp_path / "serve-2.log").read_text()


def test_served_needs_the_realtime_clock():
    with pytest.raises(ConfigError, match=r"bench\.served: the served path runs on the robot's own clock"):
        load_config(overrides=["bench.served=true", "bench.clock=virtual"])
    assert load_config(overrides=["bench.served=true", "bench.clock=realtime"]).bench.served


def test_compare_cli_prints_the_changed_fields(tmp_path):
    from tests.results_documents import results_cell, results_document

    def doc(hz):
        return results_document([results_cell("auras", label="auras 1x5", hz=hz)])

    (tmp_path / "a.json").write_text(json.dumps(doc(20.0)))
    (tmp_path / "b.json").write_text(json.dumps(doc(30.0)))
    result = CliRunner().invoke(app, ["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "throughput_hz" in result.output and "1.500x" in result.output
    missing = CliRunner().invoke(app, ["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "nope.json" in missing.output
    (tmp_path / "old.json").write_text(json.dumps({**doc(20.0), "schema_version": 1}))
    old = CliRunner().invoke(app, ["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "old.json")])
    assert old.exit_code == 2 and "schema_version 1, expected 2" in old.output


# -- tuner logic ------------------------------------------------------------------------------------


def test_grid_respects_l_max_and_the_policy_limits():
    points = grid(max_perception=2, max_generation=25, l_max=4)
    assert points == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    assert all(p + g <= 4 for p, g in points)


def test_pareto_keeps_only_undominated_evaluated_points():
    def point(hz, successes):
        p = TunePoint("auras", 1, 1, throughput_hz=hz, successes=successes, episodes=10)
        return p

    slow_good, fast_bad, dominated, unevaluated = point(20, 9), point(50, 6), point(30, 5), TunePoint("auras", 1, 2)
    unevaluated.throughput_hz = 99.0
    assert pareto([slow_good, fast_bad, dominated, unevaluated]) == [slow_good, fast_bad]


def test_write_preset_round_trips_through_load_config(tmp_path):
    from auras.config import load_config

    chosen = TunePoint("auras", 1, 4, alpha=1.0, throughput_hz=44.0, successes=9, episodes=10).as_dict()
    seq = TunePoint("sequential", 1, 1, throughput_hz=20.0, successes=10, episodes=10).as_dict()
    result = {"policy": "tiny-dp", "task": "button-press-v3", "target_hz": 40.0, "l_max": 6, "episodes": 10,
              "chosen": chosen, "sequential": seq}
    path = write_preset(result, tmp_path / "tuned.yaml")
    config = load_config(path)
    assert (config.pipeline.mode, config.pipeline.pp_generation, config.pipeline.alpha) == ("auras", 4, 1.0)
    # `auras bench -c PRESET` benches the tuned policy on the tuned task, not the bench defaults
    assert (config.bench.policies, config.bench.tasks) == (["tiny-dp"], ["button-press-v3"])
    assert "44.0 Hz" in path.read_text()


@pytest.mark.mujoco
def test_tune_finds_a_faster_setting_on_fake_stages(fake_learned_policy, tmp_path):
    result = CliRunner().invoke(app, [
        "tune", "--policy", "tiny-dp", "--target-hz", "1", "--l-max", "3", "-n", "1", "-t", "reach-v3",
        "--alphas", "1", "--set", "policy.delay_generation_ms=10",
        "--set", "bench.stream_steps=20", "--set", "env.horizon=40", "--set", "bench.warmup_steps=2",
        "--set", "staleness.strategy=none", "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    tuned = json.loads((tmp_path / "tune.json").read_text())
    shapes = {(p["pp_perception"], p["pp_generation"]) for p in tuned["points"] if p["mode"] == "auras"}
    assert shapes == {(1, 1), (1, 2), (2, 1)}
    assert tuned["chosen"]["throughput_hz"] >= 1 and tuned["meets_target"]
    assert (tmp_path / "tuned-tiny-dp.yaml").exists()
    skewed = [p for p in tuned["points"] if p["alpha"] == 1.0 and p["success_rate"] is not None]
    assert len(tuned["alpha_trade"]) == len(skewed)  # each evaluated alpha: what it bought and what it paid
    for trade, point in zip(tuned["alpha_trade"], skewed, strict=True):
        assert trade["alpha"] == 1.0 and trade["rate_paid_hz"] == pytest.approx(
            trade["rate_paid"] * point["throughput_hz"] / (1 - trade["rate_paid"]))


# -- injected delay and model scaling ----------------------------------------------------------------


def test_injected_delay_adds_latency_and_changes_nothing_else():
    import torch

    from auras.policies.delay import with_injected_delay

    base = _fake_iterative_policy()
    delayed = with_injected_delay(base, perception_ms=20, generation_ms=40)
    obs = [fake_observation(3, image_size=84)]
    start = time.perf_counter()
    context = delayed.perception.perceive(obs)
    assert time.perf_counter() - start >= 0.020
    assert torch.equal(context["H_o"], base.perception.perceive(obs)["H_o"])
    x, first = delayed.generation.initial_noise(1), torch.zeros(1, dtype=torch.int64)
    start = time.perf_counter()
    out = delayed.generation.denoise(x, first, torch.tensor([5]), context)  # 5 of 10 steps: half the delay
    assert time.perf_counter() - start >= 0.020
    assert torch.equal(out, base.generation.denoise(x, first, torch.tensor([5]), context))
    assert len(delayed.perception.stages()) == 2
    assert with_injected_delay(fake_policy()).generation.__class__.__name__ == "FakeGeneration"  # no-op: unwrapped
    with pytest.raises(ValueError, match="must be >= 0 ms"):
        with_injected_delay(base, perception_ms=-1)


def test_scaled_configs_grow_depth_or_width_and_keep_normalisation():
    from auras.policies.tiny_dp.modeling import TinyDP
    from auras.policies.tiny_vla.modeling import TinyVLA

    dp = TinyDP.scaled_config(dict(TinyDP.defaults(), action_min=[-2.0] * 4), perception=0.5, generation=2.0)
    assert dp["down_dims"] == [64, 128, 256] and dp["cnn_channels"] == [16, 32, 64]
    assert dp["action_min"] == [-2.0] * 4
    vla = TinyVLA.scaled_config(TinyVLA.defaults(), perception=1.0, generation=2.0)
    assert (vla["vit_layers"], vla["lm_layers"]) == (3, 12)


def test_build_policy_scales_the_shipped_model_with_random_weights():
    from auras.config import load_config
    from auras.policies import build_policy

    base = build_policy(load_config(overrides=["policy.type=tiny-vla"]))
    big = build_policy(load_config(overrides=["policy.type=tiny-vla", "policy.scale_generation=2"]))
    assert len(big.generation.model.lm.model.layers) == 2 * len(base.generation.model.lm.model.layers)
    with pytest.raises(ConfigError, match="the scripted expert has no model to scale"):
        build_policy(load_config(overrides=["policy.scale_generation=2"]))


def test_results_document_samples_are_plain_numbers():
    from auras.bench.episodes import StreamRecord
    from auras.bench.runner import BenchCell, _row
    from auras.config import load_config

    cell = BenchCell(load_config(), (), "sequential")
    stream = StreamRecord([0.0, 0.01, 0.03], [1.0, 2.0, 3.0], {"generation": [1.0]}, 5.0)
    row = _row(cell, True, [], stream, {"compile_ms": 0.0, "context_transport": "in-process"})
    assert row["samples"]["intervals_ms"] == [10.0, 20.0] and row["metrics"]["success_rate"] is None
    assert np.isclose(row["metrics"]["throughput_hz"], 2 / 0.03)


def test_a_pacing_sweep_gives_each_period_its_own_labelled_cell():
    _, cells = plan_cells("default", ["bench.policies=[tiny-dp]", "bench.modes=[auras]"],
                          {"pipeline.frame_period_ms": [0, 30, "auto"]})
    labels = ["auras 1x5 chunk_blend", "auras 1x5 paced 30 ms chunk_blend", "auras 1x5 paced auto chunk_blend"]
    assert [c.label for c in cells] == labels
    assert [c.config.pipeline.frame_period_ms for c in cells] == [0, 30, "auto"]


@pytest.mark.mujoco
@pytest.mark.parametrize(("policy", "mode"), [("tiny-vla", "auras"), ("expert", "sequential")])
def test_episodes_run_together_act_as_one_at_a_time(policy, mode):
    """``bench.envs``: the episodes of a cell run 3 at a time as sessions of one frame engine whose frames
    batch them. Under the frame clock each episode acts exactly as it does alone: the same rows applied
    (actions_sha), success and steps, seed by seed (bitwise for these policies: tokens and a one-shot
    expert; see docs/fleet.md for the float deviation of the denoising policies)."""
    from auras.bench.runner import measure_accuracy
    from auras.pipeline import build_engine, build_executor

    config = load_config(f"pipeline-{policy}" if policy != "expert" else None, [
        f"policy.type={policy}", f"pipeline.mode={mode}", "bench.clock=frame", "bench.episodes=4",
        "env.horizon=60", "env.task=push-v3"])
    with AurasAgent(config) as agent:
        alone = measure_accuracy(agent, config)
    together_config = config.model_copy(update={"bench": config.bench.model_copy(update={"envs": 3})})
    engine = build_engine(together_config)
    try:
        with AurasAgent(together_config, executor=build_executor(together_config, engine=engine)) as agent:
            together = measure_accuracy(agent, together_config, engine=engine)
        stats = engine.stats()
    finally:
        engine.close()
    assert stats["largest_frame"] >= 2  # the envs really shared frames
    assert [e.seed for e in together] == [e.seed for e in alone]
    for a, b in zip(alone, together, strict=True):
        assert (a.actions_sha, a.success, a.steps) == (b.actions_sha, b.success, b.steps), a.seed
