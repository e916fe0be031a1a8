#!/usr/bin/env python
"""Training-step time of masked vs exact sparse retention training, measured in one run.

Sparse training gathers out the tokens whose sampled Hard-Concrete gate is exactly 0 (they carry no
gradient), so it computes the masked path's loss and gradients on shorter tensors. Both modes run on the
same batches with the same gate noise, interleaved, and the median forward+backward time is reported.

    python examples/benchmark_training.py --model runs/imdb-r30/checkpoint-final --dataset imdb --max_length 512

``--model`` should be a retention checkpoint trained at its budget (its gates then drop tokens); for a
model with untrained gates, ``--gate_bias`` sets the scorers' output bias to force a given drop rate.
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


REPO = Path(__file__).resolve().parents[1]
TEXTS = {
    "imdb": REPO.parent / "shared/data/imdb/sample_test.jsonl",
    "sst2": REPO / "data/sst2/dev.tsv",
}


def read_texts(dataset: str, count: int) -> list[str]:
    path = TEXTS[dataset]
    if dataset == "imdb":
        return [json.loads(line)["text"] for line in path.read_text().splitlines()[:count]]
    return [line.split("\t")[0].strip() for line in path.read_text().splitlines()[1 : count + 1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="retention checkpoint (or any BERT/RoBERTa checkpoint)")
    parser.add_argument("--dataset", choices=sorted(TEXTS), default="imdb")
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, each timed in every repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gate_bias", type=float, default=None, help="override the scorers' output bias")
    args = parser.parse_args()
    logging.set_verbosity_error()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, retention_enabled=True).train()
    if args.gate_bias is not None:
        with torch.no_grad():
            for gate in model.base_model.encoder.gates.values():
                gate.b.fill_(args.gate_bias)
    texts = read_texts(args.dataset, args.batch_size * args.batches)
    batches = [
        tokenizer(
            texts[i : i + args.batch_size],
            truncation=True,
            max_length=args.max_length,
            padding=True,
            return_tensors="pt",
        )
        for i in range(0, len(texts), args.batch_size)
    ]

    def step(batch, sparse: bool, seed: int) -> tuple[float, float]:
        model.config.retention_sparse_training = sparse
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # the same gate noise in both modes
        start = time.perf_counter()
        outputs = model(**batch, labels=torch.zeros(len(batch["input_ids"]), dtype=torch.long))
        (outputs.loss + outputs.expected_keep_ratio.mean()).backward()
        return time.perf_counter() - start, outputs.keep_ratio.mean().item()

    times = {"masked": [], "sparse": []}
    keep = []
    for index, batch in enumerate(batches):  # warm-up
        step(batch, False, index)
        step(batch, True, index)
    for _ in range(args.repeats):
        for index, batch in enumerate(batches):
            for mode in ("masked", "sparse"):
                elapsed, ratio = step(batch, mode == "sparse", index)
                times[mode].append(elapsed)
            keep.append(ratio)
    masked, sparse = statistics.median(times["masked"]), statistics.median(times["sparse"])
    print(
        f"{args.dataset} max_length {args.max_length} batch {args.batch_size}, {torch.get_num_threads()} threads: "
        f"realised keep ratio in training {statistics.mean(keep):.3f}"
    )
    print(f"masked  {masked * 1000:8.1f} ms per forward+backward (median)")
    print(f"sparse  {sparse * 1000:8.1f} ms per forward+backward (median)")
    print(f"sparse training speed-up: {masked / sparse:.2f}x")


if __name__ == "__main__":
    main()
