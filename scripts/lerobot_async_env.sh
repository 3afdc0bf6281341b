#!/usr/bin/env bash
# The LeRobot 0.4.4 venv that scripts/lerobot_async_compare.py runs LeRobot's async inference in: the reference venv
# of scripts/smolvla_reference_env.sh (LeRobot 0.4.4 --no-deps over the pinned CPU torch, with its async extras
# grpcio 1.73.1 and protobuf 6.31), plus the simulated robot LeRobot's RobotClient drives: the Meta-World and MuJoCo
# versions auras' own venv runs (metaworld pins mujoco==3.3.0) and PyOpenGL for MUJOCO_GL=egl rendering.
# LeRobot is never an auras dependency: it lives in this venv only. Nothing here downloads model weights.
# Usage (from the repository root):  bash scripts/lerobot_async_env.sh
#   V=<venv dir> (default .tmp/lerobot-ref-venv; built first if missing), C=<constraints file> (constraints-cpu.txt)
set -euo pipefail
V=${V:-.tmp/lerobot-ref-venv}; C=${C:-constraints-cpu.txt}
if [ ! -x "$V/bin/python" ] || ! "$V/bin/python" -c "import lerobot" 2>/dev/null; then
  V="$V" C="$C" bash "$(dirname "$0")/smolvla_reference_env.sh"
fi
# The same simulator versions as auras' venv (pyproject: mujoco==3.3.0, metaworld>=3.0; 3.1.1 installed there).
"$V/bin/pip" install -c "$C" "mujoco==3.3.0" "metaworld==3.1.1" "PyOpenGL>=3.1.7,<4" \
  "grpcio==1.73.1" "protobuf>=6.31.1,<6.32"
"$V/bin/pip" freeze > "$V/freeze.txt"
"$V/bin/python" - <<'EOF'
import importlib.metadata as m
print("lerobot async venv ready:", {p: m.version(p) for p in ("lerobot", "grpcio", "protobuf", "mujoco", "metaworld",
                                                               "torch", "numpy")})
EOF
