#!/usr/bin/env bash
# The transformers overlay LeRobot 0.4.4's π0 / π0.5 need (they check for openpi's patched transformers):
# transformers 4.53.2 with openpi's src/openpi/models_pytorch/transformers_replace copied over it, in a directory put
# first on PYTHONPATH when scripts/pi0_reference.py runs. Only for making reference fixtures; nothing downloads weights.
# Usage (from the repository root, after bash scripts/smolvla_reference_env.sh):
#   OPENPI_GIT=<a git directory of Physical-Intelligence/openpi> bash scripts/pi0_reference_overlay.sh
#   V=<reference venv> (default .tmp/lerobot-ref-venv), OVERLAY=<target> (default .tmp/tf4532)
set -euo pipefail
V=${V:-.tmp/lerobot-ref-venv}; OVERLAY=${OVERLAY:-.tmp/tf4532}
: "${OPENPI_GIT:?set OPENPI_GIT to a git directory of Physical-Intelligence/openpi (the .git of a clone, or a mirror)}"
rm -rf "$OVERLAY"
"$V/bin/pip" install --quiet --no-deps --target "$OVERLAY" transformers==4.53.2 "tokenizers>=0.21,<0.22"
R=src/openpi/models_pytorch/transformers_replace
git --git-dir="$OPENPI_GIT" archive HEAD "$R" | tar -x -C "$OVERLAY" --strip-components=3
cp -r "$OVERLAY/transformers_replace/"* "$OVERLAY/transformers/" && rm -r "$OVERLAY/transformers_replace"
echo "overlay ready: PYTHONPATH=$OVERLAY (openpi $(git --git-dir="$OPENPI_GIT" rev-parse --short HEAD))"
