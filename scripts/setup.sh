#!/usr/bin/env bash
# Create .venv and install Cortex with its test extras. Idempotent; no prompts.
# The first run compiles llama.cpp (llama-cpp-python): ~6 minutes on two cores,
# then pip's wheel cache makes it fast.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
