"""Your own classification data: which columns the recipe reads, pairs, string labels, and its errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import AutoConfig, AutoTokenizer

from retention_hf import RetentionBertForSequenceClassification
from retention_hf.recipes.classification import Columns, encode_texts, load_split, main, resolve_columns

from families import save_tiny_text_model


TOPICS = ["sports", "world", "science", "business"]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as .jsonl, .csv or .tsv (by the suffix)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("start"), RetentionBertForSequenceClassification)


def train(start: Path, tmp_path: Path, train_file: Path, validation_file: Path, *extra: str) -> dict:
    return main(
        [
            f"--model_name_or_path={start}",
            f"--train_file={train_file}",
            f"--validation_file={validation_file}",
            "--max_steps=1",
            "--per_device_train_batch_size=4",
            "--retention_ratio=0.5",
            "--report_to=none",
            "--save_strategy=no",
            f"--output_dir={tmp_path / 'out'}",
            *extra,
        ]
    )


# ------------------------------------------------------------------------------------------ column choice
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"text": ["a b"], "label": [0]}, Columns(text="text", label="label")),
        ({"sentence": ["a b"], "labels": [1]}, Columns(text="sentence", label="labels")),
        ({"id": [3], "review": ["a b"], "label": ["pos"]}, Columns(text="review", label="label")),
        ({"sentence1": ["a"], "sentence2": ["b"], "label": [0]}, Columns("sentence1", "label", "sentence2")),
    ],
)
def test_columns_found_by_name_then_by_type(data, expected):
    assert resolve_columns(Dataset.from_dict(data), "f.jsonl") == expected


def test_columns_named_on_the_command_line_win_and_must_exist():
    data = Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "gold": ["entailment"]})
    assert resolve_columns(data, "f.jsonl", "premise", "hypothesis", "gold") == Columns("premise", "gold", "hypothesis")
    with pytest.raises(ValueError, match=r"--text_column 'sentence' is not a column: f.jsonl has columns \['premise'"):
        resolve_columns(data, "f.jsonl", text="sentence", label="gold")


def test_missing_columns_name_the_file_its_columns_and_the_flag():
    with pytest.raises(
        ValueError, match=r"no label column .*: f.csv has columns \['text', 'score'\]; pass --label_column"
    ):
        resolve_columns(Dataset.from_dict({"text": ["a"], "score": [0.5]}), "f.csv")
    with pytest.raises(ValueError, match=r"no text column .*: f.csv has columns \['id', 'label'\]; pass --text_column"):
        resolve_columns(Dataset.from_dict({"id": [1], "label": [0]}), "f.csv")


def test_csv_keeps_quoted_commas_and_tsv_keeps_raw_quotes(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('text,label\n"good, really good",1\n')
    assert load_split(csv_file)["text"] == ["good, really good"]
    tsv_file = tmp_path / "d.tsv"
    tsv_file.write_text('sentence\tlabel\n"quoted" words\t1\n')
    assert load_split(tsv_file)["sentence"] == ['"quoted" words']


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_own_file_with_text_and_four_string_labels(start, tmp_path, suffix):
    rows = [{"text": f"news item number {i} about {TOPICS[i % 4]}", "label": TOPICS[i % 4]} for i in range(12)]
    files = write_rows(tmp_path / f"t{suffix}", rows), write_rows(tmp_path / f"v{suffix}", rows[:8])
    results = train(start, tmp_path, *files, "--ignore_mismatched_sizes")  # the start checkpoint has 2 labels
    config = AutoConfig.from_pretrained(tmp_path / "out")
    assert config.num_labels == 4
    assert config.id2label == {0: "business", 1: "science", 2: "sports", 3: "world"}
    assert config.label2id["world"] == 3
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.datasets is None  # a local file is not a Hub dataset id
    assert card.data.model_name == "out"  # the output directory, not a placeholder
    assert f"on `{tmp_path.name}/t{suffix}` (a local file)." in card.text
    assert card.data.eval_results[0].dataset_name == f"{tmp_path.name}/v{suffix}"  # measured on the validation file
    assert f"On {tmp_path.name}/v{suffix} (validation)" in card.text


def test_a_pair_is_encoded_as_two_segments(start):
    tokenizer = AutoTokenizer.from_pretrained(start)
    batch = {"sentence1": ["a cat sat"], "sentence2": ["an animal sat down"], "label": [0]}
    encoded = encode_texts(tokenizer, batch, Columns("sentence1", "label", "sentence2"), max_length=32)
    assert tokenizer.decode(encoded["input_ids"][0]) == "[CLS] a cat sat [SEP] an animal sat down [SEP]"
    assert encoded["token_type_ids"][0] == [0] * 5 + [1] * 5


def test_own_file_with_a_sentence_pair(start, tmp_path):
    rows = [{"sentence1": f"a cat sat {i}", "sentence2": f"an animal sat {i}", "label": i % 3} for i in range(9)]
    files = write_rows(tmp_path / "t.jsonl", rows), write_rows(tmp_path / "v.jsonl", rows)
    train(start, tmp_path, *files, "--ignore_mismatched_sizes", "--dataset_name=nyu-mll/glue")
    assert AutoConfig.from_pretrained(tmp_path / "out").num_labels == 3
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.datasets == ["nyu-mll/glue"] and "(a local file)" not in card.text


def test_own_file_errors_before_training(start, tmp_path):
    bad = write_rows(tmp_path / "bad.jsonl", [{"id": 1, "label": 0}])
    with pytest.raises(ValueError, match=r"no text column .*bad.jsonl has columns \['id', 'label'\]"):
        train(start, tmp_path, bad, bad)
    good = write_rows(tmp_path / "good.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    other = write_rows(tmp_path / "other.jsonl", [{"text": "a", "label": "neutral"}])
    with pytest.raises(ValueError, match=r"other.jsonl has labels the training data lacks: \['neutral'\]"):
        train(start, tmp_path, good, other)
    with pytest.raises(ValueError, match="give both --train_file and --validation_file"):
        main([f"--train_file={good}", f"--output_dir={tmp_path / 'out'}"])


def test_an_any_budget_run_from_the_command_line(start, tmp_path):
    rows = [{"text": f"news item number {i} about {TOPICS[i % 4]} and more", "label": i % 2} for i in range(12)]
    files = write_rows(tmp_path / "t.jsonl", rows), write_rows(tmp_path / "v.jsonl", rows[:8])
    results = train(start, tmp_path, *files, "--retention_ratio_range", "0.3", "1.0", "--eval_budgets", "1.0", "0.3")
    curve = results["eval_budget_curve"]
    assert list(curve) == ["1.0", "0.3"]
    assert curve["1.0"]["keep_ratio"] == 1.0 and curve["0.3"]["keep_ratio"] == pytest.approx(0.3, abs=0.05)
    assert AutoConfig.from_pretrained(tmp_path / "out").retention_trained_ratio_range == [0.3, 1.0]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Trained for every budget from **0.3** to **1.0**" in card and "## At every budget" in card
    with pytest.raises(ValueError, match=r"retention_ratio must be a number in \(0, 1\], got 1.5"):
        train(start, tmp_path, *files, "--eval_budgets", "0.5", "1.5")
