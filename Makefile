# The two commands of the README quick start. Both set themselves up on a machine that has only Python 3.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without a visible NVIDIA GPU, pin torch to the CPU build so pip never pulls CUDA wheels.
CONSTRAINTS := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: bench test lint setup clean

setup: $(STAMP)

# Installs auras with its robot client (clients/python, auras-client) and the example policy package
# of docs/custom-policy.md (entry point example-flow).
$(STAMP): pyproject.toml constraints-cpu.txt examples/custom-policy/pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e clients/python -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -e examples/custom-policy
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/auras bench --env mujoco $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
