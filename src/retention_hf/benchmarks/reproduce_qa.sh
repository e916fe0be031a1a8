#!/usr/bin/env bash
# Regenerate the SQuAD v1.1 table: fine-tune a dense MiniLM QA model on the train set (less the 10 articles that
# squad-val holds out for tuning, so the same models serve the ablations there), the retention models at
# rho 0.5 and 0.3 from it (question protected, the default recipe: top-k training from the first step,
# distillation from the dense model), then score each on the whole official dev set (10,570 questions) with
# EM / F1, the realised keep ratio and questions/s, next to the same weights with retention off, and the
# retention models' answer profile (the layer at which each question's answer was dropped, and the F1 per group).
#
#   bash src/retention_hf/benchmarks/reproduce_qa.sh            # hours on 2 CPU cores (needs ../shared/data/squad_v1.1)
#   QA_TRAIN=85091 bash src/retention_hf/benchmarks/reproduce_qa.sh   # every train question instead of 30,000
#   bash src/retention_hf/benchmarks/reproduce_qa.sh ablation   # rho 0.3 rows (query-aware gates, the first gate
#     after layer 0 instead of before it, both) from the same dense model, each on 8,000 questions, scored on
#     squad-val's 10 held-out articles
#   QA_DATA=squad-tiny QA_EVAL=squad-tiny bash src/retention_hf/benchmarks/reproduce_qa.sh   # a smoke run (shipped data)
#
# Checkpoints go to runs/bench-qa-<train source>/ and are reused when already there (delete one to retrain); an
# interrupted fine-tune resumes from its last checkpoint (every 100 steps) when the script is run again, and an
# evaluation newer than its model is not repeated. Each step appends its wall time to
# runs/bench-qa-<train source>/wall_times.txt (a resumed fine-tune's line says so and counts only that part).
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
VENV="${VENV:-.venv}"
bash scripts/setup.sh examples
PY="$VENV/bin/python"
MODE="${1:-table}"  # table: rho 0.5 and 0.3 on the dev set; ablation: the rho 0.3 rows on squad-val
case "$MODE" in
  table) QA_EVAL="${QA_EVAL:-squad}" ;;  # evaluates on this source's eval split: squad = the official dev set
  ablation) QA_EVAL="${QA_EVAL:-squad-val}" ;;
  *) echo "unknown mode '$MODE' (expected table or ablation)" >&2; exit 2 ;;
esac
QA_DATA="${QA_DATA:-squad-val}"  # trains on this source's train split (recipes/squad_data.py)
ABLATION_TRAIN="${ABLATION_TRAIN:-8000}"  # train questions of each ablation row
RUNS="runs/bench-qa-$QA_DATA"
QA_TRAIN="${QA_TRAIN:-30000}"  # train questions, spread over every article (--max_train_samples)
mkdir -p "$RUNS"
COMMON=(--max_seq_length 384 --doc_stride 128 --max_train_samples "$QA_TRAIN" --num_train_epochs 1
  --per_device_train_batch_size 16 --per_device_eval_batch_size 32 --train_sampling_strategy group_by_length
  --weight_decay 0.01 --logging_steps 25 --report_to none --save_strategy steps --save_steps 100
  --save_total_limit 1 --disable_tqdm true --seed 0)

timed() {  # timed LABEL COMMAND...: run it and record its wall time
  local name=$1 start=$SECONDS; shift
  "$@"
  echo "$name $((SECONDS - start)) s" | tee -a "$RUNS/wall_times.txt"
}

train() {  # train NAME ARGS...: fine-tune into $RUNS/NAME unless it is already there
  local name=$1; shift
  if [ -f "$RUNS/$name/config.json" ]; then echo "reusing $RUNS/$name"; return; fi
  local last resume=() label="train-$name"
  last=$(ls -d "$RUNS/$name"/checkpoint-* 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$last" ]; then
    resume=(--resume_from_checkpoint "$last"); label="$label (resumed from $(basename "$last"))"; echo "resuming $last"
  fi
  timed "$label" "$PY" examples/run_qa.py --dataset "$QA_DATA" "${COMMON[@]}" "$@" "${resume[@]}" --do_train true --do_eval false \
    --output_dir "$RUNS/$name"
}

evaluate() {  # evaluate NAME [ARGS...]: score $RUNS/NAME on the eval set into $RUNS/eval-$QA_EVAL-NAME unless done
  local name=$1 out="$RUNS/eval-$QA_EVAL-$1"; shift
  if [ "$out/eval_results.json" -nt "$RUNS/$name/config.json" ]; then echo "reusing $out"; return; fi
  timed "eval-$QA_EVAL-$name" "$PY" examples/run_qa.py --dataset "$QA_EVAL" "${COMMON[@]}" --model_name_or_path "$RUNS/$name" "$@" \
    --do_train false --do_eval true --output_dir "$out"
}

train dense --retention false --learning_rate 5e-5 --warmup_steps 0.1
MODELS=(rho0.5 rho0.3)
if [ "$MODE" = ablation ]; then  # one row per idea at rho 0.3, each from the dense model on ABLATION_TRAIN questions
  MODELS=()
  for row in "default" "query --retention_scorer_query true" "gate1 --retention_first_gated_layer 1" \
      "query-gate1 --retention_scorer_query true --retention_first_gated_layer 1"; do
    read -r name flags <<< "$row"
    # shellcheck disable=SC2086  # the row's flags split into words on purpose
    train "ablation-$name" --model_name_or_path "$RUNS/dense" --retention_ratio 0.3 --protect_question \
      --learning_rate 2e-5 --warmup_steps 0.06 --retention_count_rounding budget --max_train_samples "$ABLATION_TRAIN" $flags
    MODELS+=("ablation-$name")
  done
else
  for rho in 0.5 0.3; do
    train "rho$rho" --model_name_or_path "$RUNS/dense" --retention_ratio "$rho" --protect_question \
      --learning_rate 2e-5 --warmup_steps 0.06 --retention_count_rounding budget
  done
fi
evaluate dense --retention false
for name in "${MODELS[@]}"; do evaluate "$name" --answer_profile; done
"$PY" - "$RUNS/eval-$QA_EVAL" "${MODELS[@]}" <<'PYTHON'
import json, sys
from pathlib import Path
prefix, models = sys.argv[1], sys.argv[2:]
def read(name):
    return json.loads(Path(f"{prefix}-{name}", "eval_results.json").read_text())
dense = read("dense")
print("| model | EM | F1 | F1 vs dense | keep ratio | questions/s | vs retention off | F1, retention off |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for name in ("dense", *models):
    r = read(name)
    off = (f"{r['eval_speedup']:.2f}x", f"{r['eval_f1_retention_off']:.2f}") if "eval_speedup" in r else ("", "")
    print(f"| {name} | {r['eval_exact_match']:.2f} | {r['eval_f1']:.2f} | {100 * r['eval_f1'] / max(dense['eval_f1'], 1e-9):.1f} % "
          f"| {r['eval_keep_ratio']:.3f} | {r['eval_questions_per_second']:.1f} | {off[0]} | {off[1]} |")
for name in models:  # where the F1 is lost (retention_hf.answer_profile)
    r = read(name)
    print(f"\n{name}: questions by the layer that dropped their answer\n")
    print("| group | questions | share | EM | F1 | F1, retention off |")
    print("| --- | --- | --- | --- | --- | --- |")
    for g in r.get("answer_profile", []):
        print(f"| {g['group']} | {g['questions']} | {100 * g['share']:.1f} % | {g['exact_match']:.2f} | {g['f1']:.2f} "
              f"| {g['f1_reference']:.2f} |")
PYTHON
