"""Fine-tune and evaluate a dense or retention encoder for text classification (SST-2, IMDb or your files).

The recipe behind ``examples/run_classification.py`` and ``retention-hf train`` / ``retention-hf evaluate``
(``--task classification``, the default).
It needs the ``examples`` extra (datasets, evaluate, scikit-learn).

In the style of transformers' ``run_glue.py``: model, data and training arguments come from the command
line through ``HfArgumentParser``; training arguments are ``RetentionTrainingArguments``. Data is read
from local files with ``datasets`` (GLUE-style TSV or jsonl) and scored with the bundled offline
``evaluate`` accuracy module.

After training it reports the eval accuracy, the realised keep ratio and the eval throughput against
the same weights with retention switched off, and writes them to ``<output_dir>/eval_results.json``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import load_dataset
from transformers import AutoTokenizer, DataCollatorWithPadding

from .. import RetentionBertForSequenceClassification, RetentionRobertaForSequenceClassification, RetentionTrainer
from ..metrics import load_metric
from .steps import (
    REPO,
    SHARED,
    closes_process_group,
    load_retention_model,
    parse_arguments,
    selected_phases,
    throughput,
    train_and_save,
    write_results,
)


# The Hub dataset each shortcut is a copy or sample of: what the model card names.
HUB_DATASETS = {"sst2": "stanfordnlp/sst2", "sst2-full": "stanfordnlp/sst2", "imdb": "stanfordnlp/imdb"}
DATASETS = {
    # name: (train file, validation file, text column, label column)
    "sst2": (REPO / "data/sst2/train_8k.tsv", REPO / "data/sst2/dev.tsv", "sentence", "label"),
    "sst2-full": (SHARED / "sst2/train.tsv", SHARED / "sst2/dev.tsv", "sentence", "label"),
    "imdb": (SHARED / "imdb/sample_train.jsonl", SHARED / "imdb/sample_test.jsonl", "text", "label"),
}


@dataclass
class DataArguments:
    dataset: str = field(
        default="sst2", metadata={"help": f"One of {sorted(DATASETS)}, or give train/validation files."}
    )
    train_file: str | None = field(default=None, metadata={"help": "A .tsv/.csv/.jsonl training file."})
    validation_file: str | None = field(default=None, metadata={"help": "A .tsv/.csv/.jsonl validation file."})
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Text column. Default: the dataset's; with data files 'sentence1'/'sentence2' (a pair), "
            "'sentence' or 'text', else the first string column that is not the label."
        },
    )
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Second text column of a sentence-pair task (NLI, paraphrase)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Label column. Default: the dataset's; with data files 'label' or 'labels'."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "The training data's name on the model card (a Hub id, for example). Default: the file."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation examples."})
    eval_budgets: list[float] | None = field(
        default=None,
        metadata={
            "help": "Also evaluate the same weights at each of these budgets (for a model trained with "
            "--retention_ratio_range): accuracy and keep ratio per budget in eval_results.json and on the card."
        },
    )


def load_split(path: str | Path):
    """A local .tsv / .csv / .jsonl (or .json) file as a ``datasets.Dataset``.

    TSV files are read verbatim, as GLUE ships them (no quote handling: its sentences hold raw quotes);
    CSV files follow the usual quoting rules.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"data file not found: {path} (the dataset shortcuts read a source checkout's data/ and ../shared; "
            "give --train_file and --validation_file otherwise)"
        )
    if path.endswith(".tsv"):
        return load_dataset("csv", data_files=path, delimiter="\t", quoting=csv.QUOTE_NONE, split="train")
    if path.endswith(".csv"):
        return load_dataset("csv", data_files=path, split="train")
    if path.endswith((".json", ".jsonl")):
        return load_dataset("json", data_files=path, split="train")
    raise ValueError(f"unsupported data file (use .tsv, .csv or .jsonl): {path}")


LABEL_COLUMNS = ("label", "labels")
TEXT_COLUMNS = ("sentence", "text")
PAIR_COLUMNS = ("sentence1", "sentence2")


@dataclass(frozen=True)
class Columns:
    """Which columns of a data file hold the text (and the second text of a pair) and the label."""

    text: str
    label: str
    text_pair: str | None = None


def resolve_columns(
    dataset, path: str | Path, text: str | None = None, text_pair: str | None = None, label: str | None = None
) -> Columns:
    """The text, pair and label columns of a data file, as ``run_glue.py`` users expect.

    Columns named on the command line must exist. Otherwise the label is ``label`` or ``labels``; the text
    is the pair ``sentence1``/``sentence2``, else ``sentence`` or ``text``, else the first string column that
    is not the label. Every failure names the file, the columns it has and the flag to pass.
    """
    columns = list(dataset.column_names)
    where = f"{path} has columns {columns}"
    for flag, name in (("--text_column", text), ("--text_pair_column", text_pair), ("--label_column", label)):
        if name is not None and name not in columns:
            raise ValueError(f"{flag} {name!r} is not a column: {where}")
    if label is None:
        label = next((name for name in LABEL_COLUMNS if name in columns), None)
        if label is None:
            raise ValueError(f"no label column ('label' or 'labels'): {where}; pass --label_column")
    if text is None:
        if all(name in columns for name in PAIR_COLUMNS) and text_pair is None:
            text, text_pair = PAIR_COLUMNS
        else:
            strings = [
                name
                for name, feature in dataset.features.items()
                if getattr(feature, "dtype", None) in ("string", "large_string") and name not in (label, text_pair)
            ]
            text = next((name for name in TEXT_COLUMNS if name in columns), strings[0] if strings else None)
            if text is None:
                raise ValueError(f"no text column (a string column other than the label): {where}; pass --text_column")
    return Columns(text=text, label=label, text_pair=text_pair)


