"""The README's main job runs end to end (on a few training sentences) and saves a loadable checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from retention_hf import RetentionBertForSequenceClassification

from families import save_tiny_text_model


REPO = Path(__file__).resolve().parents[1]


def test_main_job_smoke(tmp_path):
    output = tmp_path / "main"
    result = subprocess.run(
        [
            sys.executable,
            "examples/main_job.py",
            "--max_train_samples=64",
            "--max_eval_samples=256",
            f"--output_dir={output}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| dense MiniLM-L6 |" in result.stdout and "| retention rho=0.5 |" in result.stdout
    summary = json.loads((output / "summary.json").read_text())
    assert "| model | SST-2 dev accuracy (256) |" in result.stdout
    assert abs(summary["retention"]["eval_keep_ratio"] - 0.5) < 0.03  # measured on the first 256 dev sentences
    assert summary["retention"]["eval_speedup"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(output / "retention").eval()
    assert type(model).__name__ == "RetentionBertForSequenceClassification"
    # the default recipe trains with the decay schedule's top-k and keeps that schedule (nothing learned to store)
    assert model.config.retention_ratio == 0.5 and model.config.retention_schedule == "decay"
    assert model.config.retention_learned_schedule is None
    with torch.no_grad():
        outputs = model(input_ids=torch.tensor([[101, 2023, 3185, 2001, 2307, 102]]))
    assert outputs.logits.shape == (1, 2) and outputs.kept_counts.shape == (1, 6)


def test_the_any_budget_ablation_holds_each_budget_against_the_per_budget_models(tmp_path, monkeypatch):
    """examples/ablation_any_budget.py's table: dense is the reference at rho 1, the per-budget row's mean over its
    seeds at the others, and each run's difference is in points."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from ablation_any_budget import report

    per_budget = {
        "dense": {"eval_accuracy": 0.90},
        "topk-decay-budget-kd-r0.5-s0": {"row": "topk-decay-budget-kd", "budget": 0.5, "eval_accuracy": 0.86},
        "topk-decay-budget-kd-r0.5-s1": {"row": "topk-decay-budget-kd", "budget": 0.5, "eval_accuracy": 0.88},
        "topk-decay-budget-kd-r0.3-s0": {"row": "topk-decay-budget-kd", "budget": 0.3, "eval_accuracy": 0.84},
        "other-row-r0.3-s0": {"row": "other-row", "budget": 0.3, "eval_accuracy": 0.10},
    }
    accuracies = {"1.0": 0.895, "0.7": 0.88, "0.5": 0.866, "0.3": 0.85, "0.2": 0.80}
    curve = {budget: {"accuracy": value, "keep_ratio": float(budget)} for budget, value in accuracies.items()}
    results = {"uniform-s0": {"row": "uniform", "seed": 0, "curve": curve, "train_runtime_s": 120.0}}
    report(results, per_budget, tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "| per-budget reference | 0.9000 (1) |  | 0.8700 (2) | 0.8400 (1) |  | |" in table
    assert "| uniform-s0 | 0.8950 | 0.8800 | 0.8660 | 0.8500 | 0.8000 | 2.0 |" in table
    assert "| uniform-s0 | -0.50 |  | -0.40 | +1.00 |  |" in table
    assert "--train_set 8k --rows uniform --seeds 0" in table


def test_the_grid_chooses_on_the_carve_out_never_on_dev(tmp_path, monkeypatch):
    """examples/grid_any_budget.py: seed means against the per-budget rows (dense at rho 1) on each split, and the
    recipe picked by its worst difference over rho 1, 0.7, 0.5 and 0.3 on the carve-out alone."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from grid_any_budget import choose, report

    def curve(*values):
        return dict(zip(("1.0", "0.7", "0.5", "0.3", "0.2"), values, strict=True))

    def any_run(carve, dev):
        return {
            "carve": {"accuracy": carve[2], "curve": curve(*carve)},
            "dev": {"accuracy": dev[2], "curve": curve(*dev)},
            "train_runtime_s": 60.0,
        }

    def per_budget(carve, dev):
        return {"carve": {"accuracy": carve}, "dev": {"accuracy": dev}, "train_runtime_s": 60.0}

    results = {
        "dense": per_budget(0.90, 0.89),
        "per-budget-r0.7-s0": per_budget(0.88, 0.87),
        "per-budget-r0.5-s0": per_budget(0.86, 0.86),
        "per-budget-r0.5-s1": per_budget(0.88, 0.86),
        "per-budget-r0.3-s0": per_budget(0.82, 0.80),
        # worst carve-out difference -1.0 points (rho 0.3), but the best on dev
        "steady-s0": any_run((0.90, 0.88, 0.87, 0.81, 0.75), (0.95, 0.95, 0.95, 0.95, 0.95)),
        # two seeds whose mean is within 0.5 points everywhere on the carve-out
        "even-s0": any_run((0.90, 0.88, 0.86, 0.82, 0.78), (0.88, 0.86, 0.85, 0.79, 0.74)),
        "even-s1": any_run((0.89, 0.88, 0.87, 0.82, 0.80), (0.88, 0.86, 0.85, 0.79, 0.74)),
        # better still, but over the cost target: never chosen
        "sandwich-2ep-s0": any_run((0.91, 0.90, 0.90, 0.85, 0.80), (0.91, 0.90, 0.90, 0.85, 0.80)),
    }
    assert choose(results) == "even"
    report(results, tmp_path, "preamble line")
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("preamble line\n")
    assert "| per-budget | 2 | 0.9000 | 0.8800 | 0.8700 | 0.8200 |  |" in table  # r0.5: mean of its two seeds
    assert "| even | 2 | 0.8950 (-0.50) | 0.8800 (+0.00) | 0.8650 (-0.50) | 0.8200 (+0.00) | 0.7900 |" in table
    assert "| steady | 1 | 0.9500 (+6.00) |" in table  # the dev split, against dense's 0.89
    assert "| per-budget-r0.5-s1 |  |  | 0.8800 |  |  | 1.0 |" in table
    assert table.rstrip().endswith(": even.")


def test_the_sentence_holdout_drops_the_held_out_sentences_phrases_unless_another_sentence_holds_them(
    tmp_path, monkeypatch
):
    """examples/ablation_budget.py build_sentence_holdout: whole sentences (rows no other row contains) are held
    out, and a training row goes only when it occurs inside a held-out sentence and inside no remaining one."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import ablation_budget

    rows = ["a great movie .", "great movie", "great", "Great ", "a", "movie", "a dull movie .", "dull movie", "dull"]
    labels = [1, 1, 1, 1, 1, 1, 0, 0, 0]
    train = tmp_path / "train.tsv"
    train.write_text(
        "sentence\tlabel\n" + "".join(f"{row}\t{label}\n" for row, label in zip(rows, labels, strict=True))
    )
    monkeypatch.setattr(ablation_budget, "SHARED_TRAIN", train)
    train_path, validation_path = ablation_budget.build_sentence_holdout(tmp_path / "data", size=1)

    def read(path):
        return [line.split("\t") for line in path.read_text().splitlines()]

    held_out = read(validation_path)
    # of the two sentences, the one with the larger sha1 of its lower-cased words
    assert held_out == [["sentence", "label"], ["a great movie .", "1"]]
    # "great" and "Great " (the same words) only occur in the held-out sentence; "a" and "movie" in the kept one too
    assert read(train_path) == [
        ["sentence", "label"],
        *([row, str(label)] for row, label in zip(rows[4:], labels[4:], strict=True)),
    ]


def test_flips_vs_dense_moves_a_checkpoint_back_toward_the_dense_weights(tmp_path, monkeypatch, capsys):
    """examples/flips_vs_dense.py --alphas: every tensor but the gates' is dense + alpha * (checkpoint - dense), so
    alpha 0 at rho 1 answers exactly as the dense model does, and the gates stay as trained."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import flips_vs_dense

    dense_path = save_tiny_text_model(tmp_path / "dense", RetentionBertForSequenceClassification)
    trained = RetentionBertForSequenceClassification.from_pretrained(dense_path)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter))
    trained.save_pretrained(tmp_path / "trained")
    dense_state = RetentionBertForSequenceClassification.from_pretrained(dense_path).state_dict()
    trained_state = trained.state_dict()

    half = flips_vs_dense.interpolated(dense_state, trained_state, 0.5)
    gate = next(name for name in half if ".gates." in name)
    other = "classifier.weight"
    assert torch.equal(half[gate], trained_state[gate])
    torch.testing.assert_close(half[other], (dense_state[other] + trained_state[other]) / 2)
    with pytest.raises(ValueError, match=r"the checkpoints differ in their tensors: \['classifier.bias'\]"):
        flips_vs_dense.interpolated(dense_state, {k: v for k, v in trained_state.items() if k != "classifier.bias"}, 1)

    sentences = ["a great movie", "dull and long", "not bad at all", "the worst film of the year", "fine", "moving"]
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences)))
    argv = ["flips_vs_dense.py", "--dense", str(dense_path), "--validation_file", str(tsv), "--checkpoints"]
    argv += [str(tmp_path / "trained"), "--alphas", "0", "1", "--budgets", "1.0", "0.5"]
    monkeypatch.setattr(sys, "argv", argv)
    flips_vs_dense.main()
    lines = capsys.readouterr().out.splitlines()
    dense_row = next(line.split(" | ") for line in lines if "(dense)" in line)
    rows = [line.split(" | ") for line in lines if line.startswith(f"| {tmp_path / 'trained'} |")]
    assert [(row[1], row[2]) for row in rows] == [("0.0", "1.0"), ("0.0", "0.5"), ("1.0", "1.0"), ("1.0", "0.5")]
    # alpha 0 at rho 1: the dense model's accuracy, no answer lost or gained
    assert rows[0][3:6] == [dense_row[3], "0", "0"]
    assert int(rows[2][4]) + int(rows[2][5]) > 0  # the checkpoint itself does answer differently
