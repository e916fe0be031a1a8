#!/usr/bin/env python
"""Which of the dense model's predictions a retention checkpoint changes, on a GLUE-style TSV (sentence, label).

Accuracy says how many sentences a checkpoint gets right; two checkpoints with the same accuracy can still
disagree on many. For each checkpoint and budget this prints its accuracy, how many sentences the dense model
got right and it gets wrong ("lost") and the reverse ("gained"), and the accuracy by sentence length (words).
A checkpoint that moved its dense pass away from the dense model shows it in lost + gained at rho 1; whether
those changes help or hurt on a split is the balance of the two.

``--alphas`` also scores each checkpoint with its weights moved back toward the dense model's,
``dense + alpha * (checkpoint - dense)`` for every tensor but the gates' (which the dense model never trained),
as in WiSE-FT and model soups: alpha 1 is the checkpoint, alpha 0 the dense model's weights with its gates. It asks
whether the change training made to the dense pass can be partly undone in weight space.

    python examples/flips_vs_dense.py --dense runs/bench-sst2/dense --validation_file ../shared/data/sst2/dev.tsv \\
        --checkpoints runs/bench-sst2/any --budgets 1.0 0.7 0.5 [--alphas 0.7 0.85 1.0]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from transformers import AutoTokenizer

from retention_hf import RetentionBertForSequenceClassification


LENGTH_BUCKETS = ((0, 10), (10, 20), (20, None))  # words: [low, high)


def read_tsv(path: Path) -> tuple[list[str], torch.Tensor]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [row[0] for row in rows], torch.tensor([int(row[1]) for row in rows])


def interpolated(dense: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], alpha: float):
    """``dense + alpha * (trained - dense)`` for every floating-point tensor outside the gates; the gates (and any
    integer buffer) as trained. The two state dicts must hold the same names."""
    if dense.keys() != trained.keys():
        raise ValueError(f"the checkpoints differ in their tensors: {sorted(dense.keys() ^ trained.keys())}")
    return {
        name: value
        if ".gates." in name or not value.is_floating_point()
        else dense[name] + alpha * (value - dense[name])
        for name, value in trained.items()
    }


def correct(model, tokenizer, texts: list[str], labels: torch.Tensor, budget: float, batch_size: int):
    """Whether ``model`` at ``budget`` classifies each sentence right (a bool per sentence)."""
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            predictions.append(model(**batch, retention_ratio=budget).logits.argmax(-1))
    return torch.cat(predictions) == labels


def length_buckets(words: torch.Tensor) -> list[torch.Tensor]:
    """Which sentences fall in each of ``LENGTH_BUCKETS`` (a bool per sentence, one tensor per bucket)."""
    return [(words >= low) & (words < (high if high is not None else words.max() + 1)) for low, high in LENGTH_BUCKETS]


def by_length(right: torch.Tensor, buckets: list[torch.Tensor]) -> list[str]:
    return [f"{right[inside].double().mean().item():.4f}" if inside.any() else "" for inside in buckets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense", required=True, help="the dense checkpoint the others started from")
    parser.add_argument("--validation_file", type=Path, required=True, help="TSV with a header: sentence, label")
    parser.add_argument("--checkpoints", nargs="+", required=True)
    parser.add_argument("--budgets", nargs="+", type=float, default=[1.0])
    parser.add_argument(
        "--alphas", nargs="+", type=float, default=[1.0], help="weights on each checkpoint against the dense model"
    )
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()

    texts, labels = read_tsv(args.validation_file)
    buckets = length_buckets(torch.tensor([len(text.split()) for text in texts]))
    tokenizer = AutoTokenizer.from_pretrained(args.dense)
    dense_model = RetentionBertForSequenceClassification.from_pretrained(args.dense).eval()
    dense = correct(dense_model, tokenizer, texts, labels, 1.0, args.batch_size)
    dense_state = dense_model.state_dict()
    names = [f"{low}-{high - 1 if high else 'max'} words" for low, high in LENGTH_BUCKETS]
    print(
        f"{args.validation_file}: {len(texts)} sentences; by length: "
        + ", ".join(f"{name} {int(inside.sum())}" for name, inside in zip(names, buckets, strict=True))
    )
    print("| checkpoint | alpha | rho | accuracy | lost | gained | " + " | ".join(names) + " |")
    print("| --- " * (6 + len(names)) + "|")
    print(
        f"| {args.dense} (dense) |  | 1.0 | {dense.double().mean().item():.4f} |  |  | "
        + " | ".join(by_length(dense, buckets))
        + " |"
    )
    for checkpoint in args.checkpoints:
        model = RetentionBertForSequenceClassification.from_pretrained(checkpoint).eval()
        trained = {name: value.clone() for name, value in model.state_dict().items()}
        for alpha in args.alphas:
            model.load_state_dict(interpolated(dense_state, trained, alpha))
            for budget in args.budgets:
                right = correct(model, tokenizer, texts, labels, budget, args.batch_size)
                lost, gained = int((dense & ~right).sum()), int((~dense & right).sum())
                print(
                    f"| {checkpoint} | {alpha} | {budget} | {right.double().mean().item():.4f} | {lost} | {gained} | "
                    + " | ".join(by_length(right, buckets))
                    + " |"
                )


if __name__ == "__main__":
    main()
