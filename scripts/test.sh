#!/usr/bin/env bash
# Set up a virtual environment and run the test suite (ruff, then pytest). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
bash scripts/setup.sh test
"$VENV/bin/python" -m ruff check src tests examples benchmarks
"$VENV/bin/python" -m ruff format --check src tests examples benchmarks
"$VENV/bin/python" -m pytest "$@"
