"""Model cards and Hub uploads: card contents round-trip through ModelCard.load; pushes commit exactly the
files a user needs (checked at the HTTP boundary against a local Hub stand-in, tests/hub_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import AutoTokenizer

from retention_hf import (
    RetentionBertConfig,
    RetentionBertForQuestionAnswering,
    RetentionBertForSequenceClassification,
    RetentionBertModel,
    RetentionTrainer,
    RetentionTrainingArguments,
    __version__,
)
from retention_hf.model_card import RetentionModelCardData, card_data_from_checkpoint, render_model_card

from families import save_tiny_text_model
from hub_server import HubServer
from test_checkpoints import assert_loads_without_retention_hf


CODE_FILES = {"configuration_retention.py", "gates.py", "modeling_retention.py", "modeling_retention_bert.py"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    return save_tiny_text_model(
        tmp_path_factory.mktemp("tiny-cls"), RetentionBertForSequenceClassification, retention_ratio=0.4
    )


def card_data() -> RetentionModelCardData:
    return RetentionModelCardData(
        model_name="someone/tiny-retention",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        datasets=["stanfordnlp/sst2"],
        eval_split="validation",
        metrics={"accuracy": 0.8125},
        keep_ratio=0.412,
        speedup=2.5,
        speedup_setup="cpu, 2 threads",
        license="apache-2.0",
    )


def test_card_metadata_and_model_index_round_trip(tiny_classifier, tmp_path):
    model = RetentionBertForSequenceClassification.from_pretrained(tiny_classifier)
    model.config.retention_learned_schedule = [0.9, 0.4, 0.2]
    model.model_card_data = card_data()
    model.save_pretrained(tmp_path)

    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.datasets == ["stanfordnlp/sst2"]
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0"
    assert {"retention-hf", "adaptive-retention"} <= set(card.data.tags)
    [result] = card.data.eval_results
    assert (result.task_type, result.dataset_type, result.dataset_split) == (
        "text-classification",
        "stanfordnlp/sst2",
        "validation",
    )
    assert (result.metric_type, result.metric_value) == ("accuracy", 0.8125)
    assert card.data.model_name == "someone/tiny-retention"

    text = card.text
    assert "Budget rho: **0.4**" in text
    assert "Realised on the evaluation data: **0.412**" in text
    schedule = model.config.retention_layer_ratios()
    for layer, (scheduled, learned) in enumerate(zip(schedule, [0.9, 0.4, 0.2], strict=True)):
        assert f"| {layer} | {scheduled:.3f} | {learned:.3f} |" in text
    assert "**2.50x** (cpu, 2 threads)" in text
    assert f"retention_hf](https://pypi.org/project/retention-hf/) {__version__}" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("someone/tiny-retention")' in text
    assert "trust_remote_code=True" not in text  # this checkpoint has no auto_map / code files
    assert "@inproceedings{rafiuddin-khan-2025-learning" in text and "2510.08798" in text


def test_card_names_the_head_and_omits_local_base_models(tmp_path):
    path = save_tiny_text_model(tmp_path / "qa", RetentionBertForQuestionAnswering)
    model = RetentionBertForQuestionAnswering.from_pretrained(path)
    card = render_model_card(model, RetentionModelCardData(base_model=str(path)))
    assert card.data.pipeline_tag == "question-answering"
    assert card.data.base_model is None  # a local directory is not a Hub id
    assert card.data.eval_results is None
    assert "AutoModelForQuestionAnswering" in card.text


def test_saving_a_loaded_model_keeps_its_richer_card(tiny_classifier, tmp_path):
    model = RetentionBertForSequenceClassification.from_pretrained(tiny_classifier)
    model.model_card_data = card_data()
    model.save_pretrained(tmp_path)
    written = (tmp_path / "README.md").read_text()
    RetentionBertForSequenceClassification.from_pretrained(tmp_path).save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == written


def test_card_data_takes_quality_metrics_only():
    data = RetentionModelCardData().update_from_metrics(
        {
            "eval_accuracy": 0.9,
            "eval_keep_ratio": 0.3,
            "eval_speedup": 2.8,
            "eval_runtime": 3.0,
            "eval_samples_per_second": 100.0,
            "eval_loss": 0.4,
            "eval_accuracy_retention_off": 0.92,
            "train_loss": 0.1,
        }
    )
    assert data.metrics == {"accuracy": 0.9}
    assert (data.keep_ratio, data.speedup) == (0.3, 2.8)
    named = RetentionModelCardData().update_from_metrics({"eval_f1": 80.0, "eval_windows": 12}, quality=("f1",))
    assert named.metrics == {"f1": 80.0}


def test_card_data_from_checkpoint_rejects_unknown_fields(tmp_path):
    (tmp_path / "eval_results.json").write_text(json.dumps({"eval_accuracy": 0.7, "eval_speedup": 1.9}))
    data = card_data_from_checkpoint(tmp_path, base_model="org/base")
    assert (data.metrics, data.speedup, data.base_model) == ({"accuracy": 0.7}, 1.9, "org/base")
    with pytest.raises(TypeError, match=r"unknown card fields \['budget'\]"):
        card_data_from_checkpoint(tmp_path, budget=0.5)


def tiny_dataset(tokenizer, size: int = 8) -> Dataset:
    texts = ["a fine film", "a dull and tiresome film"] * (size // 2)
    encoded = tokenizer(texts)
    return Dataset.from_dict({**encoded, "labels": [1, 0] * (size // 2)})


def test_trainer_writes_card_with_learned_schedule_and_eval_metrics_on_save(tiny_classifier, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier)
    model = RetentionBertForSequenceClassification.from_pretrained(tiny_classifier)
    data = tiny_dataset(tokenizer)
    args = RetentionTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        selection_training="hard_concrete",  # the recipe that learns a schedule for the card to state
    )
    trainer = RetentionTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
        compute_metrics=lambda prediction: {
            "accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())
        },
    )
    trainer.train()
    metrics = trainer.evaluate()
    model.config.retention_enabled = False  # a dense reference evaluation does not describe the model
    assert trainer.evaluate()["eval_keep_ratio"] == 1.0
    model.config.retention_enabled = True
    trainer.model_card_data.datasets.append("stanfordnlp/sst2")
    trainer.save_model()

    card = ModelCard.load(tmp_path / "README.md")
    [result] = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("accuracy", metrics["eval_accuracy"])
    assert card.data.base_model is None  # trained from a local directory
    assert str(tiny_classifier) not in card.text
    schedule = model.config.retention_learned_schedule
    assert schedule is not None and len(schedule) == 3
    assert f"| 0 | {model.config.retention_layer_ratios()[0]:.3f} | {schedule[0]:.3f} |" in card.text
    assert f"Realised on the evaluation data: **{metrics['eval_keep_ratio']:.3f}**" in card.text


PUSH_SCRIPT = textwrap.dedent(
    """
    import sys
    import retention_hf
    from transformers import AutoTokenizer
    from retention_hf import RetentionBertForSequenceClassification, RetentionTrainer, RetentionTrainingArguments

    source, output = sys.argv[1], sys.argv[2]
    model = RetentionBertForSequenceClassification.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.push_to_hub("someone/pushed-model", processing_class=tokenizer, tags=["tiny"])
    args = RetentionTrainingArguments(output_dir=output, hub_model_id="someone/pushed-trainer", report_to="none")
    RetentionTrainer(model=model, args=args, processing_class=tokenizer).push_to_hub()
    model.save_pretrained(output + "-saved", push_to_hub=True, repo_id="someone/pushed-by-save")
    # the pushes registered for trust_remote_code only for their own saves
    assert model._auto_class is None and getattr(model.config, "auto_map", None) is None
    """
)


def test_push_to_hub_commits_weights_config_code_tokenizer_and_card(tiny_classifier, tmp_path):
    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HUB_OFFLINE": "0"}
        result = subprocess.run(
            [sys.executable, "-c", PUSH_SCRIPT, str(tiny_classifier), str(tmp_path / "trainer-output")],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(hub.commits) == ["someone/pushed-by-save", "someone/pushed-model", "someone/pushed-trainer"]

    expected = {"README.md", "config.json", "model.safetensors"} | CODE_FILES | TOKENIZER_FILES
    model_files = hub.commits["someone/pushed-model"]
    assert set(model_files) == expected
    # the trainer uploads its output_dir: the same files plus its training arguments
    assert set(hub.commits["someone/pushed-trainer"]) == expected | {"training_args.bin"}
    assert set(hub.commits["someone/pushed-by-save"]) == expected - TOKENIZER_FILES

    for repo, files in hub.commits.items():
        config = json.loads(files["config.json"])
        assert config["auto_map"]["AutoModelForSequenceClassification"] == (
            "modeling_retention_bert.RetentionBertForSequenceClassification"
        )
        card_path = tmp_path / f"{repo.replace('/', '--')}.md"
        card_path.write_bytes(files["README.md"])
        card = ModelCard.load(card_path)
        assert card.data.model_name == repo  # our card, not transformers' default one
        assert "adaptive-retention" in card.data.tags
        assert ("tiny" in card.data.tags) == (repo == "someone/pushed-model")
        assert f'from_pretrained("{repo}", trust_remote_code=True)' in card.text

    # load elsewhere: the committed files alone, through trust_remote_code, without retention_hf
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name, content in model_files.items():
        (downloaded / name).write_bytes(content)
    model = RetentionBertForSequenceClassification.from_pretrained(tiny_classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(downloaded)
    inputs = dict(tokenizer(["a fine film indeed", "dull"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        outputs = model(**inputs)
    assert_loads_without_retention_hf(downloaded, inputs, outputs, RetentionBertConfig, RetentionBertModel)
