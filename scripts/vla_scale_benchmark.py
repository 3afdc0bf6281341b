"""Sequential vs auras throughput for an OpenVLA-scale tiny-vla with random weights (a benchmark).

    python scripts/vla_scale_benchmark.py [--scale 0.5] [--device cuda] [--dtype bfloat16] [--backend local]
                                          [--compile off,reduce-overhead] [--steps 40] [--warmup 8]
                                          [--pp-generation 4] [--deadline-s 240] [--json OUT]
    python scripts/vla_scale_benchmark.py probe --json ENV.json
    python scripts/vla_scale_benchmark.py summarize --out SUMMARY.json --stages STAGES.tsv [--env ENV.json]
                                          [--tests JUNIT.xml] [--bench BENCH.json ...]

``TinyVLA.large_config(scale)`` at scale 1.0 is a ViT-L/14 at 224 px (1024 wide, 24 layers) plus a
7B-class Llama (4096 wide, 32 layers, 11008 MLP), about 7.0 B parameters, in bf16 about 14 GB; 0.5
is 0.9 B, 0.25 is 0.13 B, 0.05 is 2.7 M. The same classes as the shipped tiny-vla, with random
weights (throughput only). It predicts one action (4 tokens) per request, as OpenVLA does.

Each run compares ``sequential`` with ``auras`` (1 perception stage and ``--pp-generation`` stages
over the 4 tokens: merged causal passes, public tokens emitted) for every ``--compile`` setting
(``policy.compile``: off, default, reduce-overhead; torch.compile of each stage), on one placement:

- ``--backend local``: both stages in this process (threads) on ``--device``; one GPU with ``cuda``.
  The weights are built once, directly on the device; each configuration gets fresh policy parts
  over them (compiling wraps a part's stages).
- ``--backend ray --device cuda``: perception and generation as Ray actors; Ray gives each actor a
  GPU of its own when two or more are visible (fractions of one otherwise). Each actor builds the
  model itself, by name, from a policy factory registered at run time (``vla-scale-<scale>``).

Per configuration: requests per second (after ``--warmup`` untimed steps), the median step and
stage times, startup (agent construction plus warm-up, where compilation happens; never counted in
throughput), the compile time the agent reports, peak memory, the devices each stage ran on and how
contexts crossed between them (``AurasAgent.stats()`` where this auras has it). A configuration that
fails is recorded with its error and the others still run; ``--deadline-s`` stops starting new ones
(recorded as skipped) so a time-boxed caller gets the finished ones. ``--json`` is rewritten after
every configuration. ``probe`` writes what this machine's torch sees; ``summarize`` merges the
stages of scripts/gpu_check.sh into one JSON summary and prints it as markdown (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:  # torch and auras are imported where they are used: `summarize` runs without them
    from auras.config import AurasConfig
    from auras.policies.base import Policy
    from auras.policies.tiny_vla.modeling import TinyVLA
    from auras.types import Observation

MODES = ("sequential", "auras")
COMPILE_MODES = ("off", "default", "reduce-overhead")
SCHEMA = "auras-vla-scale/2"
SUMMARY_SCHEMA = "auras-gpu-check/1"


# -- the model ---------------------------------------------------------------------------------------


def observation(step: int, size: int) -> Observation:
    import numpy as np

    from auras.types import Observation

    rng = np.random.default_rng(step)
    return Observation(
        images={"front": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
        state=np.zeros(4, np.float32), instruction="pick up the cup", step_id=step, capture_time=time.monotonic(),
    )


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_shape(scale: float) -> dict[str, Any]:
    """Parameters and tokens per request of ``large_config(scale)``, counted without allocating weights."""
    import torch

    from auras.policies.tiny_vla.modeling import TinyVLA

    config = TinyVLA.large_config(scale)
    with torch.device("meta"):
        model = TinyVLA(config)
    return {"parameters": model.num_parameters(), "tokens_per_request": model.num_action_tokens,
            "image_size": config["image_size"], "config": config}


def build_model_on(scale: float, device: str) -> TinyVLA:
    """A random-weight ``TinyVLA(large_config(scale))`` built directly on ``device`` (no host copy)."""
    import torch

    from auras.policies.tiny_vla.modeling import TinyVLA

    with torch.device(device):
        model = TinyVLA(TinyVLA.large_config(scale))
    return model.eval()


def policy_factory(scale: float):
    """A policy factory ``(AurasConfig) -> Policy`` for the registry. Defined inside a function so Ray
    ships it by value to the actors, which build the model on the device Ray gave them; the worker
    then moves it to ``policy.dtype`` (auras.policies.build)."""

    def build(config: AurasConfig) -> Policy:
        return build_model_on(scale, config.policy.device).as_policy()

    return build


def register_scaled_policy(scale: float) -> str:
    """Register the random-weight model of ``scale`` as a policy type; return its name."""
    from auras.registry import register_policy

    name = f"vla-scale-{scale:g}"
    register_policy(name, policy_factory(scale), replace=True)
    return name


def compile_supported() -> bool:
    """Whether this auras has ``policy.compile`` (torch.compile of each stage)."""
    from auras.config import PolicyConfig

    return "compile" in PolicyConfig.model_fields


def overrides_for(
    mode: str, *, device: str, dtype: str, backend: str, compile: str, pp_perception: int, pp_generation: int,
    policy_type: str | None = None,
) -> list[str]:
    """The ``--set``-style overrides of one configuration."""
    out = [f"policy.device={device}", f"policy.dtype={dtype}", f"pipeline.backend={backend}"]
    if policy_type is not None:
        out.append(f"policy.type={policy_type}")
    if compile != "off" or compile_supported():
        out.append(f"policy.compile={compile}")
    if mode == "sequential":
        return [*out, "pipeline.mode=sequential"]
    return [*out, "pipeline.mode=auras", f"pipeline.pp_perception={pp_perception}",
            f"pipeline.pp_generation={pp_generation}", "pipeline.emit=public"]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)


def agent_stats(agent: Any) -> dict[str, Any] | None:
    """``agent.stats()`` as JSON-able data; None where this auras has no stats()."""
    stats = getattr(agent, "stats", None)
    if not callable(stats):
        return None
    try:
        return _jsonable(stats())
    except Exception as exc:  # stats are a report, never a reason to lose the measurement
        return {"error": f"{type(exc).__name__}: {exc}"}


def stage_devices(stats: dict[str, Any]) -> dict[str, str] | None:
    """Role -> device from ``agent.stats()``: its ``devices`` map, or one built from its ``workers``
    entries (role, device and, on Ray, the GPU ids the actor was assigned)."""
    if isinstance(stats.get("devices"), dict):
        return {str(k): str(v) for k, v in stats["devices"].items()}
    workers = stats.get("workers")
    if not isinstance(workers, list) or not workers:
        return None
    out: dict[str, str] = {}
    for i, w in enumerate(workers):
        if not isinstance(w, dict):
            continue
        role = str(w.get("role") or f"worker{i}")
        role = role if role not in out else f"{role}{i}"
        gpu_ids = w.get("gpu_ids")
        out[role] = str(w.get("device")) + (f" (gpu {','.join(map(str, gpu_ids))})" if gpu_ids else "")
    return out or None


def gpu_memory_used_gb() -> list[float] | None:
    """Memory in use on each visible GPU, all processes (nvidia-smi); None without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return [float(line) / 1024 for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def placement_name(backend: str, device: str, gpus: int) -> str:
    """cpu, cpu-ray, 1gpu (local), 2gpu (ray, a GPU per actor), 1gpu-ray (ray, fractions of one GPU)."""
    if not device.startswith("cuda"):
        return "cpu" if backend == "local" else "cpu-ray"
    if backend == "local":
        return "1gpu"
    return "2gpu" if gpus >= 2 else "1gpu-ray"


# -- measuring ---------------------------------------------------------------------------------------


def measure(
    config: AurasConfig, policy: Policy | None, *, steps: int, warmup: int, size: int
) -> dict[str, Any]:
    """Run one agent: construction, ``warmup`` untimed steps, ``steps`` timed steps."""
    import torch

    from auras import AurasAgent

    device, local = config.policy.device, config.pipeline.backend == "local"
    cuda_here = local and device.startswith("cuda")
    if cuda_here:  # what the previous configuration left (its compiled graphs, its caches) is not this one's
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before = gpu_memory_used_gb() if device.startswith("cuda") else None
    start = time.perf_counter()
    agent = AurasAgent(config, policy=policy)
    try:
        construct_ms = (time.perf_counter() - start) * 1e3
        first_step_ms = None
        t = time.perf_counter()
        for i in range(warmup):
            agent.step(observation(i, size))
            if i == 0:
                first_step_ms = (time.perf_counter() - t) * 1e3
        if cuda_here:
            _sync(device)
        warmup_ms = (time.perf_counter() - t) * 1e3
        compiled_before = (agent_stats(agent) or {}).get("compile_ms")
        stages: dict[str, list[float]] = {}
        step_ms: list[float] = []
        t0 = time.perf_counter()
        for i in range(warmup, warmup + steps):
            s = time.perf_counter()
            action = agent.step(observation(i, size))
            step_ms.append((time.perf_counter() - s) * 1e3)
            for name, ms in action.timings.stages_ms.items():
                stages.setdefault(name, []).append(ms)
        if cuda_here:
            _sync(device)
        elapsed = time.perf_counter() - t0
        stats = agent_stats(agent)
        after = gpu_memory_used_gb() if device.startswith("cuda") else None
    finally:
        agent.close()
    used = None
    if before is not None and after is not None and len(before) == len(after):
        used = [round(a - b, 3) for a, b in zip(after, before, strict=True)]
    stats = stats or {}
    late = None  # compilation inside the timed window would make the throughput wrong: report it
    if isinstance(compiled_before, (int, float)) and isinstance(stats.get("compile_ms"), (int, float)):
        late = stats["compile_ms"] - compiled_before
    return {
        "status": "ok",
        "throughput_hz": steps / elapsed,
        "step_ms_p50": statistics.median(step_ms),
        "stage_ms_p50": {k: statistics.median(v) for k, v in stages.items()},
        "construct_ms": construct_ms,
        "first_step_ms": first_step_ms,
        "warmup_ms": warmup_ms,
        "startup_ms": construct_ms + warmup_ms,
        "compile_ms": stats.get("compile_ms"),
        "compile_ms_while_timed": late,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda_here else None,
        "gpu_memory_used_gb": used,
        "devices": stage_devices(stats),
        "context_transport": stats.get("context_transport"),
        "stats": stats or None,
    }


def benchmark(
    scale: float, device: str, dtype: str, steps: int, warmup: int, pp_generation: int, *,
    backend: str = "local", compile_modes: Sequence[str] = ("off",), modes: Sequence[str] = MODES,
    pp_perception: int = 1, deadline_s: float | None = None, json_path: Path | None = None,
) -> dict[str, Any]:
    """Every (compile, mode) configuration on one placement; failures are recorded, not raised."""
    import torch

    from auras import load_config

    start = time.monotonic()
    shape = model_shape(scale)
    # Warm-up fills the pipeline (every frame shape compiled) before the timed window, in both modes alike.
    warmup = max(warmup, pp_perception + pp_generation + 2)
    cuda = device.startswith("cuda")
    count = torch.cuda.device_count() if cuda and torch.cuda.is_available() else 0
    gpus = 0 if not cuda else (1 if backend == "local" else min(2, count))
    doc: dict[str, Any] = {
        "schema": SCHEMA, "scale": scale, "parameters": shape["parameters"],
        "tokens_per_request": shape["tokens_per_request"], "dtype": dtype, "device": device, "backend": backend,
        "gpus": gpus, "placement": placement_name(backend, device, gpus),
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(count)],
        "torch": torch.__version__, "cuda": torch.version.cuda, "steps": steps, "warmup": warmup,
        "pp_perception": pp_perception, "pp_generation": pp_generation, "compile_supported": compile_supported(),
        "build_s": None, "configs": [], "speedups": [],
    }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        doc["elapsed_s"] = time.monotonic() - start
        doc["speedups"] = speedups(doc["configs"])
        if json_path is not None:
            tmp = json_path.with_name(json_path.name + ".tmp")
            tmp.write_text(json.dumps(doc, indent=2))
            os.replace(tmp, json_path)

    model, policy_type, build_error = None, None, None
    try:
        t = time.perf_counter()
        if backend == "local":  # one model for every configuration, built on the device, moved to dtype once
            model = build_model_on(scale, device)
            model.as_policy().to(device, dtype)
            _sync(device)
        else:  # each actor builds its own copy by name
            policy_type = register_scaled_policy(scale)
        doc["build_s"] = time.perf_counter() - t
    except Exception as exc:
        build_error = f"model build: {type(exc).__name__}: {exc}"
    save()
    for compile_mode in compile_modes:
        for mode in modes:
            record: dict[str, Any] = {"placement": doc["placement"], "gpus": gpus, "backend": backend,
                                      "device": device, "compile": compile_mode, "mode": mode}
            if build_error is not None:
                record.update(status="error", error=build_error)
            elif compile_mode != "off" and not doc["compile_supported"]:
                record.update(status="skipped", error="this auras has no policy.compile setting")
            elif deadline_s is not None and time.monotonic() - start > deadline_s:
                record.update(status="skipped", error=f"deadline: {deadline_s:.0f} s spent before it started")
            else:
                record["status"] = "running"  # what a caller that stops this process mid-way finds
                doc["configs"].append(record)
                save()
                doc["configs"].pop()
                try:
                    overrides = overrides_for(
                        mode, device=device, dtype=dtype, backend=backend, compile=compile_mode,
                        pp_perception=pp_perception, pp_generation=pp_generation, policy_type=policy_type,
                    )
                    if compile_mode != "off" and backend == "local":
                        torch.compiler.reset()  # each compiled configuration pays (and reports) its own compile
                    # Fresh policy parts over the same weights: compiling a configuration wraps its parts' stages.
                    policy = model.as_policy() if model is not None else None
                    record.update(measure(load_config(overrides=overrides), policy, steps=steps, warmup=warmup,
                                          size=shape["image_size"]))
                except Exception as exc:
                    traceback.print_exc()  # the whole story goes to the stage's log
                    record.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])
            doc["configs"].append(record)
            save()
            print(f"[{doc['placement']} compile={compile_mode} {mode}] {record['status']}"
                  + (f" {record['throughput_hz']:.2f} Hz" if record["status"] == "ok" else f": {record['error']}"),
                  flush=True)
    return doc


