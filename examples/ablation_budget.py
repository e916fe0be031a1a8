#!/usr/bin/env python
"""Ablation of the budgeted training recipes on a validation split carved out of SST-2 train.

Never scores SST-2 dev: the rows choose the recipe, so they are measured on held-out *training* data.

Data (built here, deterministically, from ``../shared/data/sst2/train.tsv``, no random number generator):

* train (``--train_set 8k``, the default): ``data/sst2/train_8k.tsv``, the 8,000 train rows with the
  smallest ``sha1(sentence)`` (the main job's training set);
* train (``--train_set full``): every SST-2 train row except the validation rows and every phrase of 3 or
  more words that occurs inside one of them (SST-2 train holds each sentence's sub-phrases), the scale
  of ``reproduce.sh sst2``. Its runs save a checkpoint every 200 steps and resume from it when rerun;
  they go to ``runs/ablation-full`` and ``results/ablation-full``;
* validation: the 2,000 train rows of at least 10 words with the largest ``sha1(sentence)``. SST-2 train
  holds every phrase of its parse trees; the length floor keeps the validation at sentence length (dev
  sentences average 19 words), where dropping tokens matters. A validation phrase may share words with a
  training phrase of the same review sentence: that affects every row alike.

``--train_set imdb`` asks whether a recipe carries over to long inputs, on IMDb train
(``../shared/data/imdb/train.jsonl.gz``; reviews ranked by ``sha1(id)`` within each label, split by
``retention_hf.benchmarks.data.write_imdb_train_splits``, which ``reproduce.sh imdb`` uses too): it trains on the
6,000 reviews of ``reproduce.sh imdb`` (ranks 0-2,999 of each label) at 512 tokens, batch 16, and scores the
1,000 reviews ranked 3,000-3,499 of each label, so neither the training reviews nor the IMDb test set that
results/imdb reports are touched. It starts from ``reproduce.sh imdb``'s dense model (``runs/bench-imdb/dense``,
trained on those 6,000 reviews) when it is there; runs save a checkpoint every 25 steps and resume from it;
they go to ``runs/ablation-imdb`` and ``results/ablation-imdb``.

Every row starts from the same dense model (the main job's dense stage: one epoch on the 8k rows) and
trains one more epoch with its recipe at each budget. Each run writes ``<output_dir>/<row>-r<rho>-s<seed>/``
and this script collects ``results.json`` and ``results.md`` under ``--results``::

    python examples/ablation_budget.py --rows baseline topk-uniform topk-geometric --budgets 0.5 0.3
    python examples/ablation_budget.py --rows topk-geometric --seeds 1 2    # more seeds for a row
    python examples/ablation_budget.py --report    # position profiles, table and keep-ratio curves only
    python examples/ablation_budget.py --train_set full --rows hybrid-geometric-budget   # full-scale rows
    python examples/ablation_budget.py --train_set imdb --rows topk-decay-budget-kd hybrid-decay-budget-kd --budgets 0.5
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import retention_hf  # noqa: F401  (registers the retention classes with the Auto classes)
from retention_hf.benchmarks.data import write_imdb_train_splits
from retention_hf.visualization import plot_keep_ratio_curves, position_profile
from run_classification import main as run_classification


REPO = Path(__file__).resolve().parents[1]
SHARED_TRAIN = REPO.parent / "shared" / "data" / "sst2" / "train.tsv"
TRAIN_8K = REPO / "data" / "sst2" / "train_8k.tsv"
IMDB_DENSE = REPO / "runs" / "bench-imdb" / "dense"  # reproduce.sh imdb's dense model, trained on the same 6,000
# IMDb runs: reproduce.sh imdb's columns, 512 tokens and batch 16 (IMDB_DATA), and a checkpoint every 25 of
# their 375 steps
IMDB_DATA = [
    "--text_column=text",
    "--label_column=label",
    "--max_seq_length=512",
    "--per_device_train_batch_size=16",
    "--per_device_eval_batch_size=32",
    "--logging_steps=25",
]
IMDB_ARGUMENTS = [*IMDB_DATA, "--save_strategy=steps", "--save_steps=25", "--save_total_limit=1"]

# full-train-set runs (reproduce.sh sst2's scale): a checkpoint every 200 steps, resumed when rerun
FULL_ARGUMENTS = ["--save_strategy=steps", "--save_steps=200", "--save_total_limit=1", "--logging_steps=25"]

COMMON = [
    "--num_train_epochs=1",
    "--per_device_train_batch_size=32",
    "--per_device_eval_batch_size=64",
    "--warmup_steps=0.06",
    "--weight_decay=0.01",
    "--logging_steps=10",
    "--save_strategy=no",
    "--eval_strategy=no",
    "--report_to=none",
]
DENSE = ["--retention=false", "--learning_rate=5e-5", "--seed=0"]
# no distillation unless a row asks for it (the trainer distils by default from a fine-tuned start like the dense one)
RETENTION = ["--learning_rate=2e-5", "--distillation_weight=0"]
# row name -> the arguments that define its recipe (on top of COMMON and RETENTION). Every row spells out the
# settings that tell the recipes apart, so a row means the same thing whatever the defaults are.
# The rows measured before per-example budget rounding existed round every layer's count up on its own.
HARD_CONCRETE = ["--selection_training=hard_concrete", "--retention_count_rounding=ceil"]
TOPK = ["--selection_training=topk", "--topk_finetune_steps=0", "--retention_count_rounding=ceil"]
# the hybrid recipe (Hard-Concrete gates for the first half, then top-k with straight-through scores), and
# the rows that run it under per-example budget rounding with the geometric and the decay schedules
HYBRID = ["--selection_training=hard_concrete", "--topk_finetune_steps=0.5", "--topk_straight_through=true"]
GEOMETRIC_BUDGET = [*HYBRID, "--retention_schedule=geometric", "--retention_count_rounding=budget"]
DECAY_BUDGET = [
    *HYBRID,
    "--retention_schedule=decay",
    "--retention_schedule_decay=0.8",
    "--retention_count_rounding=budget",
]
TOPK_DECAY_BUDGET = [
    "--selection_training=topk",
    "--topk_finetune_steps=0",
    "--topk_straight_through=true",
    "--retention_schedule=decay",
    "--retention_schedule_decay=0.8",
    "--retention_count_rounding=budget",
]
ROWS = {
    # (c) the recipe before this ablation: Hard-Concrete, cost p = sigmoid(s) on the biases, then top-k for the
    # last 30 % of the steps with the learned schedule and the scorers frozen in effect
    "baseline": [
        *HARD_CONCRETE,
        "--topk_finetune_steps=0.3",
        "--topk_straight_through=false",
        "--retention_schedule=learned",
    ],
    # (a) the L0 cost P(z != 0) with its gradient into every scorer weight, PI-damped dual, same top-k phase
    "l0-full": [
        *HARD_CONCRETE,
        "--budget_cost=l0",
        "--retention_budget_gradient=full",
        "--dual_damping=5",
        "--topk_finetune_steps=0.3",
        "--topk_straight_through=false",
        "--retention_schedule=learned",
    ],
    # (b) top-k selection from the start of the budgeted phase, straight-through scores
    "topk-uniform": [*TOPK, "--retention_schedule=uniform"],
    "topk-geometric": [*TOPK, "--retention_schedule=geometric"],
    "topk-geometric-gumbel": [*TOPK, "--retention_schedule=geometric", "--topk_noise=1"],
    # (c) with straight-through scores in its top-k phase
    "baseline-st": [
        *HARD_CONCRETE,
        "--topk_finetune_steps=0.3",
        "--topk_straight_through=true",
        "--retention_schedule=learned",
    ],
    # (c) with straight-through scores and the geometric schedule in its top-k phase, which is half the run
    "hybrid-geometric": [
        *HARD_CONCRETE,
        "--topk_finetune_steps=0.5",
        "--topk_straight_through=true",
        "--retention_schedule=geometric",
    ],
    # the same with the L0 cost on the biases, so that the soft phase counts the tokens it really processes
    "hybrid-geometric-l0": [
        *HARD_CONCRETE,
        "--topk_finetune_steps=0.5",
        "--topk_straight_through=true",
        "--retention_schedule=geometric",
        "--budget_cost=l0",
    ],
    # hybrid-geometric with each example's kept counts rounded to meet its budget (the default before "decay")
    "hybrid-geometric-budget": GEOMETRIC_BUDGET,
    # hybrid-geometric-budget with the same share of tokens at every layer
    "hybrid-uniform-budget": [*HYBRID, "--retention_schedule=uniform", "--retention_count_rounding=budget"],
    # the hybrid with the "decay" schedule (the default schedule; this row was the default recipe until top-k from the
    # first step with distillation won at full scale): each layer keeps 0.8 of the share of the layer before it, scaled
    # to the budget (geometric's shape at rho 0.5, flatter than geometric at lower budgets)
    "hybrid-decay-budget": DECAY_BUDGET,
    # hybrid-decay-budget with the first gate after layer 0, so that every token is contextualised once and CLS has
    # attended to all of them before anything is dropped
    "hybrid-decay-budget-gate1": [*DECAY_BUDGET, "--retention_first_gated_layer=1"],
    # hybrid-decay-budget with distillation from the dense model (logits, alpha 0.5, temperature 2)
    "hybrid-decay-budget-kd": [*DECAY_BUDGET, "--distillation_weight=0.5"],
    # the same with the task loss mostly replaced by the teacher's (weight 0.9)
    "hybrid-decay-budget-kd9": [*DECAY_BUDGET, "--distillation_weight=0.9"],
    # the distilled hybrid with the dropped tokens carried as one merged slot in the top-k half
    "hybrid-decay-budget-kd-merge": [*DECAY_BUDGET, "--distillation_weight=0.5", "--retention_merge_dropped=true"],
    # the distilled hybrid plus the kept tokens' layer outputs matched to the teacher's in the top-k half
    "hybrid-decay-budget-kd-hidden": [*DECAY_BUDGET, "--distillation_weight=0.5", "--distillation_hidden_weight=5"],
    # the distilled hybrid trained for two epochs instead of one (each phase one epoch)
    "hybrid-decay-budget-kd-2ep": [*DECAY_BUDGET, "--distillation_weight=0.5", "--num_train_epochs=2"],
    # the distilled hybrid with every gate's scores also taught the dense teacher's attention rollout
    "hybrid-decay-budget-kd-rank": [*DECAY_BUDGET, "--distillation_weight=0.5", "--distillation_ranking_weight=1"],
    # top-k from the start (exact budget after the warm-up), distilled, the scores taught the teacher's rollout
    "topk-decay-budget-kd-rank": [*TOPK_DECAY_BUDGET, "--distillation_weight=0.5", "--distillation_ranking_weight=1"],
    # the same without the ranking term (its control; the default recipe since it won at full scale)
    "topk-decay-budget-kd": [*TOPK_DECAY_BUDGET, "--distillation_weight=0.5"],
    # the same without distillation (does top-k from the first step win without a teacher too?)
    "topk-decay-budget": TOPK_DECAY_BUDGET,
    # top-k from the first step with distillation, the budget annealed over half / 70 % of the run instead of 30 %
    # (the scorers learn their ranking while most tokens are still kept, as in the hybrid's soft phase)
    "topk-decay-budget-kd-warm50": [*TOPK_DECAY_BUDGET, "--distillation_weight=0.5", "--budget_warmup_steps=0.5"],
    "topk-decay-budget-kd-warm70": [*TOPK_DECAY_BUDGET, "--distillation_weight=0.5", "--budget_warmup_steps=0.7"],
    # top-k from the first step with distillation, the scorers trained ten times faster (a short run gives the
    # ranking few steps to form while most tokens are kept)
    "topk-decay-budget-kd-gatelr": [*TOPK_DECAY_BUDGET, "--distillation_weight=0.5", "--gate_learning_rate=1e-2"],
    # top-k from the first step with distillation for two epochs (does the encoder adapt further to the kept tokens?)
    "topk-decay-budget-kd-2ep": [*TOPK_DECAY_BUDGET, "--distillation_weight=0.5", "--num_train_epochs=2"],
    # the default recipe whose gates start from, and learn to correct, the [CLS] token's attention ranking in the
    # layer each gate feeds (EViT's importance; the harness's cls_attention baseline) instead of a blank scorer
    "topk-decay-budget-kd-prior": [
        *TOPK_DECAY_BUDGET,
        "--distillation_weight=0.5",
        "--retention_scorer_attention_prior=true",
    ],
    # hybrid-geometric-budget with distillation from the dense model (logits, alpha 0.5, temperature 2)
    "hybrid-geometric-budget-kd": [*GEOMETRIC_BUDGET, "--distillation_weight=0.5"],
    # the same with the soft phase only as long as the budget warm-up (30 %): exact top-k from then on
    "hybrid-warmup-budget": [
        "--selection_training=hard_concrete",
        "--topk_finetune_steps=0.7",
        "--topk_straight_through=true",
        "--retention_schedule=geometric",
        "--retention_count_rounding=budget",
    ],
    # (d) a scorer that sees both sides of every token
    "topk-geometric-bidir": [*TOPK, "--retention_schedule=geometric", "--retention_scorer=bidirectional"],
    # distillation from the dense model (logits)
    "topk-geometric-kd": [*TOPK, "--retention_schedule=geometric", "--distillation_weight=0.5"],
}


def _words(text: str) -> str:
    """A row's text as rows are compared: lower case, single spaces."""
    return " ".join(text.lower().split())


