#!/usr/bin/env python
"""Where a retention classifier loses accuracy under its budget, measured on a validation file.

For one checkpoint, at one budget, every row scores the same sentences with the same weights:

* retention off (the encoder alone);
* the learned selection, as trained;
* the attention a token received in the previous layer (PoWER-BERT / LTP) instead of the learned scores,
  at the same per-layer counts: is the learned ranking the weak part?
* oracle rankings, at the same counts: the attention rollout of the same weights with retention off (how much
  the [CLS] output draws on each token, Abnar and Zuidema 2020; what ``distillation_ranking_weight`` teaches)
  and the gradient x input saliency of the predicted class. They need a dense pass first, so they are not
  selections a fast model can use: if the learned ranking matches them, the accuracy is lost to the budget
  itself rather than to the ranking;
* the learned selection with one gate switched off at a time (that gate drops nothing, so the budget spent
  rises): which layer's drop costs the most?
* the learned scores under other schedules at the same budget (uniform, geometric): does the split of
  the budget over layers matter?
* retention off against the learned selection within each quarter of the sentences by token count: is the
  loss confined to short inputs (where a per-example floor of kept tokens would be a cheap fix) or spread?

    python examples/diagnose_budget.py --checkpoint runs/ablation/hybrid-geometric-r0.3-s0 \\
        --validation_file runs/ablation/data/sst2_train_carve_2k.tsv --output results/ablation/diagnosis_r0.3.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import retention_hf  # noqa: F401  (registers the retention classes with the Auto classes)
from retention_hf import modeling_retention
from retention_hf.baselines import baseline_selection
from retention_hf.distillation import attention_rollout
from retention_hf.gates import gather_slots


class OracleScorer(nn.Module):
    """Scores every current slot with a per-position importance computed before the pass (shared by all gates)."""

    def __init__(self, state: dict):
        super().__init__()
        self.state = state

    def forward(
        self, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.state["scores"]


@contextlib.contextmanager
def oracle_selection(model) -> Iterator[dict]:
    """Within the block the gates rank by ``state["scores"]`` (one ``(batch, seq)`` importance per input token,
    set before each call), which follows the kept slots from gate to gate."""
    state: dict = {"scores": None}
    select = modeling_retention.select_kept_slots

    def select_and_follow(scores, real, protected, keep, width):
        slots, valid = select(scores, real, protected, keep, width)
        state["scores"] = gather_slots(state["scores"], slots)
        return slots, valid

    encoder = model.base_model.encoder
    learned = encoder.gates
    encoder.gates = nn.ModuleDict({key: OracleScorer(state) for key in learned})
    try:
        with mock.patch.object(modeling_retention, "select_kept_slots", select_and_follow):
            yield state
    finally:
        encoder.gates = learned


def dense(model, batch, **kwargs):
    model.config.retention_enabled = False
    try:
        return model(**batch, **kwargs)
    finally:
        model.config.retention_enabled = True


@torch.no_grad()
def rollout_importance(model, batch) -> torch.Tensor:
    attentions = dense(model, batch, output_attentions=True).attentions
    return attention_rollout(attentions, batch["attention_mask"], "first")[0]


@torch.enable_grad()  # scoring runs under no_grad
def saliency_importance(model, batch) -> torch.Tensor:
    """|gradient x input| of the predicted class's logit at the word embeddings, retention off."""
    captured = {}

    def keep_grad(module, args, output):
        output.retain_grad()
        captured["embeddings"] = output

    hook = model.get_input_embeddings().register_forward_hook(keep_grad)
    try:
        logits = dense(model, batch).logits
    finally:
        hook.remove()
    logits.gather(1, logits.argmax(dim=-1, keepdim=True)).sum().backward()
    embeddings = captured["embeddings"]
    model.zero_grad()
    return (embeddings.grad * embeddings).sum(dim=-1).abs().detach()


def score_with_oracle(model, batches, importance: Callable) -> dict[str, float]:
    with oracle_selection(model) as state:
        return score(model, batches, before=lambda batch: state.update(scores=importance(model, batch).float()))


