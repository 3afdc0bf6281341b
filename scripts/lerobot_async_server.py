"""LeRobot 0.4.4's async policy server (``lerobot.async_inference.policy_server``) for
scripts/lerobot_async_compare.py: run with the LeRobot venv's python and the server's own flags
(``--host=127.0.0.1 --port=P --fps=30``). Before it starts: the offline environment and the torchvision shim of
scripts/smolvla_reference.py (the registry's torchvision wheel is CUDA-linked), and one torch thread per server
process (as each of auras' workers), so N servers share the machine's cores the way N robots' work does in auras.

``--no-similarity-filter`` (taken off the command line before the server parses it) is the one change to LeRobot's
server the comparison makes, for one labelled setup only: the server's check that drops an observation whose joint
state is within norm 1 of the last one it ran (``helpers.observations_similar``, huggingface/lerobot#1557) always
answers "not similar", so the client's ``chunk_size_threshold`` decides when a chunk is computed.
"""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import smolvla_reference  # noqa: F401  (HF offline variables and the torchvision op schemas)
import torch

torch.set_num_threads(1)
if "--no-similarity-filter" in sys.argv:
    sys.argv.remove("--no-similarity-filter")
    import lerobot.async_inference.helpers as helpers

    helpers.observations_similar = lambda *args, **kwargs: False  # policy_server imports it from helpers
runpy.run_module("lerobot.async_inference.policy_server", run_name="__main__")
