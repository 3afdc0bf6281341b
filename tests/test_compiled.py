"""policy.compile: each stage under torch.compile with its batch held static.

The graph counts come from a counting torch.compile backend (every graph dynamo hands a backend is
one compilation), so a stage that recompiled per batch size, or a policy whose stages were never
wrapped, fails here. Inductor itself (the default backend) runs in the slow tests and in
``auras bench --sweep policy.compile=off,default``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auras import AurasAgent, load_config
from auras.compiled import CompiledStage
from auras.errors import ConfigError
from tests.test_tiny_dp import observation


class CountingBackend:
    """A torch.compile backend that runs graphs eagerly and counts them."""

    def __init__(self) -> None:
        self.graphs: list[list[tuple[int, ...]]] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append([tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)])
        return gm.forward


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingBackend:
    backend = CountingBackend()
    monkeypatch.setattr("auras.compiled.BACKEND", backend)
    torch._dynamo.reset()
    yield backend
    torch._dynamo.reset()


def rowwise(x: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.tanh(x * 2 + context["h"][:, None])  # rows independent


def layer(index: int, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x * (index + 1))


def test_every_layer_stage_of_one_function_gets_its_own_graph(counting):
    """Layer stages are ``partial(layer, i)`` of one function: past dynamo's default limit of 8 graphs per function
    the later layers would run eagerly, silently; every one of 20 layers must compile."""
    import functools

    stages = [CompiledStage(functools.partial(layer, i), "default", batch=2) for i in range(20)]
    x = torch.randn(2, 4)
    for i, stage in enumerate(stages):
        torch.testing.assert_close(stage(x), layer(i, x))
    assert len(counting.graphs) == 20


def test_one_graph_serves_every_batch_up_to_the_bound_and_rows_match_the_eager_stage(counting):
    stage = CompiledStage(rowwise, "default", batch=3)
    for rows in (1, 3, 2, 1, 3):
        x, h = torch.randn(rows, 4), torch.randn(rows)
        out = stage(x, {"h": h})
        assert out.shape == (rows, 4)  # padding rows never leave the stage
        torch.testing.assert_close(out, rowwise(x, {"h": h}))
    assert len(counting.graphs) == 1 and stage.graphs == 1
    assert counting.graphs[0][0][0] == 3  # compiled for the padded batch


def test_a_fleets_batches_pad_to_doubling_sizes_with_one_graph_each(counting):
    """One robot's bound is 5 rows; a frame engine hands the stage 1 to 40 robots' rows in any order. Each call
    pads to 5, 10, 20 or 40 rows (4 graphs, not one per new largest batch), a small batch after a large one
    pads to its own size, and every row equals the eager stage's."""
    stage = CompiledStage(rowwise, "default", batch=5)
    for rows in (5, 12, 3, 40, 7, 21, 1, 38, 5):
        x, h = torch.randn(rows, 4), torch.randn(rows)
        torch.testing.assert_close(stage(x, {"h": h}), rowwise(x, {"h": h}))
    assert sorted(graph[0][0] for graph in counting.graphs) == [5, 10, 20, 40] and stage.graphs == 4
    assert (stage.padded_size(1), stage.padded_size(6), stage.padded_size(41)) == (5, 10, 80)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="mode 'off' compiles nothing"):
        CompiledStage(rowwise, "off")
    with pytest.raises(ConfigError, match=r"policy\.compile"):
        load_config(overrides=["policy.compile=fast"])
    assert load_config(overrides=["policy.compile=off"]).policy.compile == "off"  # YAML's `off` is False
    with pytest.raises(ConfigError, match=r"no compiled stages.*expected 'off'"):
        AurasAgent(load_config(overrides=["policy.type=expert", "policy.compile=default"]))


def _actions(overrides: list[str], steps: int = 10) -> tuple[np.ndarray, dict]:
    with AurasAgent(load_config(overrides=overrides)) as agent:
        size = next(iter(agent.spec.cameras.values()))[0]
        values = np.stack([agent.step(observation(i, size)).values for i in range(steps)])
        return values, agent.stats()


@pytest.mark.parametrize(
    ("policy", "extra", "stages"),
    [
        # tiny-dp: one graph per CNN block (3), the fusing head and the U-Net of a denoising step
        ("tiny-dp", ["pipeline.pp_generation=3"], 5),
        # tiny-vla: two ViT stages, the context head and one merged causal pass (public: 1 row)
        ("tiny-vla", ["pipeline.pp_generation=4", "pipeline.pp_perception=2"], 4),
    ],
)
def test_compiled_policies_from_the_config_act_as_the_eager_ones_with_one_graph_per_stage(
    counting, policy, extra, stages
):
    base = [f"policy.type={policy}", "pipeline.mode=auras", *extra]
    eager, _ = _actions(base)
    compiled, stats = _actions([*base, "policy.compile=default"])
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    assert len(counting.graphs) == stages, "a stage recompiled, broke into pieces or was never compiled"
    assert stats["compile"] == "default" and stats["compile_ms"] > 0
    assert stats["workers"][0]["compile_graphs"] == stages  # what the agent reports is what compiled
    # ten frames filled the pipeline (generation batches of 1, 2, 3 rows) and ran on full: the graph
    # count above is one per stage, so no frame recompiled


def test_smolvla_compiles_each_layer_and_the_flow_step_and_acts_as_eager(counting):
    """Patch embedding, 2 vision layers, connector, prefix assembly, 4 text layers and the velocity: 10
    graphs, none added while the pipeline fills (flow batches of 1 to 5 rows padded to 5)."""
    from tests.test_smolvla import CHECKPOINT, _observation

    base = ["policy.type=smolvla", f"policy.checkpoint={CHECKPOINT}", "pipeline.mode=auras",
            "pipeline.pp_perception=3", "pipeline.pp_generation=5"]
    results = {}
    for mode in ("off", "default"):
        with AurasAgent(load_config(overrides=[*base, f"policy.compile={mode}"])) as agent:
            cameras = dict(agent.spec.cameras)
            results[mode] = np.stack([agent.step(_observation(i, cameras)).values for i in range(10)])
    np.testing.assert_allclose(results["default"], results["off"], atol=1e-5)
    assert len(counting.graphs) == 10, "a stage recompiled, broke into pieces or was never compiled"
