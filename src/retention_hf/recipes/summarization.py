#!/usr/bin/env python
"""Extractive summarisation of long documents (SumPubMed) with a sentence-scoring retention encoder.

BertSum-style: every sentence is led by a marker token, the document is read in sentence-aligned windows
of at most ``--max_length`` tokens (``retention_hf.summarization``), and the model scores each sentence at
its marker. The markers are protected, so every sentence is scored at any budget while the words compete
for it. Training labels are the greedy ROUGE oracle against the abstract.

The summary is the top-k sentences in document order, with k chosen on the validation split by ROUGE-1.
On the test split the script reports ROUGE-1/2/L (bundled offline ``rouge`` module) for the model, the same
weights with retention off, lead-3, lead-k (the first k sentences, at the model's k) and the oracle, and
documents per second with retention on and off.

With neither ``--do_train`` nor ``--do_eval`` it trains, then evaluates; either flag alone runs only that phase.

``--dataset sumpubmed`` reads ``../shared/data/summarization/sumpubmed``; ``--dataset sumpubmed-tiny`` reads
the subset shipped in ``data/sumpubmed`` (see data/README.md).

Examples::

    retention-hf train --task summarization --retention false --max_train_samples 120 --max_validation_samples 100 \\
        --learning_rate 5e-5 --per_device_train_batch_size 16 --warmup_steps 0.1 --output_dir runs/sum-dense
    retention-hf train --task summarization --model_name_or_path runs/sum-dense --retention_ratio 0.3 \\
        --max_train_samples 120 --max_validation_samples 100 --learning_rate 3e-5 --per_device_train_batch_size 16 \\
        --warmup_steps 0.1 --selection_training hard_concrete --topk_finetune_steps 0.4 \\
        --exact_sparse_training true --topk_straight_through false --retention_schedule learned \\
        --retention_budget_gradient full --dual_step_size 2 --do_train true --output_dir runs/sum-r30
    retention-hf train --task summarization --model_name_or_path runs/sum-r30 --do_eval true \\
        --max_validation_samples 100 --max_timing_samples 100 --output_dir runs/sum-eval-r30
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import AutoTokenizer

from .. import RetentionBertForSentenceScoring, RetentionRobertaForSentenceScoring, RetentionTrainer
from ..metrics import load_metric
from ..summarization import (
    SentenceScoringCollator,
    document_scores,
    document_sentences,
    prepare_features,
    top_sentences,
)
from .steps import (
    REPO,
    SHARED,
    closes_process_group,
    first_examples,
    load_retention_model,
    parse_arguments,
    selected_phases,
    train_and_save,
    write_results,
)


SOURCES = {
    "sumpubmed": (SHARED / "summarization" / "sumpubmed", ".jsonl.gz"),
    "sumpubmed-tiny": (REPO / "data" / "sumpubmed", ".jsonl"),
}


@dataclass
class SummarizationDataArguments:
    dataset: str = field(default="sumpubmed", metadata={"help": f"One of {sorted(SOURCES)}."})
    max_length: int = field(default=512, metadata={"help": "Tokens per window."})
    max_sentence_tokens: int = field(default=128, metadata={"help": "Longer sentences are cut to this length."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N train documents."})
    max_validation_samples: int | None = field(default=None, metadata={"help": "First N validation documents."})
    max_test_samples: int | None = field(default=None, metadata={"help": "First N test documents."})
    max_timing_samples: int | None = field(
        default=None,
        metadata={
            "help": "Measure the speed-up, and score the weights with retention off, on the first N test documents "
            "(default: all of them). The ROUGE of the model itself always covers every test document."
        },
    )
    top_k: str = field(
        default=",".join(str(k) for k in range(1, 21)),
        metadata={"help": "Summary sizes (sentences) to choose from on validation, comma-separated."},
    )


def load_split(dataset: str, split: str, limit: int | None) -> Dataset:
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {sorted(SOURCES)}")
    folder, suffix = SOURCES[dataset]
    path = folder / f"{split}{suffix}"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (see data/README.md)")
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") if suffix.endswith(".gz") else open(path, encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit is not None and len(rows) == limit:
                break
    return Dataset.from_list([{key: row[key] for key in ("id", "document", "summary")} for row in rows])


def rouge(chosen: dict[str, list[str]], documents: Dataset, rouge_types: list[str] | None = None) -> dict[str, float]:
    """ROUGE of the chosen sentences (one per line) against each document's abstract."""
    return load_metric("rouge").compute(
        predictions=["\n".join(chosen[row["id"]]) for row in documents],
        references=list(documents["summary"]),
        rouge_types=rouge_types,
    )


