#!/usr/bin/env bash
# Set up a virtual environment and run the test suite (ruff, then pytest). Extra arguments go to pytest;
# TEST_WORKERS=0 runs it in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
bash scripts/setup.sh test
# The visualisation test renders the HTML in headless Chromium (Debian's chromium package). Install it
# when it is missing and we can (root with apt-get); without it that one test is skipped, saying why.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
    || echo "note: could not install chromium; its test will skip" >&2
fi
"$VENV/bin/python" -m ruff check src tests examples model_cards
"$VENV/bin/python" -m ruff format --check src tests examples model_cards
# one worker process per core (pytest-xdist); each file's tests stay in one worker, so module fixtures are built once
"$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
