#!/usr/bin/env bash
# Installs kcomp into ./.venv on a fresh machine and runs the main job.
#   bash setup.sh            install, then run the example
#   bash setup.sh --no-run   install only
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# The CPU build of torch first: a plain `torch` requirement would pull a
# multi-GB CUDA build. On a machine with a GPU, install the CUDA build instead.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"
if [ "${1:-}" != "--no-run" ]; then
  .venv/bin/kcomp build examples/cnn_digits.k
fi