def score_documents(trainer, features: Dataset) -> tuple[dict[str, dict[int, float]], float, float]:
    """Sentence scores of every document, the seconds the prediction took and the realised keep ratio."""
    start = time.perf_counter()
    output = trainer.predict(features, metric_key_prefix="eval")
    seconds = time.perf_counter() - start
    return document_scores(features, output.predictions[0]), seconds, output.metrics.get("eval_keep_ratio", 1.0)


def summaries(scores: dict[str, dict[int, float]], documents: Dataset, k: int) -> dict[str, list[str]]:
    chosen = {}
    for row in documents:
        sentences = document_sentences(row["document"])
        chosen[row["id"]] = [sentences[index] for index in top_sentences(scores[row["id"]], k)]
    return chosen


@closes_process_group
def main(argv: list[str] | None = None) -> dict[str, object]:
    model_args, data_args, training_args = parse_arguments(SummarizationDataArguments, argv)
    splits = {
        "train": load_split(data_args.dataset, "train", data_args.max_train_samples),
        "validation": load_split(data_args.dataset, "validation", data_args.max_validation_samples),
        "test": load_split(data_args.dataset, "test", data_args.max_test_samples),
    }
    model = load_retention_model(
        model_args, {"bert": RetentionBertForSentenceScoring, "roberta": RetentionRobertaForSentenceScoring}
    )
    tokenizer = AutoTokenizer.from_pretrained(model.config.name_or_path)
    windowing = {
        "tokenizer": tokenizer,
        "max_length": data_args.max_length,
        "max_sentence_tokens": data_args.max_sentence_tokens,
    }
    features = {
        name: split.map(
            prepare_features, fn_kwargs=windowing, batched=True, remove_columns=split.column_names, desc=name
        )
        for name, split in splits.items()
    }
    trainer = RetentionTrainer(
        model=model,
        args=training_args,
        train_dataset=features["train"],
        processing_class=tokenizer,
        data_collator=SentenceScoringCollator(tokenizer),
    )
    results: dict[str, object] = {"test_documents": len(splits["test"]), "test_windows": len(features["test"])}
    do_train, do_eval = selected_phases(training_args)
    if do_train:
        results.update(train_and_save(trainer))
    if not do_eval:
        return results

    candidates = [int(k) for k in data_args.top_k.split(",")]
    validation_scores, _, _ = score_documents(trainer, features["validation"])
    validation = splits["validation"]
    by_k = {k: rouge(summaries(validation_scores, validation, k), validation, ["rouge1"]) for k in candidates}
    k = max(candidates, key=lambda size: (by_k[size]["rouge1"], -size))
    results["top_k"] = k
    results["validation_rouge1_by_k"] = {size: scores["rouge1"] for size, scores in by_k.items()}

    test = splits["test"]
    scores, seconds, keep_ratio = score_documents(trainer, features["test"])
    results.update({f"eval_{name}": value for name, value in rouge(summaries(scores, test, k), test).items()})
    results["eval_keep_ratio"] = keep_ratio
    results["eval_documents_per_second"] = len(test) / seconds
    if model.config.retention_enabled:  # the same weights with retention off: quality and speed reference
        timed, timed_features = test, features["test"]
        if data_args.max_timing_samples is not None and data_args.max_timing_samples < len(test):
            timed, timed_features = first_examples(test, features["test"], data_args.max_timing_samples, "document_id")
            _, seconds, _ = score_documents(trainer, timed_features)  # retention on, the reference's documents
        model.config.retention_enabled = False
        dense_scores, dense_seconds, _ = score_documents(trainer, timed_features)
        model.config.retention_enabled = True
        dense = rouge(summaries(dense_scores, timed, k), timed)
        results.update({f"eval_{name}_retention_off": value for name, value in dense.items()})
        if len(timed) < len(test):  # the model on the same documents, to compare with retention off
            same = rouge(summaries(scores, timed, k), timed)
            results.update({f"eval_{name}_timing_documents": value for name, value in same.items()})
        results["timing_documents"] = len(timed)
        results["eval_documents_per_second_retention_off"] = len(timed) / dense_seconds
        results["eval_speedup"] = dense_seconds / seconds
        results["learned_schedule"] = model.config.retention_learned_schedule

    for name, size in (("lead3", 3), ("leadk", k)):  # lead-3, and lead-k at the model's summary size
        lead = {row["id"]: document_sentences(row["document"])[:size] for row in test}
        results.update({f"{name}_{metric}": value for metric, value in rouge(lead, test).items()})
    picked = document_scores(features["test"], features["test"]["labels"])  # the oracle labels of every sentence
    oracle = {
        row["id"]: [
            sentence for index, sentence in enumerate(document_sentences(row["document"])) if picked[row["id"]][index]
        ]
        for row in test
    }
    results.update({f"oracle_{name}": value for name, value in rouge(oracle, test).items()})
    write_results(trainer, results, "vgupta123/sumpubmed", quality=("rouge1", "rouge2", "rougeL"), split="test")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