def run(
    scale: float, device: str, dtype: str, steps: int, warmup: int, pp_generation: int, *,
    backend: str = "local", compile: str = "off",
) -> dict[str, Any]:
    """One placement and compile setting, both modes; raises if a mode failed. Returns ``modes``
    (mode -> its measurement) and ``speedup`` (auras / sequential) besides the run's description."""
    doc = benchmark(scale, device, dtype, steps, warmup, pp_generation, backend=backend, compile_modes=(compile,))
    failed = [c for c in doc["configs"] if c["status"] != "ok"]
    if failed:
        raise RuntimeError("; ".join(f"{c['mode']}: {c['error']}" for c in failed))
    doc["modes"] = {c["mode"]: c for c in doc["configs"]}
    doc["speedup"] = doc["modes"]["auras"]["throughput_hz"] / doc["modes"]["sequential"]["throughput_hz"]
    doc["gpu"] = doc["gpu_names"][0] if doc["gpu_names"] and device.startswith("cuda") else None
    return doc


# -- speedups, tables, the summary (standard library only) ---------------------------------------------


def speedups(configs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """auras / sequential for each (placement, compile); compiled over not compiled per mode; auras
    compiled over sequential not compiled; auras on two GPUs over sequential on one."""
    hz = {(c["placement"], c["compile"], c["mode"]): c["throughput_hz"]
          for c in configs if c.get("status") == "ok"}
    out: list[dict[str, Any]] = []

    def add(what: str, num: tuple[str, str, str], den: tuple[str, str, str], **where: str) -> None:
        if num in hz and den in hz and hz[den] > 0:
            out.append({"what": what, **where, "value": hz[num] / hz[den]})

    placements = sorted({p for p, _, _ in hz})
    compiles = [c for c in COMPILE_MODES if any(k[1] == c for k in hz)]
    for p in placements:
        for c in compiles:
            add("auras / sequential", (p, c, "auras"), (p, c, "sequential"), placement=p, compile=c)
        for c in compiles:
            if c == "off":
                continue
            for m in MODES:
                add(f"{m} compile={c} / {m} compile=off", (p, c, m), (p, "off", m), placement=p)
            add(f"auras compile={c} / sequential compile=off", (p, c, "auras"), (p, "off", "sequential"), placement=p)
    for c in compiles:
        add("auras 2gpu / sequential 1gpu", ("2gpu", c, "auras"), ("1gpu", c, "sequential"), compile=c)
        add("auras 2gpu / auras 1gpu", ("2gpu", c, "auras"), ("1gpu", c, "auras"), compile=c)
    return out


def _fmt(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _params(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown: stages, configurations, speedups."""
    lines = ["| stage | status | seconds | detail |", "|---|---|---|---|"] if summary.get("stages") else []
    for s in summary.get("stages") or []:
        lines.append(f"| {s['name']} | {s['status']} | {_fmt(s.get('elapsed_s'), 0)} | {s.get('detail') or ''} |")
    bench = summary.get("benchmark") or {}
    if bench.get("configs"):
        gpus = ", ".join(bench.get("gpu_names") or []) or "no GPU"
        columns = ["placement", "compile", "mode", "Hz", "step p50 ms", "stage p50 ms", "startup s", "compile s",
                   "peak GB", "devices", "transport", "status"]
        lines += ["", f"tiny-vla large_config({bench.get('scale')}): {_params(bench.get('parameters'))} parameters, "
                  f"{bench.get('dtype')}, {gpus}, torch {bench.get('torch')} (CUDA {bench.get('cuda')})",
                  "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        for c in bench["configs"]:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in (c.get("stage_ms_p50") or {}).items()) or "-"
            devices = ", ".join(f"{k} {v}" for k, v in (c.get("devices") or {}).items()) or "-"
            memory = c.get("peak_memory_gb")
            if memory is None and c.get("gpu_memory_used_gb"):
                memory = sum(c["gpu_memory_used_gb"])
            status = c["status"] if c["status"] == "ok" else f"{c['status']}: {c.get('error', '')[:80]}"
            lines.append(f"| {c['placement']} | {c['compile']} | {c['mode']} | {_fmt(c.get('throughput_hz'), 2)} "
                         f"| {_fmt(c.get('step_ms_p50'))} | {stages} | {_fmt(c.get('startup_ms'), 1, 1e-3)} "
                         f"| {_fmt(c.get('compile_ms'), 1, 1e-3)} | {_fmt(memory)} | {devices} "
                         f"| {c.get('context_transport') or '-'} | {status.replace('|', '/')} |")
    if bench.get("speedups"):
        lines += ["", "| speedup | where | x |", "|---|---|---|"]
        for s in bench["speedups"]:
            where = " ".join(f"{k}={s[k]}" for k in ("placement", "compile") if k in s)
            lines.append(f"| {s['what']} | {where} | {s['value']:.2f} |")
    return "\n".join(lines)


def read_stages(path: Path) -> list[dict[str, Any]]:
    """gpu_check.sh's stage lines: name, status, rc, elapsed_s, timeout_s, log, detail (tab-separated)."""
    stages = []
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, rc, elapsed, timeout, log, detail = (line.split("\t") + [""] * 7)[:7]
        stages.append({"name": name, "status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                       "elapsed_s": float(elapsed) if elapsed else None,
                       "timeout_s": float(timeout) if timeout else None, "log": log or None,
                       "detail": detail or None})
    return stages


def read_junit(path: Path) -> dict[str, Any] | None:
    """pytest's junit XML -> counts and the names of failed tests."""
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": f"unreadable junit xml: {exc}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed": failed}


def summarize(
    out: Path, stages_path: Path, env_path: Path | None, tests_path: Path | None, bench_paths: Sequence[Path],
    meta: dict[str, str],
) -> dict[str, Any]:
    """One JSON summary of a gpu_check.sh run (written to ``out``)."""
    stages = read_stages(stages_path)
    env = json.loads(env_path.read_text()) if env_path is not None and env_path.exists() else None
    runs = [json.loads(p.read_text()) for p in bench_paths if p.exists()]
    configs = [c for r in runs for c in r.get("configs", [])]
    for c in configs:  # its process was stopped (the stage's time limit) while it ran
        if c.get("status") == "running":
            c.update(status="error", error="stopped while running: its stage ran out of time")
    for s in stages:
        if s["status"] not in ("ok", "skipped") and s["log"] and Path(s["log"]).exists():
            s["log_tail"] = Path(s["log"]).read_text(errors="replace").splitlines()[-40:]
    first = runs[0] if runs else {}
    keys = ("scale", "parameters", "tokens_per_request", "dtype", "gpu_names", "torch", "cuda", "steps", "warmup",
            "pp_perception", "pp_generation", "compile_supported")
    bench = {k: first.get(k) for k in keys} if runs else {}
    bench.update(configs=configs, speedups=speedups(configs),
                 runs=[{k: v for k, v in r.items() if k not in ("configs", "speedups")} for r in runs])
    bench["headline"] = [s for s in bench["speedups"]
                         if s["what"] == "auras / sequential" and s.get("compile") != "off"]
    tests = read_junit(tests_path) if tests_path is not None else None
    for s in stages:
        if s["name"] == "tests" and not s["detail"] and tests and "tests" in tests:
            s["detail"] = (
                f"{tests['passed']} passed, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped"
            )
    failed = [s["name"] for s in stages if s["status"] not in ("ok", "skipped", "not-run")]
    not_run = [s["name"] for s in stages if s["status"] == "not-run"]
    not_run += [f"benchmark {c['placement']} compile={c['compile']} {c['mode']}" for c in configs
                if c["status"] == "skipped"]
    failed += [f"benchmark {c['placement']} compile={c['compile']} {c['mode']}" for c in configs
               if c["status"] == "error"]
    summary = {
        "schema": SUMMARY_SCHEMA, **meta, "ok": not failed and not not_run, "failed": failed, "not_run": not_run,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": env, "stages": stages,
        "tests": tests, "benchmark": bench,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    return summary


def probe() -> dict[str, Any]:
    """What this machine's Python, torch and GPUs are (the summary's ``host``)."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable,
                            "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        count = torch.cuda.device_count() if info["cuda_available"] else 0
        gpus = []
        for i in range(count):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
        info.update(gpu_count=count, gpus=gpus, bf16=bool(count) and torch.cuda.is_bf16_supported())
    except Exception as exc:
        info.update(torch_error=f"{type(exc).__name__}: {exc}", cuda_available=False, gpu_count=0, gpus=[])
    for package in ("ray", "transformers"):
        try:
            info[package] = __import__(package).__version__
        except Exception as exc:
            info[package] = f"unavailable: {type(exc).__name__}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = "--query-gpu=name,driver_version,memory.total"
            info["nvidia_smi"] = subprocess.run([smi, q, "--format=csv,noheader"], capture_output=True, text=True,
                                                timeout=20).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"failed: {exc}"
    try:
        root = Path(__file__).resolve().parents[1]
        info["auras_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["auras_commit"] = None
    return info


# -- command line ------------------------------------------------------------------------------------


def _csv(choices: Sequence[str]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {list(choices)}, got {text!r}")
        return items

    return parse


def _main_probe(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="vla_scale_benchmark.py probe", description=probe.__doc__)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    info = probe()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))


def _main_summarize(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="vla_scale_benchmark.py summarize", description=summarize.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stages", type=Path, required=True)
    parser.add_argument("--env", type=Path)
    parser.add_argument("--tests", type=Path)
    parser.add_argument("--bench", type=Path, nargs="*", default=[])
    parser.add_argument("--meta", nargs="*", default=[], help="KEY=VALUE pairs copied into the summary")
    args = parser.parse_args(argv)
    meta: dict[str, Any] = dict(item.split("=", 1) for item in args.meta if "=" in item)
    for key, value in meta.items():
        if value.lstrip("-").isdigit():
            meta[key] = int(value)
    summary = summarize(args.out, args.stages, args.env, args.tests, args.bench, meta)
    print(markdown(summary))
    verdict = "ok" if summary["ok"] else "; ".join(
        f"{label}: {', '.join(summary[key])}" for label, key in (("FAILED", "failed"), ("NOT RUN", "not_run"))
        if summary[key]
    )
    print(f"\n{verdict}; summary: {args.out}")
    if not summary["ok"]:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        return _main_probe(argv[1:])
    if argv[:1] == ["summarize"]:
        return _main_summarize(argv[1:])
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--compile", type=_csv(COMPILE_MODES), default=["off"], help="e.g. off,reduce-overhead")
    parser.add_argument("--modes", type=_csv(MODES), default=list(MODES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--pp-perception", type=int, default=1)
    parser.add_argument("--pp-generation", type=int, default=4)
    parser.add_argument("--deadline-s", type=float, help="start no configuration after this many seconds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        doc = benchmark(args.scale, args.device, args.dtype, args.steps, args.warmup, args.pp_generation,
                        backend=args.backend, compile_modes=args.compile, modes=args.modes,
                        pp_perception=args.pp_perception, deadline_s=args.deadline_s, json_path=args.json)
    finally:
        if args.backend == "ray" and "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    gpus = ", ".join(doc["gpu_names"]) if args.device.startswith("cuda") else args.device
    print(f"\nbuilt in {_fmt(doc['build_s'])} s on {gpus} ({doc['placement']})")
    print(markdown({"benchmark": doc}))
    if any(c["status"] == "error" for c in doc["configs"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
