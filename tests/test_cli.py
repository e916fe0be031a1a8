"""The ``retention-hf`` command line: every subcommand on tiny models, with its error paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from retention_hf import RetentionBertForQuestionAnswering, RetentionBertForSequenceClassification
from retention_hf.baselines import BASELINES
from retention_hf.cli import main

from families import save_tiny_text_model
from hub_server import HubServer


@pytest.fixture(scope="module")
def vanilla(tmp_path_factory) -> Path:
    """A stock (non-retention) tiny BERT classifier with a real tokenizer."""
    path = tmp_path_factory.mktemp("vanilla")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37
    )
    BertForSequenceClassification(config).save_pretrained(path)
    retention = save_tiny_text_model(tmp_path_factory.mktemp("tok"), RetentionBertForSequenceClassification)
    AutoTokenizer.from_pretrained(retention).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``retention-hf train`` on a tiny model and 32 SST-2 sentences."""
    start = save_tiny_text_model(tmp_path_factory.mktemp("start"), RetentionBertForSequenceClassification)
    output = tmp_path_factory.mktemp("trained")
    code = main(
        [
            "train",
            f"--model_name_or_path={start}",
            "--dataset=sst2",
            "--max_train_samples=32",
            "--max_eval_samples=16",
            "--max_steps=2",
            "--per_device_train_batch_size=8",
            "--retention_ratio=0.5",
            "--report_to=none",
            "--save_strategy=no",
            "--logging_steps=1",
            f"--output_dir={output}",
        ]
    )
    assert code == 0
    return output