def _spans(text: str) -> set[str]:
    """Every contiguous run of words of ``text`` (as ``_words`` writes it), itself included."""
    words = text.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


def _read_tsv(path: Path) -> list[list[str]]:
    """A GLUE TSV's rows, header included, verbatim (GLUE quotes nothing)."""
    with path.open() as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _write_tsv(path: Path, rows: list[list[str]]) -> None:
    """Write rows as ``_read_tsv`` reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n").writerows(rows)


def build_full_train(path: Path, validation: Path, min_words: int = 3) -> Path:
    """Every SST-2 train row except the validation rows and the phrases inside them (``--train_set full``).

    A phrase of ``min_words`` or more is left out when its words occur as a contiguous run in a validation
    sentence (compared in lower case), so no sizeable part of a validation sentence's parse tree is trained
    on. Shorter phrases stay: single words and word pairs recur across every review, and dropping all that
    occur in 2,000 sentences would strip the short phrases that make up much of SST-2 train.
    """
    if path.is_file():
        return path
    held_out = [_words(row[0]) for row in _read_tsv(validation)[1:]]
    inside = set().union(*map(_spans, held_out))
    rows = _read_tsv(SHARED_TRAIN)
    kept = [rows[0]] + [row for row in rows[1:] if len(row[0].split()) < min_words or _words(row[0]) not in inside]
    _write_tsv(path, kept)
    return path


def last_checkpoint(run_dir: Path) -> list[str]:
    """``--resume_from_checkpoint`` for the newest checkpoint of an interrupted run, else nothing."""
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    return [f"--resume_from_checkpoint={checkpoints[-1]}"] if checkpoints else []


def build_validation(path: Path, size: int = 2000, min_words: int = 10) -> Path:
    """The carved-out validation split (see the module docstring); disjoint from ``train_8k.tsv``."""
    if path.is_file():
        return path
    rows = _read_tsv(SHARED_TRAIN)[1:]
    ranked = sorted(rows, key=lambda row: hashlib.sha1(row[0].strip().encode()).hexdigest())
    excluded = {row[0] for row in ranked[:8000]}  # train_8k
    candidates = [row for row in reversed(ranked) if len(row[0].split()) >= min_words and row[0] not in excluded]
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["sentence\tlabel", *(f"{sentence}\t{label}" for sentence, label in candidates[:size])]
    path.write_text("\n".join(lines) + "\n")  # GLUE's own format, verbatim (no quoting)
    return path


def build_sentence_holdout(folder: Path, size: int = 2000) -> tuple[Path, Path]:
    """A held-out split built the way SST-2 dev was: whole review sentences, none of whose phrases is trained on.

    SST-2 train holds every phrase of every parse tree of its review sentences; dev holds only whole sentences of
    other reviews. The carve-out of ``build_validation`` keeps a row's parent sentence and its 1-2-word phrases in
    training, so it measures something easier than dev. Here the sentences are the train rows that no other row
    contains (6,885, 19.4 words on average against dev's 19.5); the ``size`` with the largest ``sha1`` are held
    out, and a train row is dropped when it occurs inside a held-out sentence and inside none of the remaining
    ones: what would be left had SST-2 split those sentences off before collecting phrases.

    Returns (train, validation) TSV paths under ``folder``.
    """
    train_path, validation_path = folder / "sst2_train_minus_sentences.tsv", folder / "sst2_train_sentences.tsv"
    if train_path.is_file() and validation_path.is_file():
        return train_path, validation_path
    header, *rows = _read_tsv(SHARED_TRAIN)
    first = {}  # each text's first row (SST-2 train repeats a few texts)
    for row in rows:
        first.setdefault(_words(row[0]), row)
    inside = {span for text in first for span in _spans(text) - {text} if span in first}
    sentences = sorted(
        (text for text in first if text not in inside), key=lambda t: hashlib.sha1(t.encode()).hexdigest()
    )
    held_out, kept = sentences[-size:], sentences[:-size]
    in_held_out = set().union(*map(_spans, held_out))
    in_kept = set().union(*map(_spans, kept))
    train = [row for row in rows if (text := _words(row[0])) not in in_held_out or text in in_kept]
    _write_tsv(train_path, [header, *train])
    _write_tsv(validation_path, [header, *(first[text] for text in held_out)])
    return train_path, validation_path


def validation_texts(validation: Path) -> list[str]:
    """The texts of a validation file: SST-2 TSV (first column) or IMDb jsonl (``text``)."""
    if validation.suffix == ".jsonl":
        with validation.open(encoding="utf-8") as handle:  # not splitlines(): reviews may hold U+2028
            return [json.loads(line)["text"] for line in handle if line.strip()]
    return [line.split("\t")[0].strip() for line in validation.read_text().splitlines()[1:]]


def warmup_share(arguments: list[str]) -> float:
    """The row's ``--budget_warmup_steps`` (a share of the run), else RetentionTrainingArguments' default."""
    values = [
        float(argument.split("=", 1)[1]) for argument in arguments if argument.startswith("--budget_warmup_steps=")
    ]
    return values[-1] if values else 0.3


def training_keep(run_dir: Path, target: float, warmup: float = 0.3) -> dict[str, float]:
    """The realised training keep ratio logged after the budget warm-up (``warmup``, a share of the run): mean
    and largest deviation from the target. For Hard-Concrete rows only the soft phase counts (its steps log a
    budget penalty); their top-k phase spends exactly what inference spends on the same inputs, which the top-k
    rows report."""
    state = json.loads((run_dir / "trainer_state.json").read_text())
    warmup = warmup * state["max_steps"]
    entries = [entry for entry in state["log_history"] if "keep_ratio" in entry and entry["step"] > warmup]
    soft = [entry for entry in entries if "budget_penalty" in entry]
    keeps = [entry["keep_ratio"] for entry in (soft or entries)]
    if not keeps:
        return {}
    return {
        "train_keep_ratio_after_warmup": statistics.fmean(keeps),
        "train_keep_max_deviation": max(abs(keep - target) for keep in keeps),
    }


@torch.no_grad()
def last_layer_profile(run_dir: Path, validation: Path, batch_size: int = 64, max_length: int = 128) -> list[float]:
    """Share of each fifth of the validation texts that the last layer processed ([CLS] left out)."""
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    texts = validation_texts(validation)
    kept, masks = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding="max_length",
            return_tensors="pt",
        )
        outputs = model(**batch)
        positions = outputs.kept_positions[-1]
        kept.append(torch.nn.functional.pad(positions, (0, max_length - positions.shape[1]), value=-1))
        masks.append(batch["attention_mask"])
    return position_profile(torch.cat(kept), torch.cat(masks))


def logged_keep(run_dir: Path, budget: float) -> list[dict]:
    """The run's log entries that carry a keep ratio. Runs logged before the budget statistics were averaged
    per name diluted the one window that spans the switch to the top-k phase (its target reads below the
    budget, which a real target never does): that entry is left out."""
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [
        entry
        for entry in state["log_history"]
        if "keep_ratio" in entry and entry.get("budget_target", budget) >= budget - 1e-9
    ]


def report(results: dict, output: Path, results_dir: Path, validation: Path, train_set: str = "8k") -> None:
    """Add the position profiles, then write ``results.md`` and the keep-ratio curves."""
    for name, row in results.items():
        if name != "dense":
            row["arguments"] = ROWS[row["row"]]
            if (output / name / "trainer_state.json").is_file():
                row.update(training_keep(output / name, row["budget"], warmup_share(row["arguments"])))
                # kept with the results, so the curves can be drawn again without the run directories
                row["train_keep_curve"] = [
                    {key: entry[key] for key in ("step", "keep_ratio", "budget_target") if key in entry}
                    for entry in logged_keep(output / name, row["budget"])
                ]
        if name != "dense" and "position_profile" not in row and (output / name).is_dir():
            length = 512 if train_set == "imdb" else 128
            row["position_profile"] = last_layer_profile(output / name, validation, max_length=length)
    write(results, results_dir / "results.json")
    dense = results["dense"]["eval_accuracy"]
    described = (
        "IMDb train carve-out validation (1,000 reviews ranked 3,000-3,499 by sha1(id) per label, never trained on); "
        "training set: the 6,000 reviews of reproduce.sh imdb, 512 tokens"
        if train_set == "imdb"
        else "SST-2 train carve-out validation (2,000 sentences of >= 10 words, never trained on); training set "
        f"{train_set}"
    )
    lines = [
        f"{described}. Dense: {dense:.4f}.",
        "",
        "| row | rho | seed | accuracy | vs dense | eval keep | train keep after warm-up, mean / max dev. (Hard-Concrete: soft phase) "
        "| retention off | last-layer share by fifth of the text | train min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results.items():
        if name == "dense":
            continue
        keep = row.get("train_keep_ratio_after_warmup")
        keep_text = f"{keep:.3f} / {row['train_keep_max_deviation']:.3f}" if keep is not None else ""
        profile = ", ".join(f"{share:.2f}" for share in row.get("position_profile", []))
        lines.append(
            f"| {row['row']} | {row['budget']} | {row['seed']} | {row['eval_accuracy']:.4f} | "
            f"{row['eval_accuracy'] / dense:.1%} | {row['eval_keep_ratio']:.3f} | {keep_text} | "
            f"{row['eval_accuracy_retention_off']:.4f} | {profile} | {row['train_runtime_s'] / 60:.1f} |"
        )
    by_row: dict[tuple[str, float], list[float]] = {}
    for name, row in results.items():
        if name != "dense":
            by_row.setdefault((row["row"], row["budget"]), []).append(row["eval_accuracy"])
    seeded = {key: values for key, values in by_row.items() if len(values) > 1}
    if seeded:
        lines += ["", "Rows with several seeds (mean ± sample standard deviation):", ""]
        lines += ["| row | rho | seeds | accuracy | vs dense |", "| --- | --- | --- | --- | --- |"]
        for (row, budget), values in sorted(seeded.items()):
            mean, spread = statistics.fmean(values), statistics.stdev(values)
            lines.append(f"| {row} | {budget} | {len(values)} | {mean:.4f} ± {spread:.4f} | {mean / dense:.1%} |")
    command = (
        "python examples/ablation_budget.py --rows baseline l0-full topk-uniform topk-geometric "
        "topk-geometric-gumbel baseline-st hybrid-geometric hybrid-geometric-l0 topk-geometric-bidir topk-geometric-kd "
        "&& python examples/ablation_budget.py --rows hybrid-geometric baseline-st --seeds 1 2 "
        "&& python examples/ablation_budget.py --rows hybrid-warmup-budget "
        "&& python examples/ablation_budget.py --rows hybrid-geometric-budget hybrid-uniform-budget "
        "hybrid-geometric-budget-kd hybrid-decay-budget "
        "&& python examples/ablation_budget.py --rows hybrid-decay-budget hybrid-uniform-budget --seeds 1 2 "
        "&& python examples/ablation_budget.py --rows hybrid-decay-budget-gate1 hybrid-decay-budget-kd "
        "&& python examples/ablation_budget.py --rows topk-decay-budget-kd topk-decay-budget "
        "topk-decay-budget-kd-warm50 topk-decay-budget-kd-warm70 "
        "&& python examples/ablation_budget.py --rows topk-decay-budget-kd-gatelr "
        "&& python examples/ablation_budget.py --rows topk-decay-budget-kd --budgets 0.7 "
        "&& python examples/ablation_budget.py --rows topk-decay-budget-kd --budgets 0.5 --seeds 1 "
        "&& python examples/ablation_budget.py --rows topk-decay-budget-kd --budgets 0.3 0.7 --seeds 1"
    )
    if train_set != "8k":  # one command per seed and budget, naming exactly the rows that ran there
        runs = [row for name, row in results.items() if name != "dense"]
        groups: dict[tuple[int, float], list[str]] = {}
        for row in runs:
            groups.setdefault((row["seed"], row["budget"]), []).append(row["row"])
        command = " && ".join(
            f"python examples/ablation_budget.py --train_set {train_set} --rows {' '.join(dict.fromkeys(rows))} "
            f"--budgets {budget} --seeds {seed}"
            for (seed, budget), rows in sorted(groups.items(), key=lambda item: (item[0][0], -item[0][1]))
        )
    lines += ["", f"Command: `{command}`"]
    (results_dir / "results.md").write_text("\n".join(lines) + "\n")
    for budget in sorted({row["budget"] for name, row in results.items() if name != "dense"}):
        latest: dict[str, str] = {}  # per row, its run with the highest seed: the most recent logging code
        candidates = [
            (name, row)
            for name, row in results.items()
            if name != "dense" and row["budget"] == budget and row.get("train_keep_curve")
        ]
        for name, row in candidates:
            if row["row"] not in latest or results[latest[row["row"]]]["seed"] < row["seed"]:
                latest[row["row"]] = name
        runs = {
            f"{row} (seed {results[name]['seed']})": results[name]["train_keep_curve"] for row, name in latest.items()
        }
        if runs:
            plot_keep_ratio_curves(
                runs,
                results_dir / f"train_keep_ratio_r{budget}.png",
                title=f"Realised keep ratio in training, rho {budget}",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", nargs="*", default=list(ROWS), choices=list(ROWS), help="none: only the dense start model"
    )
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.3])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--train_set", choices=["8k", "full", "imdb"], default="8k", help="see the module docstring")
    parser.add_argument("--output_dir", default=None, help="default: runs/ablation (8k) or runs/ablation-full")
    parser.add_argument("--results", default=None, help="default: results/ablation (8k) or results/ablation-full")
    parser.add_argument("--max_train_samples", type=int, default=None, help="fewer training rows (smoke runs)")
    parser.add_argument("--report", action="store_true", help="only add profiles and write the table and plots")
    args = parser.parse_args()

    suffix = "" if args.train_set == "8k" else f"-{args.train_set}"
    output = Path(args.output_dir or f"runs/ablation{suffix}")
    results_dir = Path(args.results or f"results/ablation{suffix}")
    extra = [] if args.max_train_samples is None else [f"--max_train_samples={args.max_train_samples}"]
    if args.train_set == "imdb":
        train_file, validation = write_imdb_train_splits(output / "data")
        extra += IMDB_ARGUMENTS
    else:
        validation = build_validation(output / "data" / "sst2_train_carve_2k.tsv")
    if args.train_set == "full":
        train_file = build_full_train(output / "data" / "sst2_train_minus_carve.tsv", validation)
        extra += FULL_ARGUMENTS
    elif args.train_set == "8k":
        train_file = TRAIN_8K
    data = [f"--train_file={train_file}", f"--validation_file={validation}"]
    resume = last_checkpoint if args.train_set != "8k" else (lambda run_dir: [])
    results_path = results_dir / "results.json"
    results = read(results_path)
    if args.report:
        report(results, output, results_dir, validation, args.train_set)
        return

    dense_dir = output / "dense"
    if args.train_set == "imdb" and (IMDB_DENSE / "config.json").is_file():
        dense_dir = IMDB_DENSE  # already trained on the same 6,000 reviews: only scored on the carve-out here
    # a fresh clone has the results but not the models: the rows need the dense model itself to start from
    if "dense" not in results or not (dense_dir / "config.json").is_file():
        start = time.perf_counter()
        if dense_dir == IMDB_DENSE:
            scored = output / "dense-eval"
            only_eval = ["--do_train=false", "--do_eval=true", f"--model_name_or_path={dense_dir}"]
            metrics = run_classification([*COMMON, *DENSE, *data, *extra, *only_eval, f"--output_dir={scored}"])
        else:
            metrics = run_classification(
                [*COMMON, *DENSE, *data, *extra, *resume(dense_dir), f"--output_dir={dense_dir}"]
            )
        results = read(results_path)
        results["dense"] = {"eval_accuracy": metrics["eval_accuracy"], "minutes": (time.perf_counter() - start) / 60}
        write(results, results_path)

    for seed in args.seeds:
        for row in args.rows:
            for budget in args.budgets:
                name = f"{row}-r{budget}-s{seed}"
                if name in results:
                    continue
                run_dir = output / name
                start = time.perf_counter()
                metrics = run_classification(
                    [
                        *COMMON,
                        *RETENTION,
                        *ROWS[row],
                        *data,
                        *extra,
                        *resume(run_dir),
                        f"--seed={seed}",
                        f"--model_name_or_path={dense_dir}",
                        f"--retention_ratio={budget}",
                        f"--output_dir={run_dir}",
                    ]
                )
                # re-read first: several processes may run rows side by side and write the same file
                results = read(results_path)
                results[name] = {
                    "row": row,
                    "budget": budget,
                    "seed": seed,
                    "arguments": ROWS[row],
                    "eval_accuracy": metrics["eval_accuracy"],
                    "eval_keep_ratio": metrics["eval_keep_ratio"],
                    "eval_accuracy_retention_off": metrics["eval_accuracy_retention_off"],
                    "train_runtime_s": metrics.get("train_runtime"),
                    "minutes": (time.perf_counter() - start) / 60,
                    **training_keep(run_dir, budget, warmup_share(ROWS[row])),
                }
                write(results, results_path)
    report(read(results_path), output, results_dir, validation, args.train_set)


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
