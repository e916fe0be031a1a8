#!/usr/bin/env bash
# Regenerate the SQuAD v1.1 table: fine-tune a dense MiniLM QA model on the train set (less the 10 articles that
# squad-val holds out for tuning, so the same models serve the ablations there), the retention models at
# rho 0.5 and 0.3 from it (question protected, the default recipe: top-k training from the first step,
# distillation from the dense model) and again with gates taught the dense model's answer distribution
# (distillation_ranking_target=answer, at ranking weight 1 and at 3), and at weight 3 with gates that count the
# question's words near each token (retention_scorer_question_match), with that and hidden-state distillation
# (distillation_hidden_weight 5), and with both and a restore in which the dropped tokens attend to the last
# layer's kept tokens (retention_restore_attention, the best squad-val ablation), then score each
# on the whole official dev set (10,570 questions) with EM / F1, the realised keep ratio and questions/s, next to
# the same weights with retention off, and the retention models' answer profile (the layer at which each
# question's answer was dropped, and the F1 per group).
#
#   bash src/retention_hf/benchmarks/reproduce_qa.sh            # hours on 2 CPU cores (needs ../shared/data/squad_v1.1)
#   QA_TRAIN=85091 bash src/retention_hf/benchmarks/reproduce_qa.sh   # the dense model on every train question
#   QA_RETENTION_TRAIN=30000 bash src/retention_hf/benchmarks/reproduce_qa.sh   # retention fine-tunes on 30,000
#   bash src/retention_hf/benchmarks/reproduce_qa.sh ablation   # rho 0.3 rows from the same dense model, each
#     on QA_RETENTION_TRAIN questions and scored on squad-val's 10 held-out articles: the table's rho 0.3 model
#     (the default recipe), the first gate after layer 0 instead of before it, query-aware gates, both, and gates
#     taught the dense model's answer distribution (distillation_ranking_target=answer): alone, with query-aware
#     gates, with the first gate after layer 0, with three times the ranking weight, and with that weight and a
#     steeper schedule (retention_schedule_decay 0.6: the first gates keep more, the last ones less), and with that
#     weight and hidden-state distillation (distillation_hidden_weight 5: every layer's kept tokens held to the
#     dense model's states, against the encoder drift that retention-off F1 shows), and with that weight and gates
#     that count the question's words near each token (retention_scorer_question_match), with both of the last two,
#     and with both and dropped tokens restored through one attention pass over the last layer's kept tokens
#     (retention_restore_attention), and with all of that and gates that start from the attention the question
#     pays each token in the layer they feed (retention_scorer_attention_prior_source=question), and the restore
#     row again with the word count over each token's sentence instead of a window (--retention_scorer_match_sentences)
#   QA_ROWS="ablation-answer" bash src/retention_hf/benchmarks/reproduce_qa.sh ablation   # only these rows; the
#     table keeps the other rows' results already in results/ (from the same dense model: seed 0 reproduces it)
#   QA_ROWS="rho0.5-answer rho0.3-answer" bash src/retention_hf/benchmarks/reproduce_qa.sh   # only these rows
#   QA_ROWS=none bash src/retention_hf/benchmarks/reproduce_qa.sh ablation   # rebuild the table from results/ only
#   QA_DATA=squad-tiny QA_EVAL=squad-tiny bash src/retention_hf/benchmarks/reproduce_qa.sh   # a smoke run (shipped data)
#
# The table and each model's eval_results.json (renamed <model>.json), with wall_times.txt, are copied to
# results/squad/ (results/squad-ablation/ in ablation mode; runs/bench-qa-<train source>/results-<mode>/ for the
# squad-tiny smoke run, or wherever QA_RESULTS points).
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
RUNS="runs/bench-qa-$QA_DATA"
QA_TRAIN="${QA_TRAIN:-30000}"  # the dense model's train questions, spread over every article (--max_train_samples)
# each retention fine-tune's train questions (the same hash sample, so a subset of the dense model's): 8,000 keeps
# the dense model, both retention models and their evaluations inside one 3-hour session on 2 CPU cores
QA_RETENTION_TRAIN="${QA_RETENTION_TRAIN:-8000}"
# a retention model's reference (the same weights with retention off), speed-up and answer profile cover the first
# QA_TIMING eval questions; its own EM / F1 always covers all of them
QA_TIMING="${QA_TIMING:-2000}"
mkdir -p "$RUNS"
if [ "$QA_DATA" = squad-tiny ]; then RESULTS="${QA_RESULTS:-$RUNS/results-$MODE}"
elif [ "$MODE" = table ]; then RESULTS="${QA_RESULTS:-results/squad}"
else RESULTS="${QA_RESULTS:-results/squad-ablation}"; fi
COMMON=(--max_seq_length 384 --doc_stride 128 --max_train_samples "$QA_TRAIN" --num_train_epochs 1
  --per_device_train_batch_size 16 --per_device_eval_batch_size 32 --train_sampling_strategy group_by_length
  --weight_decay 0.01 --logging_steps 25 --report_to none --save_strategy steps --save_steps 100
  --save_total_limit 1 --disable_tqdm true --seed 0)

