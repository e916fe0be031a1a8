#!/usr/bin/env bash
# The test suite against the lowest transformers that setup.cfg admits (constraints-lowest.txt), in its own
# virtual environment, so that the floor users are promised is a tested one. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-lowest}" CONSTRAINTS=constraints-lowest.txt bash scripts/test.sh "$@"
"${VENV:-.venv-lowest}/bin/python" -c "import transformers; print('tested against transformers', transformers.__version__)"
