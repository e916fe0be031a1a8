"""Evaluation data for the benchmarks: texts, labels and the fixed batches every configuration runs on."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[3]  # the repository root in a source checkout (src/ layout)
SHARED = REPO.parent / "shared" / "data"
DATASETS = {
    "sst2": REPO / "data" / "sst2" / "dev.tsv",  # GLUE SST-2 dev, 872 sentences (shipped)
    "imdb": SHARED / "imdb" / "sample_test.jsonl",  # the deterministic 1k IMDb test sample
}
IMDB_TRAIN = SHARED / "imdb" / "train.jsonl.gz"


def write_imdb_train_splits(folder: Path, source: Path = IMDB_TRAIN) -> tuple[Path, Path]:
    """IMDb train reviews ranked by ``sha1(id)`` within each label: ``train_6k.jsonl`` holds ranks 0-2,999 of each
    label (what ``reproduce.sh imdb`` trains on) and ``train_carve_1k.jsonl`` ranks 3,000-3,499 (the held-out
    validation of ``examples/ablation_budget.py --train_set imdb``), labels interleaved by the same hash, from
    ``source`` (IMDb train as jsonl.gz). Files already there are kept."""
    folder = Path(folder)
    train, validation = folder / "train_6k.jsonl", folder / "train_carve_1k.jsonl"
    if train.is_file() and validation.is_file():
        return train, validation
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]

    def rank(row: dict) -> str:
        return hashlib.sha1(row["id"].encode()).hexdigest()

    by_label = [sorted((row for row in rows if row["label"] == label), key=rank) for label in (0, 1)]
    folder.mkdir(parents=True, exist_ok=True)
    for path, first, last in ((train, 0, 3000), (validation, 3000, 3500)):
        chosen = sorted((row for ranked in by_label for row in ranked[first:last]), key=rank)
        path.write_text("".join(json.dumps(row) + "\n" for row in chosen))
    return train, validation


@dataclass
class Examples:
    texts: list[str]
    labels: list[int]


def load_examples(name: str, limit: int | None = None) -> Examples:
    path = DATASETS[name]
    if not path.is_file():
        raise FileNotFoundError(f"{name}: {path} not found (IMDb comes from ../shared/data, see data/README.md)")
    if name == "sst2":
        with path.open(encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        texts, labels = [row[0].strip() for row in rows], [int(row[1]) for row in rows]
    else:
        with path.open(encoding="utf-8") as handle:  # not str.splitlines(): reviews hold U+2028 and U+0085
            rows = [json.loads(line) for line in handle if line.strip()]
        texts, labels = [row["text"] for row in rows], [int(row["label"]) for row in rows]
    return Examples(texts[:limit], labels[:limit])


def make_batches(tokenizer, examples: Examples, batch_size: int, max_length: int) -> list[dict[str, torch.Tensor]]:
    """Dynamically padded batches in dataset order; every configuration runs on exactly these tensors."""
    batches = []
    for start in range(0, len(examples.texts), batch_size):
        encoded = tokenizer(
            examples.texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        encoded["labels"] = torch.tensor(examples.labels[start : start + batch_size])
        batches.append(dict(encoded))
    return batches


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in batch.items() if key != "labels"}
