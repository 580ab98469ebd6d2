#!/usr/bin/env bash
# Prepare .gpu-wheels/: what the GPU machine (no network) needs beyond what it has preinstalled
# (bench/gpu_machine.txt): lark and kcomp built from this tree. Copy .gpu-wheels/ with the tree;
# bench/gpu_check.sh installs from it with pip --no-index.
#   bash bench/gpu_wheels.sh [FOLDER]     (default .gpu-wheels; uses ./.venv's pip)
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDER=${1:-.gpu-wheels}
PIP=${PIP:-.venv/bin/python -m pip}
rm -rf "$FOLDER"
mkdir -p "$FOLDER"
$PIP download --quiet --no-deps --only-binary=:all: -d "$FOLDER" "lark==1.3.1"
rm -rf build/lib build/bdist.*  # setuptools' staging folders: a file deleted here would linger there
$PIP wheel --quiet --no-deps --no-build-isolation -w "$FOLDER" .
ls "$FOLDER"
