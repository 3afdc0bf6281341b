"""Per-frame overhead of the ray backend over the local one, with the same fake stages.

    python scripts/ray_overhead.py [--frames 400] [--delay-ms 0] [--repeats 3]

Runs each frame mode with fake perception/generation stages that sleep ``--delay-ms`` per stage
(0: pure scheduling and transport cost), on the local backend and on the ray backend (two actors,
compiled graph), interleaved ``--repeats`` times, and prints the median ms per frame of each and
their difference: the per-frame overhead of ray.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakes: the fakes the tests use

from auras import AurasAgent, load_config
from auras.policies.base import Policy
from tests.fakes import FakeDiffusion, FakeStagedPerception, fake_observation

MODES = {
    "sequential": ["pipeline.mode=sequential"],
    "auras 2+3, offset 0": ["pipeline.mode=auras", "pipeline.pp_perception=2", "pipeline.pp_generation=3"],
    "auras 2+3, offset -1": [
        "pipeline.mode=auras",
        "pipeline.pp_perception=2",
        "pipeline.pp_generation=3",
        "pipeline.fetch_offset=-1",
    ],
}


def ms_per_frame(overrides: list[str], backend: str, frames: int, delay_s: float) -> float:
    config = load_config(overrides=[*overrides, f"pipeline.backend={backend}"])
    policy = Policy("fake", FakeStagedPerception(4, delay_s * 4, image_size=84), FakeDiffusion(12, delay_s))
    observations = [fake_observation(i, image_size=84) for i in range(frames + 20)]
    with AurasAgent(config, policy=policy) as agent:
        for obs in observations[:20]:  # warm-up, pipeline fill
            agent.step(obs)
        start = time.perf_counter()
        for obs in observations[20:]:
            agent.step(obs)
        return (time.perf_counter() - start) / frames * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="Sleep per stage call in the fakes.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"| mode | local ms/frame | ray ms/frame | ray overhead ms/frame |  (delay {args.delay_ms} ms per stage)")
    print("|---|---|---|---|")
    for name, overrides in MODES.items():
        local, ray = [], []
        for _ in range(args.repeats):
            local.append(ms_per_frame(overrides, "local", args.frames, args.delay_ms / 1e3))
            ray.append(ms_per_frame(overrides, "ray", args.frames, args.delay_ms / 1e3))
        lo, ra = statistics.median(local), statistics.median(ray)
        print(f"| {name} | {lo:.3f} | {ra:.3f} | {ra - lo:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
