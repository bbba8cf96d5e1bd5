#!/usr/bin/env bash
# Install torch==$TORCH_VERSION into the virtual environment $VENV unless it has torch already.
# Where no NVIDIA GPU is present it takes PyTorch's CPU build: a plain `torch` requirement would
# otherwise pull a CUDA build of several GB. Used by setup.sh and check-floors.sh.
set -euo pipefail

VENV="${VENV:?set VENV to the virtual environment}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
pip=("$VENV/bin/python" -m pip install --quiet)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install-torch: NVIDIA GPU found, installing torch==$TORCH_VERSION (CUDA build)"
    "${pip[@]}" "torch==$TORCH_VERSION"
  elif curl -sf -m 5 -o /dev/null "$CPU_INDEX/"; then
    echo "install-torch: no GPU, installing torch==$TORCH_VERSION (CPU build) from $CPU_INDEX"
    "${pip[@]}" "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"
  else
    # PyTorch's index is out of reach (e.g. a machine limited to PyPI whose pip finds a local
    # CPU wheel, as our development machines do).
    echo "install-torch: no GPU and $CPU_INDEX unreachable, torch==$TORCH_VERSION from pip's indexes"
    "${pip[@]}" "torch==$TORCH_VERSION"
  fi
fi
"$VENV/bin/python" -c "import torch; print('install-torch: torch', torch.__version__, '| CUDA available:', torch.cuda.is_available())"
