#!/usr/bin/env bash
# Set everything up and run the whole test suite, slow real-engine tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ -x scripts/install-chromium.sh ]; then
  ./scripts/install-chromium.sh || echo "chromium unavailable: the dashboard browser test will skip"
fi
.venv/bin/python -m pytest -q "$@"