def encode_texts(tokenizer, batch: dict, columns: Columns, max_length: int):
    """Tokenize a batch's text, or its text pair (``[CLS] a [SEP] b [SEP]``), truncated to ``max_length``."""
    texts = [str(text).strip() for text in batch[columns.text]]
    pairs = None if columns.text_pair is None else [str(text).strip() for text in batch[columns.text_pair]]
    return tokenizer(texts, pairs, truncation=True, max_length=max_length)


@closes_process_group
def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_arguments(DataArguments, argv)

    if data_args.train_file or data_args.validation_file:
        if not (data_args.train_file and data_args.validation_file):
            raise ValueError("give both --train_file and --validation_file (or neither, for a --dataset shortcut)")
        train_file, validation_file = data_args.train_file, data_args.validation_file
        text_column = label_column = None
    elif data_args.dataset in DATASETS:
        train_file, validation_file, text_column, label_column = DATASETS[data_args.dataset]
    else:
        raise ValueError(f"unknown dataset {data_args.dataset!r}: use one of {sorted(DATASETS)} or give both files")
    train, validation = load_split(train_file), load_split(validation_file)
    columns = resolve_columns(
        train,
        train_file,
        text=data_args.text_column or text_column,
        text_pair=data_args.text_pair_column,
        label=data_args.label_column or label_column,
    )
    resolve_columns(validation, validation_file, columns.text, columns.text_pair, columns.label)  # present there too
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples is not None:
        validation = validation.select(range(min(data_args.max_eval_samples, len(validation))))
    labels = sorted(set(train[columns.label]))
    unseen = sorted(set(validation[columns.label]) - set(labels), key=str)
    if unseen:
        raise ValueError(
            f"{validation_file} has labels the training data lacks: {unseen[:10]} (training labels: {labels})"
        )
    label_index = {label: index for index, label in enumerate(labels)}

    model = load_retention_model(
        model_args,
        {"bert": RetentionBertForSequenceClassification, "roberta": RetentionRobertaForSequenceClassification},
        labels=[str(label) for label in labels],
    )
    for budget in data_args.eval_budgets or []:  # a bad budget fails now, not after training
        model.config.retention_layer_ratios(budget)
    tokenizer = AutoTokenizer.from_pretrained(model.config.name_or_path)

    def tokenize(batch):
        encoded = encode_texts(tokenizer, batch, columns, data_args.max_seq_length)
        encoded["labels"] = [label_index[label] for label in batch[columns.label]]
        return encoded

    train = train.map(tokenize, batched=True, remove_columns=train.column_names, desc="Tokenizing train")
    validation = validation.map(tokenize, batched=True, remove_columns=validation.column_names, desc="Tokenizing eval")

    accuracy = load_metric("accuracy")

    def compute_metrics(prediction):
        return accuracy.compute(predictions=np.argmax(prediction.predictions, axis=-1), references=prediction.label_ids)

    trainer = RetentionTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    results: dict[str, float] = {}
    do_train, _ = selected_phases(training_args)  # this recipe always evaluates
    if do_train:
        results.update(train_and_save(trainer))

    metrics, speed = throughput(trainer, validation)
    results.update({"eval_accuracy": metrics["eval_accuracy"], "eval_examples_per_second": speed})
    results["eval_keep_ratio"] = metrics.get("eval_keep_ratio", 1.0)
    if model.config.retention_enabled:  # the same weights with retention off: accuracy and speed reference
        model.config.retention_enabled = False
        dense_metrics, dense_speed = throughput(trainer, validation)
        model.config.retention_enabled = True
        results.update(
            {
                "eval_accuracy_retention_off": dense_metrics["eval_accuracy"],
                "eval_examples_per_second_retention_off": dense_speed,
                "eval_speedup": speed / dense_speed,
            }
        )
        results["learned_schedule"] = model.config.retention_learned_schedule
        if data_args.eval_budgets:
            curve = trainer.evaluate_budgets(data_args.eval_budgets, eval_dataset=validation)
            results["eval_budget_curve"] = {
                str(budget): {"accuracy": row["eval_accuracy"], "keep_ratio": row.get("eval_keep_ratio", 1.0)}
                for budget, row in curve.items()
            }
    if data_args.dataset_name or not data_args.train_file:
        write_results(trainer, results, data_args.dataset_name or HUB_DATASETS.get(data_args.dataset))
    else:  # local files, named with their folder; the metrics were measured on the validation file
        trainer.model_card_data.eval_dataset = f"{Path(validation_file).parent.name}/{Path(validation_file).name}"
        write_results(trainer, results, local_dataset=f"{Path(train_file).parent.name}/{Path(train_file).name}")
    return results