@torch.no_grad()
def score(model, batches, before: Callable | None = None, hits: list | None = None) -> dict[str, float]:
    """Accuracy and realised keep ratio (example mean) over the batches; ``before(batch)`` runs before each.

    ``hits``, when given, receives one boolean tensor per batch (which examples were right), so a breakdown
    by length reuses this pass instead of running the model again.
    """
    correct = kept = total = 0
    for batch, labels in batches:
        if before is not None:
            before(batch)
        outputs = model(**batch)
        right = outputs.logits.argmax(dim=-1) == labels
        if hits is not None:
            hits.append(right)
        correct += right.sum().item()
        kept += outputs.keep_ratio.sum().item()
        total += len(labels)
    return {"accuracy": correct / total, "keep_ratio": kept / total}


def accuracy_by_length(
    lengths: torch.Tensor, hits: dict[str, torch.Tensor], quarters: int = 4
) -> dict[str, dict[str, float]]:
    """Accuracy of each selection (``hits``: name -> per-example correctness) per quarter of the sentences by
    token count (``lengths``), shortest first."""
    order = lengths.argsort(stable=True)
    rows = {}
    for part in order.tensor_split(quarters):
        span = f"{lengths[part].min().item()}-{lengths[part].max().item()} tokens ({len(part)} sentences)"
        rows[span] = {name: right[part].float().mean().item() for name, right in hits.items()}
    return rows


def explicit(model, schedule: list[float]) -> None:
    """Run ``model`` with this per-layer schedule (its mean becomes the budget)."""
    model.config.retention_ratio = sum(schedule) / len(schedule)
    model.config.retention_schedule = schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--validation_file", required=True, help="A TSV with sentence and label columns.")
    parser.add_argument("--budget", type=float, help="Default: the checkpoint's retention_ratio.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output", help="Write the rows as JSON here.")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint, attn_implementation="eager").eval()
    budget = args.budget or model.config.retention_ratio
    with open(args.validation_file) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    batches = []
    for start in range(0, len(rows), args.batch_size):
        chunk = rows[start : start + args.batch_size]
        batch = tokenizer([row["sentence"] for row in chunk], padding=True, truncation=True, return_tensors="pt")
        batches.append((batch, torch.tensor([int(row["label"]) for row in chunk])))

    trained = model.config.retention_schedule
    model.config.retention_ratio = budget
    schedule = model.config.retention_layer_ratios()
    results: dict[str, dict[str, float]] = {}
    hits: dict[str, list[torch.Tensor]] = {"retention off": [], "learned selection": []}
    model.config.retention_enabled = False
    results["retention off"] = score(model, batches, hits=hits["retention off"])
    model.config.retention_enabled = True
    results["learned selection"] = score(model, batches, hits=hits["learned selection"])
    with baseline_selection(model, "attention"):
        results["attention received, same counts"] = score(model, batches)
    results["oracle: attention rollout of the same weights, same counts"] = score_with_oracle(
        model, batches, rollout_importance
    )
    results["oracle: gradient x input saliency, same counts"] = score_with_oracle(model, batches, saliency_importance)
    for layer in model.config.retention_gated_layers:
        previous = 1.0 if layer == 0 else schedule[layer - 1]
        explicit(model, [previous if index == layer else ratio for index, ratio in enumerate(schedule)])
        results[f"no drop at the gate before layer {layer}"] = score(model, batches)
    for name in ("uniform", "geometric"):
        model.config.retention_ratio, model.config.retention_schedule = budget, name
        results[f"{name} schedule"] = score(model, batches)
    model.config.retention_schedule = trained
    lengths = torch.cat([batch["attention_mask"].sum(dim=1) for batch, _ in batches])
    by_length = accuracy_by_length(lengths, {name: torch.cat(right) for name, right in hits.items()})

    print(f"{args.checkpoint} at rho {budget} on {len(rows)} sentences (schedule {[round(r, 3) for r in schedule]})")
    print("| row | accuracy | keep ratio |\n| --- | --- | --- |")
    for name, row in results.items():
        print(f"| {name} | {row['accuracy']:.4f} | {row['keep_ratio']:.3f} |")
    print("\n| quarter by length | retention off | learned selection |\n| --- | --- | --- |")
    for span, row in by_length.items():
        print(f"| {span} | {row['retention off']:.4f} | {row['learned selection']:.4f} |")
    if args.output:
        payload = {"checkpoint": args.checkpoint, "budget": budget, "schedule": schedule, "rows": results}
        payload["by_length"] = by_length
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