# shellcheck source=reproduce_steps.sh
source src/retention_hf/benchmarks/reproduce_steps.sh

train() {  # train NAME ARGS...: fine-tune into $RUNS/NAME unless it is already there
  local name=$1
  shift
  fine_tune "$name" "$PY" examples/run_qa.py --dataset "$QA_DATA" "${COMMON[@]}" "$@" --do_train true --do_eval false
}

evaluate() {  # evaluate NAME [ARGS...]: score $RUNS/NAME on the eval set into $RUNS/eval-$QA_EVAL-NAME unless done
  local name=$1
  shift
  score "$name" "eval-$QA_EVAL-$name" "$PY" examples/run_qa.py --dataset "$QA_EVAL" "${COMMON[@]}" \
    --model_name_or_path "$RUNS/$name" "$@" --do_train false --do_eval true
}

train dense --retention false --learning_rate 5e-5 --warmup_steps 0.1
evaluate dense --retention false  # before the retention models: a weak dense model is worth knowing about first
# each row: NAME RHO [FLAGS]; every model starts from the dense one with the question protected, and is evaluated
# as soon as it is trained, so an interrupted run leaves its finished rows scored
ANSWER=(--distillation_ranking_weight 1 --distillation_ranking_target answer)  # gates taught the answer (ablation)
ANSWER3=(--distillation_ranking_weight 3 --distillation_ranking_target answer)  # the best squad-val row
MATCH=(--retention_scorer_question_match true)  # gates that count the question's words near each token
HIDDEN5=(--distillation_hidden_weight 5)  # every layer's kept tokens held to the dense model's states
RESTORE=(--retention_restore_attention true)  # dropped tokens attend to the last layer's kept tokens on restore
# gates that start from the attention the question pays each token in the layer they feed
QPRIOR=(--retention_scorer_attention_prior true --retention_scorer_attention_prior_source question)
SENTENCES=(--retention_scorer_match_sentences true)  # the word count over each token's sentence, not a window
ROWS=("rho0.5 0.5" "rho0.3 0.3" "rho0.5-answer 0.5 ${ANSWER[*]}" "rho0.3-answer 0.3 ${ANSWER[*]}"
  "rho0.5-answer3 0.5 ${ANSWER3[*]}" "rho0.3-answer3 0.3 ${ANSWER3[*]}"
  "rho0.5-answer3-match 0.5 ${ANSWER3[*]} ${MATCH[*]}" "rho0.3-answer3-match 0.3 ${ANSWER3[*]} ${MATCH[*]}"
  "rho0.5-answer3-match-hidden5 0.5 ${ANSWER3[*]} ${MATCH[*]} ${HIDDEN5[*]}"
  "rho0.3-answer3-match-hidden5 0.3 ${ANSWER3[*]} ${MATCH[*]} ${HIDDEN5[*]}"
  "rho0.5-answer3-match-hidden5-restore 0.5 ${ANSWER3[*]} ${MATCH[*]} ${HIDDEN5[*]} ${RESTORE[*]}"
  "rho0.3-answer3-match-hidden5-restore 0.3 ${ANSWER3[*]} ${MATCH[*]} ${HIDDEN5[*]} ${RESTORE[*]}")
