#!/usr/bin/env python
"""Token classification with drop-and-restore: tag the answer tokens of SQuAD contexts.

A small task built from the shared data: the input is ``question [SEP] context`` (one window of
``--max_seq_length`` tokens, the context truncated), and every context token is labelled 1 if it lies
inside the first reference answer, else 0; question and special tokens are not scored (-100).

A retention model drops tokens inside the encoder, then restores every dropped token (with its
representation from the layer where it was dropped) before the classifier, so the logits line up with
the input tokens one for one. The script checks that on every eval batch (``logits.shape[:2] ==
input_ids.shape``), reports token precision / recall / F1 of the answer class with the bundled offline
``f1`` metric, and prints a few eval contexts with the predicted answer tokens in [brackets], mapped
back to characters through the offset mapping. ``--protect_question`` never drops the question, as in QA.

Answer tokens are a small share of the context tokens: a tagger fine-tuned for a few hundred steps from a sentence
encoder learns to predict O everywhere. Start from an encoder that already reads questions against contexts (a
dense QA model), train the dense tagger first, then the retention tagger from it (which distils from it):

    retention-hf train --task token-classification --model_name_or_path runs/qa-dense --retention false \
        --output_dir runs/tag-dense
    retention-hf train --task token-classification --model_name_or_path runs/tag-dense --retention_ratio 0.5 \
        --protect_question --learning_rate 2e-5 --distillation_ranking_weight 3 --distillation_ranking_target answer \
        --output_dir runs/tag-r50
    retention-hf train --task token-classification --dataset squad-tiny --max_steps 10 --output_dir runs/tag-smoke
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer, DataCollatorForTokenClassification

from .. import RetentionBertForTokenClassification, RetentionRobertaForTokenClassification, RetentionTrainer
from ..metrics import load_metric
from ..question_answering import context_offsets
from .squad_data import SOURCES, squad_datasets
from .steps import (
    closes_process_group,
    default_model_path,
    load_retention_model,
    parse_arguments,
    question_protection,
    selected_phases,
    train_and_save,
    write_results,
)


LABELS = {0: "O", 1: "ANSWER"}


@dataclass
class TaggingDataArguments:
    dataset: str = field(default="squad", metadata={"help": f"One of {SOURCES} (see retention_hf.recipes.squad_data)."})
    max_seq_length: int = field(default=256, metadata={"help": "Tokens per input (the context is truncated)."})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Train on N questions, an even hash sample of the train split (smallest SHA-1 of the id)."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N eval questions."})
    protect_question: bool = field(
        default=False, metadata={"help": "Never drop the question tokens: only the context competes for the budget."}
    )
    show_examples: int = field(default=3, metadata={"help": "Print this many tagged eval contexts."})


def tag_answer_tokens(examples: dict[str, list], tokenizer, max_length: int) -> dict[str, list]:
    """One truncated window per question; label 1 on context tokens inside the first answer, 0 elsewhere."""
    encoding = tokenizer(
        [question.lstrip() for question in examples["question"]],
        examples["context"],
        truncation="only_second",
        max_length=max_length,
        return_offsets_mapping=True,
    )
    labels, offsets = [], []
    for row, answers in enumerate(examples["answers"]):
        start = answers["answer_start"][0]
        end = start + len(answers["text"][0])
        row_offsets = context_offsets(encoding, row)
        labels.append([-100 if span is None else int(span[0] < end and span[1] > start) for span in row_offsets])
        offsets.append(row_offsets)
    encoding["labels"] = labels
    encoding["offset_mapping"] = offsets
    return encoding


def predict_tags(trainer, features: Dataset) -> np.ndarray:
    """Argmax tags per input token, after checking that the restored logits line up with the inputs."""
    model = trainer.model.eval()
    collator = trainer.data_collator
    columns = ["input_ids", "token_type_ids", "attention_mask", "labels"]
    tags = []
    with torch.inference_mode():
        for start in range(0, len(features), trainer.args.per_device_eval_batch_size):
            rows = features.select(range(start, min(start + trainer.args.per_device_eval_batch_size, len(features))))
            batch = collator([{k: row[k] for k in columns if k in row} for row in rows])
            batch = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
            logits = model(**batch).logits
            if logits.shape[:2] != batch["input_ids"].shape:
                raise AssertionError(
                    f"logits {tuple(logits.shape)} do not line up with inputs {batch['input_ids'].shape}"
                )
            tags.extend(row[: len(ids)] for row, ids in zip(logits.argmax(-1).tolist(), rows["input_ids"], strict=True))
    return tags


def score(tags, features: Dataset) -> dict[str, float]:
    predictions, references = [], []
    for row_tags, labels in zip(tags, features["labels"], strict=True):
        for tag, label in zip(row_tags, labels, strict=True):
            if label != -100:
                predictions.append(tag)
                references.append(label)
    return load_metric("f1").compute(predictions=predictions, references=references)


def render(context: str, offsets, tags) -> str:
    """The context with every predicted answer token wrapped in [brackets]."""
    spans = [span for span, tag in zip(offsets, tags, strict=True) if span is not None and tag == 1]
    text, cursor = [], 0
    for start, end in spans:
        text += [context[cursor:start], "[", context[start:end], "]"]
        cursor = end
    return "".join(text + [context[cursor:]])


@closes_process_group
def main(argv: list[str] | None = None) -> dict[str, object]:
    model_args, data_args, training_args = parse_arguments(TaggingDataArguments, argv)
    train, examples = squad_datasets(data_args.dataset, data_args.max_train_samples, data_args.max_eval_samples)

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path or default_model_path())
    model = load_retention_model(
        model_args,
        {"bert": RetentionBertForTokenClassification, "roberta": RetentionRobertaForTokenClassification},
        labels=list(LABELS.values()),
        **question_protection(tokenizer, model_args, data_args.protect_question),
    )
    tagging = {"tokenizer": tokenizer, "max_length": data_args.max_seq_length}
    train_features = train.map(
        tag_answer_tokens, fn_kwargs=tagging, batched=True, remove_columns=train.column_names, desc="Tagging"
    ).remove_columns("offset_mapping")
    eval_features = examples.map(tag_answer_tokens, fn_kwargs=tagging, batched=True, desc="Tagging")

    trainer = RetentionTrainer(
        model=model,
        args=training_args,
        train_dataset=train_features,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    results: dict[str, object] = {"eval_questions": len(examples)}
    do_train, _ = selected_phases(training_args)  # this example always evaluates
    if do_train:
        results.update(train_and_save(trainer))

    tags = predict_tags(trainer, eval_features)
    results.update({f"eval_{key}": value for key, value in score(tags, eval_features).items()})
    if model.config.retention_enabled:  # the same weights with retention off
        model.config.retention_enabled = False
        dense = score(predict_tags(trainer, eval_features), eval_features)
        model.config.retention_enabled = True
        results.update({f"eval_{key}_retention_off": value for key, value in dense.items()})
    for row in range(min(data_args.show_examples, len(examples))):
        print(f"Q: {examples[row]['question']}\nA: {examples[row]['answers']['text'][0]}")
        print(render(examples[row]["context"], eval_features[row]["offset_mapping"], tags[row]) + "\n")
    write_results(trainer, results, "rajpurkar/squad", quality=("f1",))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
