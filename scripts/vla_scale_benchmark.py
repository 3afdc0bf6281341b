"""Sequential vs auras throughput for an OpenVLA-scale tiny-vla with random weights (a benchmark).

    python scripts/vla_scale_benchmark.py [--scale 1.0] [--device cuda] [--dtype bfloat16]
                                          [--steps 40] [--warmup 4] [--pp-generation 4] [--json OUT]

``TinyVLA.large_config(scale)`` at scale 1.0 is a ViT-L/14 at 224 px (1024 wide, 24 layers) plus a
7B-class Llama (4096 wide, 32 layers, 11008 MLP), about 6.8 B parameters, in bf16 about 14 GB; the
same classes as the shipped tiny-vla, with random weights (throughput only). It predicts one action
(4 tokens) per request, as OpenVLA does. Both modes run on one device with the local backend
(threads): `sequential`, then `auras` with 1 perception stage and ``--pp-generation`` stages over
the 4 tokens (merged causal passes, public tokens emitted). Reported: requests per second, the
speedup, per-stage medians and peak device memory. Without CUDA it runs on the CPU; use a small
``--scale`` there (0.05 is 2.7 M parameters).

Not covered: two GPUs (perception on one, generation on the other) need the ray backend with a
CUDA-built policy per actor, and the CUDA-specific optimisations (streams, CUDA graphs, pinned
transfers) are not implemented yet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auras import AurasAgent, load_config
from auras.policies.tiny_vla import TinyVLA
from auras.types import Observation


def observation(step: int, size: int) -> Observation:
    rng = np.random.default_rng(step)
    return Observation(
        images={"front": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
        state=np.zeros(4, np.float32), instruction="pick up the cup", step_id=step, capture_time=time.monotonic(),
    )  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(scale: float, device: str, dtype: str, steps: int, warmup: int, pp_generation: int) -> dict[str, Any]:
    config = TinyVLA.large_config(scale)
    start = time.perf_counter()
    model = TinyVLA(config).to(device=device, dtype=getattr(torch, dtype)).eval()
    build_s = time.perf_counter() - start
    policy = model.as_policy()
    size = config["image_size"]
    result: dict[str, Any] = {
        "scale": scale, "device": device, "dtype": dtype, "parameters": model.num_parameters(),
        "build_s": build_s, "tokens_per_request": model.num_action_tokens, "modes": {},
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
    }  # fmt: skip
    modes = {
        "sequential": ["pipeline.mode=sequential"],
        "auras": ["pipeline.mode=auras", f"pipeline.pp_generation={pp_generation}", "pipeline.emit=public"],
    }
    for mode, overrides in modes.items():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with AurasAgent(load_config(overrides=overrides), policy=policy) as agent:
            for i in range(warmup):
                agent.step(observation(i, size))
            _sync(device)
            stages: dict[str, list[float]] = {}
            t0 = time.perf_counter()
            for i in range(warmup, warmup + steps):
                action = agent.step(observation(i, size))
                for name, ms in action.timings.stages_ms.items():
                    stages.setdefault(name, []).append(ms)
            _sync(device)
            elapsed = time.perf_counter() - t0
        result["modes"][mode] = {
            "throughput_hz": steps / elapsed,
            "stage_ms_p50": {k: statistics.median(v) for k, v in stages.items()},
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
        }
    result["speedup"] = result["modes"]["auras"]["throughput_hz"] / result["modes"]["sequential"]["throughput_hz"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--pp-generation", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.scale, args.device, args.dtype, args.steps, args.warmup, args.pp_generation)
    print(f"tiny-vla large_config({args.scale}): {result['parameters'] / 1e6:.1f} M parameters, {args.dtype} on "
          f"{result['gpu'] or args.device}, built in {result['build_s']:.1f} s")  # fmt: skip
    print("| mode | throughput Hz | stage p50 ms | peak memory GB |")
    print("|---|---|---|---|")
    for mode, m in result["modes"].items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in m["stage_ms_p50"].items())
        memory = f"{m['peak_memory_gb']:.1f}" if m["peak_memory_gb"] is not None else "-"
        print(f"| {mode} | {m['throughput_hz']:.2f} | {stages} | {memory} |")
    print(f"speedup auras / sequential: {result['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
