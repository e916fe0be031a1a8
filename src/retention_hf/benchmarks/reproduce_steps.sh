# Steps shared by the reproduce_*.sh scripts (sourced, not run): resumable fine-tunes and evaluations that are
# skipped when their output is already there, each with its wall time appended to $RUNS/wall_times.txt, so a
# script interrupted by a session limit picks up where it stopped when it is run again.
# The sourcing script sets RUNS (the folder of its checkpoints and evaluations).

timed() {  # timed LABEL COMMAND...: run it and record its wall time
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "$name $((SECONDS - start)) s" | tee -a "$RUNS/wall_times.txt"
}

fine_tune() {  # fine_tune NAME COMMAND...: run COMMAND --output_dir $RUNS/NAME unless a model is there already,
  # resuming from its last checkpoint-* when an earlier run stopped half-way
  local name=$1 last resume=() label="train-$1"
  shift
  if [ -f "$RUNS/$name/config.json" ]; then
    echo "reusing $RUNS/$name"
    return
  fi
  last=$(ls -d "$RUNS/$name"/checkpoint-* 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$last" ]; then
    resume=(--resume_from_checkpoint "$last")
    label="$label (resumed from $(basename "$last"))"
    echo "resuming $last"
  fi
  timed "$label" "$@" "${resume[@]}" --output_dir "$RUNS/$name"
}

score() {  # score MODEL OUT COMMAND...: run COMMAND --output_dir $RUNS/OUT unless its eval_results.json is newer
  # than the model $RUNS/MODEL
  local model=$1 out=$2
  shift 2
  if [ "$RUNS/$out/eval_results.json" -nt "$RUNS/$model/config.json" ]; then
    echo "reusing $RUNS/$out"
    return
  fi
  timed "$out" "$@" --output_dir "$RUNS/$out"
}
