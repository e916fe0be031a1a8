#!/usr/bin/env python
"""Training-step cost of each budgeted training recipe against a dense step, on the same batches, in one run.

A step is what ``RetentionTrainer`` does per batch: forward, loss (plus the budget penalty for the
Hard-Concrete recipes, plus the teacher's forward for distillation), backward and an AdamW update. Every
recipe runs every batch in turn (interleaved, so that machine noise hits all alike), with the same gate
noise, and the median step time is reported with its ratio to the dense step.

Each recipe runs a checkpoint trained with it at the budget, so its gates drop what they learned to
drop (an untrained Hard-Concrete gate keeps nearly everything):

    python examples/benchmark_training.py --dense runs/ablation/dense \\
        --recipe hard_concrete=runs/ablation/baseline-r0.5-s0 \\
        --recipe hard_concrete_sparse=runs/ablation/baseline-r0.5-s0 \\
        --recipe topk=runs/ablation/topk-geometric-r0.5-s0 \\
        --recipe topk_distillation=runs/ablation/topk-geometric-kd-r0.5-s0 \\
        --dataset sst2 --max_length 128 --batch_size 32

Recipes: ``hard_concrete`` (masked relaxed gates, the paper's Eq. 6), ``hard_concrete_sparse`` (the same
with ``exact_sparse_training``: tokens whose gate is exactly 0 are gathered out), ``topk`` (the scheduled
top-k with straight-through scores: tokens are physically removed), ``topk_distillation`` (``topk``
plus a forward pass of the dense teacher) and ``topk_distillation_any`` (the any-budget recipe,
``retention_ratio_range``: ``topk_distillation`` with every example's budget drawn uniformly from
``--budget_range``, the same draws for every repeat)::

    python examples/benchmark_training.py --dense runs/bench-sst2/dense \
        --recipe topk_distillation=runs/bench-sst2/rho0.5 --recipe topk_distillation_any=runs/bench-sst2/any \
        --budget_range 0.2 1.0 --dataset sst2 --max_length 128 --batch_size 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

import retention_hf  # noqa: F401  (registers the retention classes with the Auto classes)
from retention_hf.distillation import distillation_loss


REPO = Path(__file__).resolve().parents[1]
TEXTS = {
    "imdb": REPO.parent / "shared/data/imdb/sample_train.jsonl",
    "sst2": REPO / "data/sst2/train_8k.tsv",
}
RECIPES = ("hard_concrete", "hard_concrete_sparse", "topk", "topk_distillation", "topk_distillation_any")


def read_texts(dataset: str, count: int) -> tuple[list[str], list[int]]:
    path = TEXTS[dataset]
    if dataset == "imdb":
        rows = [json.loads(line) for line in path.read_text().splitlines()[:count]]
        return [row["text"] for row in rows], [int(row["label"]) for row in rows]
    rows = [line.split("\t") for line in path.read_text().splitlines()[1 : count + 1]]
    return [row[0].strip() for row in rows], [int(row[1]) for row in rows]


class Step:
    """One recipe: its model (in training mode, with its own AdamW) and how it computes the loss."""

    def __init__(self, name: str, path: str, teacher: torch.nn.Module | None):
        self.name = name
        overrides = {"retention_enabled": name != "dense"}
        self.model = AutoModelForSequenceClassification.from_pretrained(path, **overrides).train()
        config = self.model.config
        if name != "dense":
            config.retention_sparse_training = name == "hard_concrete_sparse"
            config.retention_train_with_topk = name.startswith("topk")
            config.retention_topk_straight_through = name.startswith("topk")
        self.teacher = teacher if name.startswith("topk_distillation") else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-8)  # tiny: the weights barely move

    def __call__(
        self, batch: dict[str, torch.Tensor], seed: int, budgets: list[float] | None = None
    ) -> tuple[float, float]:
        """Time one step; ``budgets`` (one per example) is what the any-budget recipe trains at."""
        torch.manual_seed(seed)  # the same gate noise for every recipe
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        per_call = {"retention_ratio": budgets} if self.name == "topk_distillation_any" else {}
        outputs = self.model(**batch, **per_call)
        loss = outputs.loss
        if outputs.get("expected_keep_ratio") is not None:
            loss = loss + outputs.expected_keep_ratio.mean()  # the budget penalty's graph
        if self.teacher is not None:
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            with torch.no_grad():
                teacher_outputs = self.teacher(**inputs)
            loss = 0.5 * loss + 0.5 * distillation_loss(outputs, teacher_outputs, batch["attention_mask"], 2.0).mean()
        loss.backward()
        self.optimizer.step()
        elapsed = time.perf_counter() - start
        keep = outputs.get("keep_ratio")
        return elapsed, 1.0 if keep is None else keep.mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense", required=True, help="the dense checkpoint the recipes start from")
    parser.add_argument("--recipe", action="append", default=[], help="NAME=CHECKPOINT, NAME one of " + str(RECIPES))
    parser.add_argument("--dataset", choices=sorted(TEXTS), default="sst2")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="distinct batches, each timed in every repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--budget_range",
        nargs=2,
        type=float,
        default=[0.2, 1.0],
        metavar=("LOW", "HIGH"),
        help="topk_distillation_any: the range every example's budget is drawn from (uniform, seeded per batch)",
    )
    parser.add_argument("--output", default=None, help="write the table (markdown) and figures (json) here")
    args = parser.parse_args()
    logging.set_verbosity_error()

    recipes = [entry.split("=", 1) for entry in args.recipe]
    for name, _ in recipes:
        if name not in RECIPES:
            parser.error(f"unknown recipe {name!r}: use one of {RECIPES}")
    tokenizer = AutoTokenizer.from_pretrained(args.dense)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.dense, retention_enabled=False).eval()
    steps = [Step("dense", args.dense, None), *(Step(name, path, teacher) for name, path in recipes)]

    texts, labels = read_texts(args.dataset, args.batch_size * args.batches)
    batches = []
    for i in range(0, len(texts), args.batch_size):
        batch = tokenizer(
            texts[i : i + args.batch_size],
            truncation=True,
            max_length=args.max_length,
            padding=True,
            return_tensors="pt",
        )
        batch["labels"] = torch.tensor(labels[i : i + args.batch_size])
        batches.append(batch)

    low, high = args.budget_range
    draws = [  # the any-budget recipe's per-example budgets: uniform in the range, as after RetentionTrainer's warm-up
        (low + (high - low) * torch.rand(len(batch["labels"]), generator=torch.Generator().manual_seed(i))).tolist()
        for i, batch in enumerate(batches)
    ]
    for index, batch in enumerate(batches[:2]):  # warm-up
        for step in steps:
            step(batch, index, draws[index])
    times: dict[str, list[float]] = {step.name: [] for step in steps}
    keeps: dict[str, list[float]] = {step.name: [] for step in steps}
    for _ in range(args.repeats):
        for index, batch in enumerate(batches):
            for step in steps:
                elapsed, keep = step(batch, index, draws[index])
                times[step.name].append(elapsed)
                keeps[step.name].append(keep)

    dense = statistics.median(times["dense"])
    header = (
        f"{args.dataset}, max length {args.max_length}, batch {args.batch_size}, {args.batches} batches x "
        f"{args.repeats} repeats interleaved (medians), {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    rows = [
        "| recipe | checkpoint | realised keep ratio in the step | step time (ms) | vs dense step |",
        "| --- | --- | --- | --- | --- |",
    ]
    figures = {}
    for step, path in zip(steps, [args.dense, *(path for _, path in recipes)], strict=True):
        median = statistics.median(times[step.name])
        keep = statistics.fmean(keeps[step.name])
        figures[step.name] = {"checkpoint": path, "step_ms": median * 1000, "ratio": median / dense, "keep": keep}
        rows.append(f"| {step.name} | `{path}` | {keep:.3f} | {median * 1000:.1f} | {median / dense:.2f}x |")
    table = "\n".join([header, "", *rows])
    print(table)
    if args.output:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        command = "python examples/benchmark_training.py " + " ".join(
            [f"--dense {args.dense}", *(f"--recipe {entry}" for entry in args.recipe)]
            + [f"--dataset {args.dataset} --max_length {args.max_length} --batch_size {args.batch_size}"]
            + [f"--batches {args.batches} --repeats {args.repeats} --output {args.output}"]
            + ([f"--budget_range {low} {high}"] if any(name == "topk_distillation_any" for name, _ in recipes) else [])
        )
        (output / "training_cost.md").write_text(f"Command: `{command}`\n\n{table}\n")
        (output / "training_cost.json").write_text(json.dumps({"setup": header, "recipes": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
