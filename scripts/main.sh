#!/usr/bin/env bash
# The main job: set up, then fine-tune dense and retention (rho = 0.5) all-MiniLM-L6-v2 on the SST-2 subset in
# data/sst2, evaluate both on the full SST-2 dev set and print the comparison. Extra arguments go to
# examples/main_job.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
bash scripts/setup.sh examples
"$VENV/bin/python" examples/main_job.py "$@"
