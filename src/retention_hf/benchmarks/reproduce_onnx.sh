#!/usr/bin/env bash
# ONNX Runtime against eager PyTorch, dense and retention, in one harness run per dataset (results/onnx/<dataset>/).
#
#   bash src/retention_hf/benchmarks/reproduce_onnx.sh
#
# It exports the SST-2 reference checkpoints of reproduce.sh sst2 (runs/bench-sst2: run that first): the dense
# model is the stock BERT twin of the rho 0.5 checkpoint, the retention models run at rho 0.5 and 0.3. Speed
# depends on the shapes alone (the kept counts follow from the attention mask and the budget), so IMDb at 512
# tokens is timed with the same weights; no accuracy is reported here, only ORT vs PyTorch parity per export.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
VENV="${VENV:-.venv}"
bash scripts/setup.sh examples,onnx
PY="$VENV/bin/python"
RUNS=runs/bench-sst2
for name in dense rho0.5 rho0.3; do
  [ -f "$RUNS/$name/config.json" ] || { echo "missing $RUNS/$name: run reproduce.sh sst2 first" >&2; exit 2; }
done
LEARNED=(--dense "$RUNS/dense" --learned "0.5=$RUNS/rho0.5" "0.3=$RUNS/rho0.3" --backend onnxruntime)
"$PY" -m retention_hf.benchmarks.run --dataset imdb --max_length 512 --batch_size 16 --repeats 3 --timing_examples 256 \
  "${LEARNED[@]}" --output results/onnx/imdb
"$PY" -m retention_hf.benchmarks.run --dataset sst2 --max_length 128 --batch_size 32 --repeats 5 \
  "${LEARNED[@]}" --output results/onnx/sst2
