"""A robot loop that runs with ``auras_client`` alone (no auras, torch or simulator): for each robot-side
staleness strategy, ``RobotClient.control`` drives a scripted robot against `auras serve` for a number of
control steps, and the trace of what happened (each new action the client held, with its age, when the
loop looked; observations published with their step, state and extras; rows applied) is written as JSON,
for tests/test_client_package.py to replay through auras' own executor.

    python tests/client_robot_loop.py tcp://127.0.0.1:PORT trace.json none rtc roll_forward chunk_blend
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from auras_client import RobotClient

CONTROL_HZ, CAMERA_HZ, STEPS = 50.0, 25.0, 120


def run(address: str, strategy: str) -> dict:
    with RobotClient(address, cameras={"front": (84, 84)}, state_dim=4, instruction="push the puck",
                     ttl_s=5.0, timeout_s=60.0) as robot:
        control = robot.control(CONTROL_HZ, camera_hz=CAMERA_HZ, strategy=strategy, deadline_s=60.0)
        rng = np.random.default_rng(0)
        seen, published, rows, attempts = [], [], [], []
        newest_action, publish = robot.newest_action, robot.publish

        def record_newest():  # what the client held when the control loop looked (its own record, not the loop's)
            action = newest_action()
            if action is not None and (not seen or seen[-1]["order"] != list(action.order)):
                seen.append({"t": control.t, "order": list(action.order), "chunk": action.chunk.tolist(),
                             "age_s": action.age()})
            return action

        def record_publish(images, state, *, stamp=None, extras=None):
            seq = publish(images, state, stamp=stamp, extras=extras)
            attempts.append(control.t)  # the loop wanted to send (a full queue may refuse it: seq None)
            if seq is not None:
                published.append({"t": control.t, "seq": seq, "state": np.asarray(state).tolist(),
                                  "extras": {k: np.asarray(v).tolist() for k, v in (extras or {}).items()}})
            return seq

        robot.newest_action, robot.publish = record_newest, record_publish
        start = time.monotonic()
        for t in range(STEPS):
            state = np.array([t / 100.0, 0.1, -0.2, 0.3], np.float32)
            row = control.step(lambda state=state: ({"front": rng.integers(0, 256, (84, 84, 3), np.uint8)}, state))
            rows.append(np.asarray(row).tolist())
            time.sleep(max(0.0, start + (t + 1) / CONTROL_HZ - time.monotonic()))
        return {"strategy": strategy, "server": {k: robot.server_info[k] for k in
                                                 ("action_shape", "execute_steps", "staleness_strategy",
                                                  "staleness_settings")},
                "seen": seen, "sent": published, "attempts": attempts, "rows": rows, "stats": control.stats()}


if __name__ == "__main__":
    address, out, *strategies = sys.argv[1:]
    traces = [run(address, strategy) for strategy in strategies]
    with open(out, "w") as f:
        json.dump(traces, f)
    print("TRACES", [(t["strategy"], t["stats"]["actions_applied"]) for t in traces])
