"""Sequential vs auras throughput for a full-size VLM-prefix + flow-expert policy with random weights (a benchmark).

    python scripts/vla_throughput.py [--policy smolvla|pi0|pi05] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--steps 12] [--warmup 3] [--pp-perception 1] [--pp-generation 1] [--fetch-offset -1] [--threads 1]
        [--compile off|default|reduce-overhead] [--json OUT]

The policy is built without a checkpoint, at full size with random weights:

- ``smolvla``: SmolVLM2-500M truncated to 16 layers and a 0.75-wide expert (450 M parameters), one 84 px camera
  resized with padding to 512 px (1024 SigLIP patches, 64 image tokens), a 48-token instruction, 10 flow steps over
  a 50-step chunk;
- ``pi0`` / ``pi05``: PaliGemma 3B's SigLIP so400m and Gemma 2B with the Gemma 300M expert (about 3.5 B parameters),
  one 84 px camera resized with padding to 224 px (256 image tokens), a 48-token instruction, 10 flow steps over a
  50-step chunk (built directly in ``--dtype``: 7 GB in bfloat16, 14 GB in float32).

Observations are random images fed back to back through ``AurasAgent.step``; each mode gets its own agent (its
own copy of the weights) and ``--warmup`` untimed steps. Reported: actions per second, the speedup,
per-stage medians and the perception share of a sequential request (the prefix is the larger
part for this family: the reason ``pp_perception`` matters).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auras import AurasAgent, load_config
from auras.types import Observation


def observation(step: int, size: int) -> Observation:
    rng = np.random.default_rng(step)
    return Observation(
        images={"front": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
        state=rng.normal(size=4).astype(np.float32), instruction="push the puck to the goal", step_id=step,
        capture_time=time.monotonic(),
    )


def measure(overrides: list[str], steps: int, warmup: int) -> dict[str, Any]:
    start = time.perf_counter()
    with AurasAgent(load_config(overrides=overrides)) as agent:
        build_s = time.perf_counter() - start
        size = agent.spec.cameras["front"][0]
        for i in range(warmup):
            agent.step(observation(i, size))
        stages: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for i in range(warmup, warmup + steps):
            action = agent.step(observation(i, size))
            for name, ms in action.timings.stages_ms.items():
                stages.setdefault(name, []).append(ms)
        elapsed = time.perf_counter() - t0
        stats = agent.stats()
    return {
        "throughput_hz": steps / elapsed,
        "stage_ms_p50": {k: statistics.median(v) for k, v in stages.items()},
        "build_s": build_s,
        "context_transport": stats["context_transport"],
        "devices": [w["device"] for w in stats["workers"]],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # this process so far (Linux: KiB)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="smolvla", choices=["smolvla", "pi0", "pi05"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pp-perception", type=int, default=1)
    parser.add_argument("--pp-generation", type=int, default=1)
    parser.add_argument("--fetch-offset", type=int, default=-1, choices=[0, -1])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per stage")
    parser.add_argument(
        "--compile",
        default="off",
        choices=["off", "default", "reduce-overhead"],
        help="policy.compile for both modes (compile time is excluded: warm-up steps)",
    )
    parser.add_argument("--sequential-only", action="store_true",
                        help="the time split of a sequential request only (one copy of the weights in memory)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = [f"policy.type={args.policy}", f"policy.device={args.device}", f"policy.dtype={args.dtype}",
            f"policy.torch_threads={args.threads}", f"policy.compile={args.compile}"]
    modes = {
        "sequential": ["pipeline.mode=sequential"],
        "auras": ["pipeline.mode=auras", f"pipeline.pp_perception={args.pp_perception}",
                  f"pipeline.pp_generation={args.pp_generation}", f"pipeline.fetch_offset={args.fetch_offset}"],
    }
    result: dict[str, Any] = {"command": sys.argv, "settings": vars(args) | {"json": str(args.json)}, "modes": {}}
    if args.sequential_only:
        del modes["auras"]
    for mode, overrides in modes.items():
        result["modes"][mode] = measure([*base, *overrides], args.steps, args.warmup)
        gc.collect()  # the mode's agent and weights go before the next mode builds its own
    seq, aur = result["modes"]["sequential"], result["modes"].get("auras")
    result["speedup"] = aur["throughput_hz"] / seq["throughput_hz"] if aur else None
    p, g = seq["stage_ms_p50"].get("perception", 0.0), seq["stage_ms_p50"].get("generation", 0.0)
    result["perception_share"] = p / (p + g) if p + g else None
    label = f"auras {args.pp_perception}x{args.pp_generation} fetch_offset {args.fetch_offset}"
    print(f"{args.policy} full size (random weights), {args.dtype} on {args.device}, "
          f"{args.threads} thread(s) per stage")
    print("| mode | throughput Hz | perception p50 ms | generation p50 ms |")
    print("|---|---|---|---|")
    for mode, m in result["modes"].items():
        stages = m["stage_ms_p50"]
        name = label if mode == "auras" else mode
        p50 = f"{stages.get('perception', 0):.0f} | {stages.get('generation', 0):.0f}"
        print(f"| {name} | {m['throughput_hz']:.3f} | {p50} |")
    speedup = f"speedup auras / sequential: {result['speedup']:.2f}x; " if aur else ""
    print(f"{speedup}perception share of a sequential request: {result['perception_share']:.0%}; peak memory of the "
          f"process with one copy of the weights {seq['peak_rss_gb']:.1f} GB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