def error_of(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 and return its single stderr line."""
    capsys.readouterr()  # drop what earlier calls printed
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse errors
        code = exit.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def console_script() -> list[str]:
    """The installed ``retention-hf`` entry point (next to this interpreter)."""
    script = Path(sys.executable).with_name("retention-hf")
    return [str(script)] if script.exists() else [shutil.which("retention-hf") or "retention-hf"]


def test_console_script_help_lists_every_subcommand():
    result = subprocess.run([*console_script(), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("train", "evaluate", "benchmark", "convert", "export", "card", "push", "summarize", "visualize"):
        assert name in result.stdout


@pytest.mark.parametrize("command", ["convert", "export", "card", "push", "summarize", "visualize"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    assert f"usage: retention-hf {command}" in capsys.readouterr().out


def test_train_help_shows_the_recipe_arguments(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "--retention_ratio" in out and "--dual_step_size" in out and "--dataset" in out
    assert "--text_pair_column" in out and "--doc_stride" not in out


@pytest.mark.parametrize(
    ("task", "own", "other"),
    [
        ("question-answering", "--doc_stride", "--text_pair_column"),
        ("token-classification", "--show_examples", "--doc_stride"),
        ("summarization", "--max_test_samples", "--text_pair_column"),
    ],
)
def test_each_task_help_lists_its_own_arguments(task, own, other, capsys):
    for argv in (["train", "--task", task, "--help"], ["train", f"--task={task}", "--help"]):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 0
        out = capsys.readouterr().out
        assert own in out and "--retention_ratio" in out and other not in out


def test_unknown_task_is_named(capsys):
    message = error_of(capsys, ["train", "--task", "ner", "--output_dir=/tmp/unused"])
    assert message.startswith("retention-hf train: error: unknown --task 'ner': use one of ['classification', ")


def test_convert_vanilla_checkpoint(vanilla, tmp_path, capsys):
    output = tmp_path / "converted"
    assert main(["convert", str(vanilla), str(output), "--budget", "0.3", "--remote_code"]) == 0
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "retention-bert"
    assert config["retention_ratio"] == 0.3
    assert config["architectures"] == ["RetentionBertForSequenceClassification"]
    assert "AutoModelForSequenceClassification" in config["auto_map"]
    assert (output / "modeling_retention_bert.py").is_file() and (output / "tokenizer.json").is_file()
    assert ModelCard.load(output / "README.md").data.pipeline_tag == "text-classification"

    converted = RetentionBertForSequenceClassification.from_pretrained(output).eval()
    stock = BertForSequenceClassification.from_pretrained(vanilla).eval()
    inputs = dict(AutoTokenizer.from_pretrained(output)(["a fine film", "dull"], padding=True, return_tensors="pt"))
    converted.config.retention_enabled = False
    with torch.no_grad():
        torch.testing.assert_close(converted(**inputs).logits, stock(**inputs).logits, atol=1e-5, rtol=0)
    converted.config.retention_enabled = True
    with torch.no_grad():
        kept = converted(**inputs).kept_counts
    assert kept.shape == (2, 3)


def test_convert_errors(vanilla, tmp_path, capsys):
    assert "checkpoint not found: /no/such/dir" in error_of(
        capsys, ["convert", "/no/such/dir", str(tmp_path / "x"), "--budget", "0.5"]
    )
    assert "budget must be in (0, 1], got 1.5" in error_of(
        capsys, ["convert", str(vanilla), str(tmp_path / "x"), "--budget", "1.5"]
    )
    assert "budget must be a number in (0, 1], got 'half'" in error_of(
        capsys, ["convert", str(vanilla), str(tmp_path / "x"), "--budget", "half"]
    )
    converted = tmp_path / "converted"
    main(["convert", str(vanilla), str(converted), "--budget", "0.5"])
    assert "already a retention checkpoint" in error_of(
        capsys, ["convert", str(converted), str(tmp_path / "y"), "--budget", "0.5"]
    )


def test_train_writes_results_and_card(trained):
    results = json.loads((trained / "eval_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    card = ModelCard.load(trained / "README.md")
    assert card.data.datasets == ["stanfordnlp/sst2"]
    [result] = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("accuracy", results["eval_accuracy"])
    assert f"**{results['eval_speedup']:.2f}x**" in card.text


def test_train_and_evaluate_errors(trained, capsys):
    assert "unknown dataset 'nope'" in error_of(capsys, ["train", "--dataset=nope", "--output_dir=/tmp/unused"])
    assert "evaluate needs --model_name_or_path" in error_of(capsys, ["evaluate", "--output_dir=/tmp/unused"])
    assert "checkpoint not found: /no/such/ckpt" in error_of(
        capsys, ["evaluate", "--model_name_or_path", "/no/such/ckpt", "--output_dir=/tmp/unused"]
    )


def test_evaluate_a_checkpoint(trained, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            f"--model_name_or_path={trained}",
            "--dataset=sst2",
            "--max_train_samples=32",
            "--max_eval_samples=16",
            "--report_to=none",
            f"--output_dir={tmp_path}",
        ]
    )
    assert code == 0
    printed = json.loads((tmp_path / "eval_results.json").read_text())
    trained_results = json.loads((trained / "eval_results.json").read_text())
    assert "train_runtime" not in printed  # no training happened
    assert printed["eval_accuracy"] == trained_results["eval_accuracy"]  # the same weights, the same eval data


def test_card_rewrites_readme_from_results(trained, tmp_path, capsys):
    assert main(["card", str(trained), "--output", str(tmp_path), "--model_name", "me/model", "--license", "mit"]) == 0
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.model_name == "me/model" and card.data.license == "mit"
    assert card.data.datasets == ["stanfordnlp/sst2"]  # kept from the card the training run wrote
    results = json.loads((trained / "eval_results.json").read_text())
    [result] = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("accuracy", results["eval_accuracy"])
    assert f"| accuracy | {results['eval_accuracy']:.4f} |" in card.text
    assert "checkpoint not found: /no/ckpt" in error_of(capsys, ["card", "/no/ckpt"])


def test_push_uploads_the_checkpoint_with_its_card(trained, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(trained, checkpoint)
    assert main(["card", str(checkpoint), "--speedup", "2.25", "--speedup_setup", "a test machine"]) == 0
    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HUB_OFFLINE": "0"}
        result = subprocess.run(
            [*console_script(), "push", str(checkpoint), "me/sst2-retention"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        missing = subprocess.run(
            [*console_script(), "push", "/no/ckpt", "me/x"], capture_output=True, text=True, env=env, timeout=300
        )
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.commits["me/sst2-retention"]
    assert set(files) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_retention.py",
        "gates.py",
        "modeling_retention.py",
        "modeling_retention_bert.py",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    (tmp_path / "README.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    results = json.loads((trained / "eval_results.json").read_text())
    assert card.data.model_name == "me/sst2-retention"
    assert card.data.eval_results[0].metric_value == results["eval_accuracy"]
    assert 'from_pretrained("me/sst2-retention", trust_remote_code=True)' in card.text
    assert "**2.25x** (a test machine)" in card.text  # what `card` stated survives the push
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "retention-hf push: error: checkpoint not found: /no/ckpt (no config.json) (--debug shows the traceback)"
    )


def test_visualize_token_trace_and_run_plots(trained, tmp_path, capsys):
    path = save_tiny_text_model(tmp_path / "qa", RetentionBertForQuestionAnswering, retention_ratio=0.5)
    code = main(
        [
            "visualize",
            str(path),
            "--text",
            "Who wrote it?",
            "--text_pair",
            "It was written by a person.",
            "--run",
            str(trained),
            "--runs",
            str(trained),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    out = tmp_path / "out"
    assert '<span class="token"' in (out / "retention.html").read_text()
    assert Image.open(out / "retention.png").size == (1200, 400)
    for name in ("layer_retention.png", "budget_curve.png"):
        assert Image.open(out / name).format == "PNG"


def test_visualize_errors(tmp_path, capsys):
    assert "nothing to draw" in error_of(capsys, ["visualize", "--output", str(tmp_path)])
    assert "checkpoint not found: /no/ckpt" in error_of(capsys, ["visualize", "/no/ckpt", "--text", "hi"])
    assert "no trainer_state.json" in error_of(capsys, ["visualize", "--run", str(tmp_path), "--output", str(tmp_path)])
    assert "budget must be in (0, 1], got 0.0" in error_of(capsys, ["visualize", "/x", "--budget", "0"])


def test_benchmark_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["benchmark", "--help"])
    assert exit.value.code == 0
    assert "--dense" in capsys.readouterr().out
    message = error_of(capsys, ["benchmark", "--dataset=sst2", "--dense=/no/dense", "--learned", "0.5=/no/r50"])
    assert message.startswith("retention-hf benchmark: error: the following arguments are required: --output")
    argv = ["benchmark", "--dataset=sst2", "--dense=/no/dense", "--learned", "0.5=/no/r50", f"--output={tmp_path}"]
    message = error_of(capsys, argv)
    assert message.startswith("retention-hf benchmark: error:") and "/no/dense" in message


def test_benchmark_runs_on_tiny_checkpoints(tmp_path, capsys):
    dense = save_tiny_text_model(tmp_path / "dense", RetentionBertForSequenceClassification)
    learned = save_tiny_text_model(
        tmp_path / "r50", RetentionBertForSequenceClassification, retention_learned_schedule=[0.8, 0.5, 0.2]
    )
    argv = ["benchmark", "--dataset=sst2", f"--dense={dense}", "--learned", f"0.5={learned}", "--max_length=32"]
    argv += ["--batch_size=8", "--repeats=1", "--limit=16", "--skip", "memory", f"--output={tmp_path / 'out'}"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["speed"]) >= {"dense", "rho=0.5"} and results["examples"] == 16
    assert set(results["accuracy"]["rho=0.5"]) == {"learned", *BASELINES}
    assert (tmp_path / "out" / "results.md").is_file()
