"""The VLA-scale benchmark path: the same tiny-vla classes in bf16 on any device, in both modes."""

from __future__ import annotations

import pytest

from tests.scripts import load_script


def _benchmark():
    return load_script("vla_scale_benchmark")


def test_a_shrunken_openvla_shape_runs_in_bf16_in_sequential_and_auras_on_cpu():
    result = _benchmark().run(scale=0.05, device="cpu", dtype="bfloat16", steps=3, warmup=1, pp_generation=4)
    assert set(result["modes"]) == {"sequential", "auras"}
    assert all(m["throughput_hz"] > 0 for m in result["modes"].values())
    assert result["tokens_per_request"] == 4 and result["speedup"] > 0


@pytest.mark.gpu
def test_a_quarter_scale_openvla_shape_runs_on_cuda():
    result = _benchmark().run(scale=0.25, device="cuda", dtype="bfloat16", steps=5, warmup=2, pp_generation=4)
    assert result["modes"]["auras"]["peak_memory_gb"] > 0 and result["speedup"] > 0
