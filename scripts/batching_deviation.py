"""Does batching change a robot's actions? Each shipped policy, robots alone against batched in one engine.

    python scripts/batching_deviation.py [--robots 8] [--steps 8]

For every case of ``tests/test_engine.CASES`` (tiny-dp, tiny-flow, SmolVLA's tiny fixture, tiny-vla and the
one-shot expert, in their pipeline shapes), ``--robots`` robots with their own observations and
instructions each run ``--steps`` steps alone, then all together as sessions of one frame engine whose
every frame holds all of them. Prints, per case, the largest |action alone - action batched| over every
robot and step (fp32 on this device), and the engine's mean frame size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    from tests.test_engine import CASES, _alone, _engine, _max_deviation, _observations, _policy, _together

    print("| case | largest deviation | mean frame (robots) |")
    print("|---|---|---|")
    for case in CASES:
        name, shape, public = case.values
        policy = _policy(name)
        streams = [_observations(policy, r, args.steps) for r in range(args.robots)]
        alone = _alone(policy, shape, public, streams)
        engine = _engine(policy, args.robots)
        together = _together(engine, [shape] * args.robots, public, streams)
        frame = engine.stats()["mean_frame_sessions"]
        engine.close()
        print(f"| {case.id} | {_max_deviation(alone, together):.2g} | {frame} |", flush=True)


if __name__ == "__main__":
    main()
