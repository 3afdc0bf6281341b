"""scripts/gpu_check.sh, checked without a GPU: the dry run prints the GPU commands and runs none, the
CPU smoke mode runs the whole path (probe, gpu-marked tests, the benchmark on the local and Ray
backends, one summary) at a tiny scale, and the summary of a GPU-shaped run (two placements, compiled
and not, a stage that failed, a configuration stopped mid-way) says what it must."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _check(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _benchmark_module():
    return load_script("vla_scale_benchmark")


def test_the_dry_run_prints_the_install_tests_and_both_placements_and_runs_nothing(tmp_path):
    out = tmp_path / "summary.json"
    run = _check("--dry-run", "--out", str(out))
    assert run.returncode == 0, run.stderr
    text = run.stdout
    for expected in (
        "-m venv --system-site-packages", "-m pip install --quiet torch==2.13.0", "-m pip install --quiet -e '.[dev]'",
        "-m pytest -m gpu", "--backend local --device cuda", "--backend ray --device cuda --modes sequential,auras",
        "--dtype bfloat16 --scale 0.5", "--compile off,reduce-overhead", "summarize --out " + str(out),
        "fleet_capacity.py --policy tiny-dp --device cuda --dtype bfloat16",
    ):
        assert expected in text, f"{expected!r} not in the dry run:\n{text}"
    assert "constraints-cpu" not in text  # a CUDA machine gets the default index's CUDA torch
    assert not out.exists() and not (tmp_path / "summary.d").exists()


def test_bad_usage_is_exit_status_2_with_a_message():
    run = _check("--steps", "many")
    assert run.returncode == 2 and "whole number" in run.stderr
    run = _check("--no-such-option")
    assert run.returncode == 2 and "unknown option" in run.stderr


@pytest.mark.skipif(bool(shutil.which("nvidia-smi")) or Path("/dev/nvidia0").exists(), reason="a GPU is visible")
def test_the_gpu_check_on_a_machine_without_a_gpu_fails_clearly_and_still_writes_its_summary(tmp_path):
    out = tmp_path / "summary.json"
    run = _check("--out", str(out), "--no-install", "--python", sys.executable)
    assert run.returncode == 1
    assert "no NVIDIA GPU visible" in run.stdout and "--cpu-smoke" in run.stdout
    summary = json.loads(out.read_text())
    assert not summary["ok"] and summary["failed"] == ["preflight"]
    assert {s["name"]: s["status"] for s in summary["stages"]}["bench-1gpu"] == "not-run"


@pytest.mark.ray
@pytest.mark.slow  # about 70 s; tests/test_vla_scale.py runs the benchmark's CPU path in the default suite
def test_the_cpu_smoke_runs_the_whole_path_and_writes_one_summary(tmp_path):
    out = tmp_path / "summary.json"
    run = _check("--cpu-smoke", "--python", sys.executable, "--out", str(out), timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["schema"] == "auras-gpu-check/1" and summary["mode"] == "cpu-smoke" and summary["ok"]
    stages = {s["name"]: s["status"] for s in summary["stages"]}
    assert stages == {
        "setup": "skipped",
        "probe": "ok",
        "tests": "ok",
        "bench-local": "ok",
        "bench-ray": "ok",
        "smolvla": "skipped",
        "pi0": "skipped",
        "openvla": "skipped",
        "fleet": "ok",
    }  # full-size SmolVLA, π0 and OpenVLA run on a GPU only
    assert summary["host"]["python"] and summary["host"]["cuda_available"] is False
    assert summary["tests"]["failures"] == summary["tests"]["errors"] == 0 and summary["tests"]["skipped"] >= 1

    bench = summary["benchmark"]
    assert bench["scale"] == 0.05 and bench["dtype"] == "bfloat16" and bench["parameters"] > 1e6
    configs = {(c["placement"], c["mode"]): c for c in bench["configs"]}
    assert set(configs) == {("cpu", "sequential"), ("cpu", "auras"), ("cpu-ray", "auras")}
    for c in configs.values():
        assert c["status"] == "ok" and c["compile"] == "off" and c["throughput_hz"] > 0
        assert c["startup_ms"] > 0 and {"perception", "generation"} <= set(c["stage_ms_p50"])
    ray = configs[("cpu-ray", "auras")]
    assert ray["backend"] == "ray" and ray["device"] == "cpu"  # the policy was built in the actors, by name
    assert [s["what"] for s in bench["speedups"]] == ["auras / sequential"]
    assert "| placement | compile | mode |" in run.stdout and "summary: " + str(out) in run.stdout


def _config(placement: str, compile: str, mode: str, hz: float | None, status: str = "ok") -> dict:
    record = {"placement": placement, "gpus": 2 if placement == "2gpu" else 1, "compile": compile, "mode": mode,
              "status": status, "backend": "ray" if placement == "2gpu" else "local", "device": "cuda"}
    if status == "ok":
        record.update(throughput_hz=hz, step_ms_p50=1000 / hz, stage_ms_p50={"perception": 5.0, "generation": 9.0},
                      startup_ms=40_000.0 if compile != "off" else 900.0, compile_ms=30_000.0 if compile != "off"
                      else 0.0, peak_memory_gb=2.0, devices={"perception": "cuda", "generation": "cuda"},
                      context_transport="in-process" if placement == "1gpu" else "pinned-host")
    elif status == "skipped":
        record["error"] = "deadline: 180 s spent before it started"
    return record


def test_the_summary_of_a_gpu_shaped_run_has_every_speedup_and_names_what_failed(tmp_path):
    bench = _benchmark_module()
    one = {"schema": bench.SCHEMA, "scale": 0.5, "parameters": 914_000_000, "tokens_per_request": 4,
           "dtype": "bfloat16", "gpu_names": ["GPU A", "GPU A"], "torch": "2.13.0+cu130", "cuda": "13.0",
           "configs": [_config("1gpu", "off", "sequential", 10.0), _config("1gpu", "off", "auras", 20.0),
                       _config("1gpu", "reduce-overhead", "sequential", 25.0),
                       _config("1gpu", "reduce-overhead", "auras", 40.0)]}
    two = {**one, "configs": [_config("2gpu", "off", "sequential", 9.0), _config("2gpu", "off", "auras", 30.0),
                              _config("2gpu", "reduce-overhead", "sequential", None, status="running"),
                              _config("2gpu", "reduce-overhead", "auras", None, status="skipped")]}
    (tmp_path / "b1.json").write_text(json.dumps(one))
    (tmp_path / "b2.json").write_text(json.dumps(two))
    (tmp_path / "tests.log").write_text("E   AssertionError: streams overlapped\n")
    (tmp_path / "stages.tsv").write_text(
        f"probe\tok\t0\t3\t60\t{tmp_path}/probe.log\t\n"
        f"tests\tfailed\t1\t40\t150\t{tmp_path}/tests.log\texit status 1\n"
        f"bench-1gpu\tok\t0\t150\t240\t{tmp_path}/b1.log\t\n"
        f"bench-2gpu\ttimeout\t124\t200\t200\t{tmp_path}/b2.log\tstopped at its 200 s limit\n"
    )
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="0">'
        '<testcase classname="tests.test_streams" name="test_overlap"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_vla_scale" name="test_cuda"/><testcase classname="t" name="u"/>'
        "</testsuite></testsuites>"
    )
    out = tmp_path / "summary.json"
    summary = bench.summarize(out, tmp_path / "stages.tsv", None, tmp_path / "tests.xml",
                              [tmp_path / "b1.json", tmp_path / "b2.json"], {"mode": "gpu"})
    assert json.loads(out.read_text()) == summary
    assert not summary["ok"] and summary["failed"] == [
        "tests", "bench-2gpu", "benchmark 2gpu compile=reduce-overhead sequential"]
    assert summary["not_run"] == ["benchmark 2gpu compile=reduce-overhead auras"]
    assert summary["tests"] == {"tests": 3, "failures": 1, "errors": 0, "skipped": 0, "passed": 2,
                                "failed": ["tests.test_streams::test_overlap"]}
    tests_stage = summary["stages"][1]
    assert tests_stage["log_tail"] == ["E   AssertionError: streams overlapped"]
    stopped = summary["benchmark"]["configs"][6]
    assert stopped["status"] == "error" and "ran out of time" in stopped["error"]

    speedups = {(s["what"], s.get("placement"), s.get("compile")): s["value"] for s in summary["benchmark"]["speedups"]}
    assert speedups[("auras / sequential", "1gpu", "off")] == pytest.approx(2.0)
    assert speedups[("auras / sequential", "1gpu", "reduce-overhead")] == pytest.approx(1.6)  # the honest headline
    assert speedups[("sequential compile=reduce-overhead / sequential compile=off", "1gpu", None)] == 2.5
    assert speedups[("auras compile=reduce-overhead / sequential compile=off", "1gpu", None)] == 4.0
    assert speedups[("auras / sequential", "2gpu", "off")] == pytest.approx(30 / 9)
    assert speedups[("auras 2gpu / sequential 1gpu", None, "off")] == 3.0
    assert ("auras / sequential", "2gpu", "reduce-overhead") not in speedups  # neither half measured
    assert summary["benchmark"]["headline"] == [
        {"what": "auras / sequential", "placement": "1gpu", "compile": "reduce-overhead", "value": 1.6}]

    table = bench.markdown(summary)
    assert "| 1gpu | reduce-overhead | auras | 40.00 |" in table
    assert "| tests | failed | 40 | exit status 1 |" in table
    assert "| auras / sequential | placement=1gpu compile=reduce-overhead | 1.60 |" in table
