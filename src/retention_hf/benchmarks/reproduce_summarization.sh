#!/usr/bin/env bash
# Regenerate the SumPubMed table: fine-tune a dense all-MiniLM-L6-v2 sentence scorer on SUM_TRAIN train documents,
# then retention scorers at rho 0.5 and 0.3 from it with the default recipe (top-k training from the first step,
# the decay schedule; sentence scoring has no logits to distil, so no teacher), choose each model's summary size
# k on the first 100 validation documents, and score every model on the 500 test documents: ROUGE-1/2/L, the
# realised keep ratio and documents/s, with lead-3, lead-k and the greedy oracle, and for the retention models the
# same weights with retention off on the first 100 test documents (ROUGE and the speed-up, in one run).
#
#   bash src/retention_hf/benchmarks/reproduce_summarization.sh   # hours on 2 CPU cores (needs ../shared/data)
#   SUM_TRAIN=2000 bash src/retention_hf/benchmarks/reproduce_summarization.sh   # every train document
#   SUM_DATA=sumpubmed-tiny SUM_TRAIN=8 bash src/retention_hf/benchmarks/reproduce_summarization.sh   # a smoke run
#
# The table, each model's eval_results.json (renamed <model>.json) and wall_times.txt go to results/sumpubmed/
# (runs/bench-sum-sumpubmed-tiny/results/ for the smoke run, or wherever SUM_RESULTS points). Checkpoints go to
# runs/bench-sum-<data>/ and are reused when already there; an interrupted fine-tune resumes from its last
# checkpoint (every 20 steps) when the script is run again, and an evaluation newer than its model is not repeated.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
VENV="${VENV:-.venv}"
bash scripts/setup.sh examples
PY="$VENV/bin/python"
SUM_DATA="${SUM_DATA:-sumpubmed}"
SUM_TRAIN="${SUM_TRAIN:-500}"  # the first N of the 2,000 train documents, for every fine-tune
RUNS="runs/bench-sum-$SUM_DATA"
if [ "$SUM_DATA" = sumpubmed-tiny ]; then RESULTS="${SUM_RESULTS:-$RUNS/results}"; else RESULTS="${SUM_RESULTS:-results/sumpubmed}"; fi
mkdir -p "$RUNS"
COMMON=(--dataset "$SUM_DATA" --max_train_samples "$SUM_TRAIN" --max_validation_samples 100 --num_train_epochs 1
  --per_device_train_batch_size 16 --per_device_eval_batch_size 16 --warmup_steps 0.1 --logging_steps 10
  --report_to none --save_strategy steps --save_steps 20 --save_total_limit 1 --disable_tqdm true --seed 0)

# shellcheck source=reproduce_steps.sh
source src/retention_hf/benchmarks/reproduce_steps.sh

train() {  # train NAME ARGS...: fine-tune into $RUNS/NAME unless it is already there
  local name=$1
  shift
  fine_tune "$name" "$PY" examples/run_summarization.py "${COMMON[@]}" "$@" --do_train true
}

evaluate() {  # evaluate NAME [ARGS...]: choose k and score $RUNS/NAME on the test documents into $RUNS/eval-NAME
  local name=$1
  shift
  score "$name" "eval-$name" "$PY" examples/run_summarization.py "${COMMON[@]}" --model_name_or_path "$RUNS/$name" \
    "$@" --do_eval true
}

train dense --retention false --learning_rate 5e-5
evaluate dense --retention false
for rho in 0.5 0.3; do
  train "rho$rho" --model_name_or_path "$RUNS/dense" --retention_ratio "$rho" --learning_rate 3e-5 \
    --retention_count_rounding budget
  evaluate "rho$rho" --max_timing_samples 100
done
mkdir -p "$RESULTS"
for name in dense rho0.5 rho0.3; do cp "$RUNS/eval-$name/eval_results.json" "$RESULTS/$name.json"; done
cp "$RUNS/wall_times.txt" "$RESULTS/wall_times.txt"
"$PY" - "$RUNS" "$SUM_DATA" "$SUM_TRAIN" <<'PYTHON' | tee "$RESULTS/results.md"
import json, sys
from pathlib import Path
runs, data, train = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
read = {name: json.loads((runs / f"eval-{name}" / "eval_results.json").read_text()) for name in ("dense", "rho0.5", "rho0.3")}
dense = read["dense"]
print(f"# {data} test ({dense['test_documents']} documents)\n")
print(f"all-MiniLM-L6-v2 sentence scorers: dense fine-tuned on the first {train:,} train documents, each retention "
      "scorer from it on the same documents (the default recipe); k chosen per model on the first 100 validation "
      "documents; 2 CPU cores. Made by `"
      + (f"SUM_DATA={data} " if data != "sumpubmed" else "") + (f"SUM_TRAIN={train} " if train != 500 else "")
      + "bash src/retention_hf/benchmarks/reproduce_summarization.sh`; `<model>.json` are the evaluations' "
      "eval_results.json, `wall_times.txt` the wall time of each step.\n")
# docs/s is each evaluation's own (runs apart, on a shared machine); the speed-up is the one ratio measured in one run
print("| summary | k | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-1 vs dense | keep ratio | docs/s (its own run) "
      "| speed-up vs retention off (same run, first 100 docs) | ROUGE-1 on / off (first 100 docs) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
def row(label, k, r1, r2, rl, rest=("", "", "", ""), relative=True):
    versus = f"{100 * r1 / dense['eval_rouge1']:.1f} %" if relative else ""
    print(f"| {label} | {k} | {r1:.4f} | {r2:.4f} | {rl:.4f} | {versus} | " + " | ".join(rest) + " |")
row("lead-3", 3, dense["lead3_rouge1"], dense["lead3_rouge2"], dense["lead3_rougeL"])
row(f"lead-{dense['top_k']} (dense model's k)", dense["top_k"], dense["leadk_rouge1"], dense["leadk_rouge2"], dense["leadk_rougeL"])
row("greedy oracle (upper bound)", "", dense["oracle_rouge1"], dense["oracle_rouge2"], dense["oracle_rougeL"], relative=False)
for name, r in read.items():
    same_docs = f"{r.get('eval_rouge1_timing_documents', r['eval_rouge1']):.4f} / {r.get('eval_rouge1_retention_off', 0):.4f}"
    off = (f"{r['eval_speedup']:.2f}x", same_docs) if "eval_speedup" in r else ("", "")
    rest = (f"{r['eval_keep_ratio']:.3f}", f"{r['eval_documents_per_second']:.3f}", *off)
    row(f"**{name}**", r["top_k"], r["eval_rouge1"], r["eval_rouge2"], r["eval_rougeL"], rest)
PYTHON
