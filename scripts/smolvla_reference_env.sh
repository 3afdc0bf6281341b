#!/usr/bin/env bash
# Builds the throwaway LeRobot 0.4.4 reference venv that scripts/smolvla_reference.py runs in (a few minutes).
# LeRobot is never an auras dependency: this venv only produces the reference fixture tests/fixtures/smolvla-tiny.
# lerobot 0.4.4 declares torch<2.11, so it goes in with --no-deps over the pinned CPU torch (constraints-cpu.txt);
# `pip check` then lists only the torch/torchvision/torchcodec caps. The registry's torchvision wheel is CUDA-linked;
# scripts/smolvla_reference.py works around that at import time (its torchvision shim). Nothing here downloads model weights.
# Usage (from the repository root):  bash scripts/smolvla_reference_env.sh
#   V=<venv dir> (default .tmp/lerobot-ref-venv), C=<constraints file> (default constraints-cpu.txt)
set -euo pipefail
V=${V:-.tmp/lerobot-ref-venv}; C=${C:-constraints-cpu.txt}
python3 -m venv "$V"
"$V/bin/pip" install -c "$C" "transformers>=4.57.1,<5" "huggingface-hub[cli,hf-transfer]>=0.34.2,<0.36" \
  "datasets>=4,<5" "diffusers>=0.27.2,<0.36" "grpcio==1.73.1" "protobuf>=6.31.1,<6.32" "num2words>=0.5.14,<0.6" \
  "accelerate>=1.10,<2" "packaging>=24.2,<26" "draccus==0.10.0" "gymnasium>=1.1.1,<2" "av>=15,<16" \
  "opencv-python-headless>=4.9,<4.13" "setuptools>=71,<81" "wandb>=0.24,<0.25" "rerun-sdk>=0.24,<0.27" \
  "cmake>=3.29.0.1,<4.2" "matplotlib>=3.10.3,<4" scipy torch==2.13.0 torchvision \
  "einops>=0.8,<0.9" "jsonlines>=4,<5" "pynput>=1.7.7,<1.9" "pyserial>=3.5,<4" "deepdiff>=7.0.1,<9" \
  "imageio[ffmpeg]>=2.34,<3" "termcolor>=2.4,<4" safetensors
"$V/bin/pip" install --no-deps lerobot==0.4.4
"$V/bin/pip" freeze > "$V/freeze.txt"
echo "reference venv ready: $V (lerobot $("$V/bin/python" -c 'import importlib.metadata as m; print(m.version("lerobot"))'))"
