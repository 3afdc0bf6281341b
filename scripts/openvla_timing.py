"""OpenVLA-7B's architecture with random weights on this machine: the perception / generation split of one request,
stage by stage, then sequential vs auras throughput.

    python scripts/openvla_timing.py --llm-layers 2 --dtype bfloat16 --json OUT.json
        [--device cpu] [--threads 1] [--requests 2] [--steps 6] [--warmup 2] [--pp-perception 2]
        [--pp-generation 2] [--skip-split] [--skip-throughput]

The vision towers (DINOv2 ViT-L/14 + SigLIP so400m/14 at 224 px) and the projector are full size; the Llama has
``--llm-layers`` of its 32 layers (the whole model is 7.5 B parameters: 30 GB in float32, 15 GB in bfloat16). The
policy is ``policy.type=openvla`` without a checkpoint, 4-D actions (4 tokens, as auras' tasks have: the first from
the prefill, 3 decoded), prompts padded to 48 tokens: a prefix of 305 positions.

1. Split: one warm-up request, then ``--requests`` timed ones through the policy's own stages: the tower blocks
   (both towers side by side), each Llama layer of the prefill, then the classic greedy decode. Medians.
2. Throughput: ``AurasAgent.step`` over random 84 px images, back to back, for ``sequential`` and ``auras``
   (``--pp-perception`` x ``--pp-generation``), each with its own agent and ``--warmup`` untimed steps; actions per
   second and the stage medians the agent reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from vla_throughput import measure, observation  # what every full-size VLA benchmark shares

from auras.policies.openvla import OpenVLA
from auras.policies.openvla_config import OpenVLAConfig


def split(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = OpenVLA.random_full_size(OpenVLAConfig(llm_layers=args.llm_layers), 84, getattr(torch, args.dtype))
    policy = model.as_policy()
    policy.to(args.device, args.dtype)
    build_s = time.perf_counter() - start
    stages = policy.perception.stages()
    vision = len(stages) - args.llm_layers
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    records = []
    with torch.inference_mode():
        for i in range(args.requests + 1):
            carry, times = [observation(i, 84)], []
            for stage in stages:
                t = time.perf_counter()
                carry = stage(carry)
                sync()
                times.append(time.perf_counter() - t)
            t = time.perf_counter()
            policy.generation.decode_classic(carry)
            sync()
            records.append({"vision_s": sum(times[:vision]), "prefill_s": sum(times[vision:]),
                            "prefill_per_layer_s": statistics.median(times[vision:]),
                            "generation_s": time.perf_counter() - t})
    del policy, model
    median = {k: statistics.median(r[k] for r in records[1:]) for k in records[0]}
    return {"build_s": build_s, "prefix_positions": int(carry["prefix_valid"].shape[1]),
            "decode_steps": 3, "median": median, "requests": records}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (per stage in the throughput runs)")
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pp-perception", type=int, default=2)
    ap.add_argument("--pp-generation", type=int, default=2)
    ap.add_argument("--skip-split", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    result: dict = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "settings": vars(args),
                    "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                "loadavg_before": list(os.getloadavg())}, "torch": torch.__version__}
    if not args.skip_split:
        result["split"] = split(args)
        print(json.dumps({"split": result["split"]["median"]}, indent=1), flush=True)
    if not args.skip_throughput:
        base = ["policy.type=openvla", f"policy.model.llm_layers={args.llm_layers}", f"policy.dtype={args.dtype}",
                f"policy.device={args.device}", f"policy.torch_threads={args.threads}"]
        modes = {"sequential": ["pipeline.mode=sequential"],
                 "auras": ["pipeline.mode=auras", f"pipeline.pp_perception={args.pp_perception}",
                           f"pipeline.pp_generation={args.pp_generation}"]}
        result["modes"] = {name: measure([*base, *extra], args.steps, args.warmup) for name, extra in modes.items()}
        result["speedup"] = result["modes"]["auras"]["throughput_hz"] / result["modes"]["sequential"]["throughput_hz"]
        print(json.dumps({"modes": result["modes"], "speedup": result["speedup"]}, indent=1))
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