if [ "$MODE" = ablation ]; then  # one row per idea at rho 0.3; the first is the table's rho 0.3 model, reused
  ROWS=("rho0.3 0.3" "ablation-gate1 0.3 --retention_first_gated_layer 1" "ablation-query 0.3 --retention_scorer_query true"
    "ablation-query-gate1 0.3 --retention_scorer_query true --retention_first_gated_layer 1"
    "ablation-query-answer 0.3 --retention_scorer_query true ${ANSWER[*]}" "ablation-answer 0.3 ${ANSWER[*]}"
    "ablation-answer-gate1 0.3 --retention_first_gated_layer 1 ${ANSWER[*]}"
    "ablation-answer-weight3 0.3 ${ANSWER3[*]}"
    "ablation-answer3-decay0.6 0.3 ${ANSWER3[*]} --retention_schedule_decay 0.6"
    "ablation-answer3-hidden5 0.3 ${ANSWER3[*]} ${HIDDEN5[*]}"
    "ablation-answer3-match 0.3 ${ANSWER3[*]} ${MATCH[*]}"
    "ablation-answer3-match-hidden5 0.3 ${ANSWER3[*]} ${MATCH[*]} ${HIDDEN5[*]}"
    "ablation-answer3-match-hidden5-restore 0.3 ${ANSWER3[*]} ${MATCH[*]} ${HIDDEN5[*]} ${RESTORE[*]}"
    "ablation-answer3-match-hidden5-restore-qprior 0.3 ${ANSWER3[*]} ${MATCH[*]} ${HIDDEN5[*]} ${RESTORE[*]} ${QPRIOR[*]}"
    "ablation-answer3-match-sentences-hidden5-restore 0.3 ${ANSWER3[*]} ${MATCH[*]} ${SENTENCES[*]} ${HIDDEN5[*]} ${RESTORE[*]}")
fi
mkdir -p "$RESULTS"
TIMED_BEFORE=0  # the steps earlier invocations timed
if [ -f "$RUNS/wall_times.txt" ]; then TIMED_BEFORE=$(wc -l < "$RUNS/wall_times.txt"); fi
MODELS=()  # every row, in order, as NAME|FLAGS for the table
RAN=""      # the rows this invocation ran
for row in "${ROWS[@]}"; do
  read -r name rho flags <<< "$row"
  MODELS+=("$name|$flags")
  if [ -n "${QA_ROWS:-}" ] && [[ " $QA_ROWS " != *" $name "* ]]; then continue; fi
  RAN+=" $name"
  # shellcheck disable=SC2086  # the row's flags split into words on purpose
  train "$name" --model_name_or_path "$RUNS/dense" --retention_ratio "$rho" --protect_question --learning_rate 2e-5 \
    --warmup_steps 0.06 --retention_count_rounding budget --max_train_samples "$QA_RETENTION_TRAIN" $flags
  evaluate "$name" --answer_profile --max_timing_samples "$QA_TIMING"
  cp "$RUNS/eval-$QA_EVAL-$name/eval_results.json" "$RESULTS/$name.json"
done
cp "$RUNS/eval-$QA_EVAL-dense/eval_results.json" "$RESULTS/dense.json"
if [ -z "${QA_ROWS:-}" ]; then cp "$RUNS/wall_times.txt" "$RESULTS/wall_times.txt"
elif [ -n "$RAN" ]; then  # the other rows' wall times stay; QA_ROWS=none only rebuilds the table
  { echo "# QA_ROWS=\"$QA_ROWS\", $(date -u +%F)"; tail -n "+$((TIMED_BEFORE + 1))" "$RUNS/wall_times.txt"; } \
    >> "$RESULTS/wall_times.txt"  # only the steps this invocation timed
