"""Live, with the real openpi-client in its own venv (it pins numpy < 2): a robot script's
``WebsocketClientPolicy`` wrapped by ``auras_client.openpi.DeadlinePolicy`` keeps its control loop running
through a SIGKILL and restart of `auras serve --protocol openpi` (tiny-dp), applying the fallback's rows for
the whole outage and resuming with fresh rows once the server is back; openpi's own ActionChunkBroker raises
instead (scripts/openpi_deadline_demo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_deadline_policy_rides_out_a_server_restart_with_the_real_openpi_client(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "openpi_deadline_demo.py"), "--venv",
                           str(tmp_path / "openpi-venv"), "--out", str(out)], capture_output=True, text=True,
                          timeout=800, env=dict(os.environ, MUJOCO_GL="egl"), cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["versions"]["numpy"].startswith("1.") and result["versions"]["openpi_client"]  # the real package
    robot, config = result["deadline"], result["config"]
    report = json.dumps(robot, indent=1)

    # the robot never saw an exception and infer never waited on the server
    assert robot["exception"] is None and robot["infer_ms_max"] < 100, report
    # the outage cost a deadline miss, and the fallback began once the last chunk's rows and the deadline ran out
    assert robot["deadline_misses"] >= 1 and robot["errors"] >= 1, report
    ran_out = config["horizon"] / config["hz"] + config["deadline_s"]
    assert 0 < robot["fallback_began_after_kill_s"] < ran_out + 0.3, report
    # every row until the robot resumed was the fallback's (decay to rest), for as long as the server was away
    assert robot["fallback_rows_equal_the_fallbacks"], report
    assert robot["fallback_rows_checked"] == robot["fallback_ticks"], report
    assert robot["fallback_s"] >= robot["server_down_s"] - ran_out - 0.3, report
    # the worker reconnected by itself and fresh rows came back after the restart
    assert robot["reconnects"] == 1 and robot["resumed_after_server_back_s"] is not None, report
    assert 0 <= robot["resumed_after_server_back_s"] < 2.0 + 3.0, report  # the longest backoff, then two requests
    assert robot["fresh_ticks_after_resume"] > 10, report

    broker = result["broker"]  # openpi's ActionChunkBroker on the same outage: raises, never recovers
    assert broker["first_error"] is not None and not broker["recovered"], json.dumps(broker, indent=1)
