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
* the learned scores with one threshold per gate over the whole set, calibrated to the same tokens per layer in
  total: a budget per set instead of per example (easy inputs may drop more, hard ones keep more);
* retention off against the learned selection within each quarter of the sentences by token count: is the
  loss confined to short inputs (where a per-example floor of kept tokens would be a cheap fix) or spread?

    python examples/diagnose_budget.py --checkpoint runs/ablation/hybrid-geometric-r0.3-s0 \\
        --validation_file runs/ablation/data/sst2_train_carve_2k.tsv --output results/ablation/diagnosis_r0.3.json

``--measure`` picks the rows besides retention off and the learned selection (each is one or more passes over
the file; all by default), for example ``--measure dataset_budget`` for the per-set threshold row alone.
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


MEASURES = ("dataset_budget", "baselines", "oracles", "gates", "schedules")
DATASET_BUDGET = "learned scores, one threshold per gate over the set"


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
    """Accuracy, realised keep ratio (example mean) and the tokens each layer processed over the batches;
    ``before(batch)`` runs before each.

    ``hits``, when given, receives one boolean tensor per batch (which examples were right), so a breakdown
    by length reuses this pass instead of running the model again.
    """
    correct = kept = total = 0
    tokens_per_layer = None
    for batch, labels in batches:
        if before is not None:
            before(batch)
        outputs = model(**batch)
        processed = outputs.kept_counts.sum(dim=0)
        tokens_per_layer = processed if tokens_per_layer is None else tokens_per_layer + processed
        right = outputs.logits.argmax(dim=-1) == labels
        if hits is not None:
            hits.append(right)
        correct += right.sum().item()
        kept += outputs.keep_ratio.sum().item()
        total += len(labels)
    return {"accuracy": correct / total, "keep_ratio": kept / total, "tokens_per_layer": tokens_per_layer.tolist()}


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


@contextlib.contextmanager
def shifted_threshold_selection(model, offsets: list[float]) -> Iterator[dict]:
    """Within the block every gate keeps the tokens whose learned score reaches that gate's offset, however many
    that is per example (threshold selection at p >= 0.5 on ``score - offset``); an offset of ``-inf`` keeps every
    token. The yielded dict records, per gate, the scores of the tokens it could drop (``"candidates"``) and how
    many tokens reached it (``"reached"``).

    Threshold selection reads the score as a probability, so a model with the attention prior refuses it; here
    the score is only compared with a calibrated offset, which the prior does not disturb, so the prior's flag is
    lowered for the forward's check and raised again inside each score."""
    encoder = model.base_model.encoder
    config = model.config
    original_score = encoder._score
    prior = config.retention_scorer_attention_prior
    recorded: dict = {"candidates": {index: [] for index in range(len(offsets))}, "reached": [0] * len(offsets)}

    def score(index, hidden_states, alive, query_mask, sentences=None):
        config.retention_scorer_attention_prior = prior
        try:
            scores = original_score(index, hidden_states, alive, query_mask, sentences)
        finally:
            config.retention_scorer_attention_prior = False
        recorded["candidates"][index].append(scores[alive & ~query_mask].float())
        recorded["reached"][index] += int(alive.sum())
        return scores - offsets[index]

    saved = config.retention_inference_selection, config.retention_threshold
    config.retention_scorer_attention_prior = False
    config.retention_inference_selection, config.retention_threshold = "threshold", 0.5
    try:
        with mock.patch.object(encoder, "_score", score):
            yield recorded
    finally:
        config.retention_inference_selection, config.retention_threshold = saved
        config.retention_scorer_attention_prior = prior


def score_with_dataset_budget(
    model, batches, tokens_per_layer: list[int], hits: list | None = None
) -> dict[str, float]:
    """The learned scores with one threshold per gate instead of per-example counts.

    Gate by gate, each threshold is set so that the tokens its layer processes over the whole set equal
    ``tokens_per_layer`` (the scheduled top-k's totals): the same compute, spent where the scores are high
    rather than as the same share of every example. Does letting some inputs drop more and others keep more
    help? The thresholds come from the scores alone, never from labels."""
    offsets = [-float("inf")] * len(model.base_model.encoder.layer)
    for index in model.config.retention_gated_layers:
        with shifted_threshold_selection(model, offsets) as recorded:
            score(model, batches)  # this gate and the later ones keep every token: records this gate's candidates
        candidates = torch.cat(recorded["candidates"][index]).sort(descending=True).values
        undroppable = recorded["reached"][index] - len(candidates)  # protected tokens
        wanted = tokens_per_layer[index] - undroppable
        if wanted <= 0:
            offsets[index] = float("inf")
        elif wanted < len(candidates):
            offsets[index] = candidates[wanted - 1].item()
    with shifted_threshold_selection(model, offsets):
        return score(model, batches, hits=hits)


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
    parser.add_argument(
        "--measure",
        nargs="+",
        choices=MEASURES,
        default=list(MEASURES),
        help="Which rows besides retention off and the learned selection (default: all).",
    )
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
    if "dataset_budget" in args.measure:
        hits[DATASET_BUDGET] = []
        results[DATASET_BUDGET] = score_with_dataset_budget(
            model, batches, results["learned selection"]["tokens_per_layer"], hits=hits[DATASET_BUDGET]
        )
    if "baselines" in args.measure:
        with baseline_selection(model, "attention"):
            results["attention received, same counts"] = score(model, batches)
    if "oracles" in args.measure:
        results["oracle: attention rollout of the same weights, same counts"] = score_with_oracle(
            model, batches, rollout_importance
        )
        results["oracle: gradient x input saliency, same counts"] = score_with_oracle(
            model, batches, saliency_importance
        )
    if "gates" in args.measure:
        for layer in model.config.retention_gated_layers:
            previous = 1.0 if layer == 0 else schedule[layer - 1]
            explicit(model, [previous if index == layer else ratio for index, ratio in enumerate(schedule)])
            results[f"no drop at the gate before layer {layer}"] = score(model, batches)
    if "schedules" in args.measure:
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
    print(f"\n| quarter by length | {' | '.join(hits)} |\n| --- |{' --- |' * len(hits)}")
    for span, row in by_length.items():
        print(f"| {span} | {' | '.join(f'{accuracy:.4f}' for accuracy in row.values())} |")
    if args.output:
        payload = {"checkpoint": args.checkpoint, "budget": budget, "schedule": schedule, "rows": results}
        payload["by_length"] = by_length
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