fi
"$PY" - "$RESULTS" "$MODE" "$QA_DATA" "$QA_EVAL" "$QA_TRAIN" "$QA_RETENTION_TRAIN" "${MODELS[@]}" \
  <<'PYTHON' | tee "$RUNS/results-$MODE.md" && cp "$RUNS/results-$MODE.md" "$RESULTS/results.md"
import json, sys
from pathlib import Path
results, mode, data, evaluated, dense_train, retention_train, *rows = sys.argv[1:]
flags = dict(row.split("|", 1) for row in rows)
models = [name for name in flags if Path(results, f"{name}.json").exists()]  # the rows scored so far
def read(name):
    return json.loads(Path(results, f"{name}.json").read_text())
dense = read("dense")
trained_on = {"squad": "SQuAD v1.1 train", "squad-val": "SQuAD v1.1 train less the 10 articles squad-val holds out"}
scored_on = {"squad": "the official SQuAD v1.1 dev set", "squad-val": "squad-val's 10 held-out train articles"}
print(f"# Extractive QA: trained on {trained_on.get(data, data + ' train')}, scored on "
      f"{scored_on.get(evaluated, evaluated + ' eval')} ({dense['eval_questions']:,} questions)\n")
print(f"all-MiniLM-L6-v2; the dense model fine-tuned on {int(dense_train):,} train questions, each retention model from it on "
      f"{int(retention_train):,} (question protected, the default recipe plus each row's flags, below); 384 tokens, "
      "stride 128. Made by "
      f"`{'QA_DATA=' + data + ' ' if data != 'squad-val' else ''}bash src/retention_hf/benchmarks/reproduce_qa.sh"
      f"{' ablation' if mode == 'ablation' else ''}`; `<model>.json` are the evaluations' eval_results.json, "
      "`wall_times.txt` the wall time of each step. questions/s is absolute and moves between sessions on a shared "
      "machine (rows added with QA_ROWS come from later runs than the dense row), so the speed-up is the one measured "
      "in each row's own run, against the same weights with retention off (dense compute) on the same batches.\n")
timing = next((read(name).get("timing_questions") for name in models), None)
on = f"first {timing:,} questions" if timing else "every question"
print(f"| model | EM | F1 | F1 vs dense | keep ratio | questions/s | speed-up vs retention off (same run, {on}) "
      f"| F1 on / off ({on}) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for name in ("dense", *models):
    r = read(name)
    same = f"{r.get('eval_f1_timing_questions', r['eval_f1']):.2f} / {r.get('eval_f1_retention_off', 0):.2f}"
    off = (f"{r['eval_speedup']:.2f}x", same) if "eval_speedup" in r else ("", "")
    print(f"| {name} | {r['eval_exact_match']:.2f} | {r['eval_f1']:.2f} | {100 * r['eval_f1'] / max(dense['eval_f1'], 1e-9):.1f} % "
          f"| {r['eval_keep_ratio']:.3f} | {r['eval_questions_per_second']:.1f} | {off[0]} | {off[1]} |")
if any(flags[name] for name in models):
    print("\nEach row's flags, on top of the default recipe:\n")
    for name in models:
        print(f"- {name}: {'`' + flags[name] + '`' if flags[name] else 'none'}")
for name in models:  # where the F1 is lost (retention_hf.answer_profile)
    r = read(name)
    print(f"\n{name}: questions by the layer that dropped their answer ({on})\n")
    print("| group | questions | share | EM | F1 | F1, retention off |")
    print("| --- | --- | --- | --- | --- | --- |")
    for g in r.get("answer_profile", []):
        print(f"| {g['group']} | {g['questions']} | {100 * g['share']:.1f} % | {g['exact_match']:.2f} | {g['f1']:.2f} "
              f"| {g['f1_reference']:.2f} |")
PYTHON
