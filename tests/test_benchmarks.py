"""The benchmark harness runs end to end on a tiny model: every row present, every figure finite."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification, RobertaForSequenceClassification

from retention_hf import RetentionBertForSequenceClassification, RetentionRobertaForSequenceClassification
from retention_hf.baselines import BASELINES
from retention_hf.benchmarks import data as bench_data
from retention_hf.benchmarks import report
from retention_hf.benchmarks.data import DATASETS, load_examples
from retention_hf.benchmarks.models import load_retention_model, save_untrained_twin
from retention_hf.benchmarks.run import main as run_benchmarks

from families import save_tiny_text_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny 'dense' checkpoint and two 'learned' ones (random weights, real tokenizer)."""
    root = tmp_path_factory.mktemp("bench")
    learned = {"retention_learned_schedule": [0.8, 0.5, 0.3]}
    return {
        name: save_tiny_text_model(root / name, RetentionBertForSequenceClassification, retention_ratio=ratio, **extra)
        for name, ratio, extra in [("dense", 0.5, {}), ("r50", 0.5, learned), ("r30", 0.3, learned)]
    }


def run_tiny_harness(checkpoints, output: Path, *rows: str) -> dict:
    """The harness on the tiny checkpoints, on SST-2 cut to length 32, batches of 8, one repeat; ``rows`` names
    the models and what to measure."""
    common = ["--dataset=sst2", f"--dense={checkpoints['dense']}", "--max_length=32", "--batch_size=8"]
    return run_benchmarks([*common, "--repeats=1", *rows, f"--output={output}"])


def test_harness_end_to_end(checkpoints, tmp_path):
    output = tmp_path / "results"
    results = run_tiny_harness(
        checkpoints,
        output,
        "--learned",
        f"0.5={checkpoints['r50']}",
        f"0.3={checkpoints['r30']}",
        "--limit=24",
        "--timing_examples=16",
    )
    expected_rows = {"stock", "dense", "rho=1.0", "rho=0.5", "rho=0.3", "ideal rho=0.5", "ideal rho=0.3"}
    assert set(results["speed"]) == expected_rows
    for figures in results["speed"].values():
        assert all(math.isfinite(value) and value > 0 for value in figures.values())
    assert math.isfinite(results["gate_overhead_rho1_vs_stock"])
    assert set(results["memory_mb"]) == {"stock", "dense", "rho=0.5", "rho=0.3"}
    assert all(math.isfinite(value) for value in results["memory_mb"].values())
    for ratio in ("rho=0.5", "rho=0.3"):
        row = results["accuracy"][ratio]
        assert set(row) == {"learned", *BASELINES}
        keep = {name: cell["keep_ratio"] for name, cell in row.items()}
        assert len({round(value, 6) for value in keep.values()}) == 1, "baselines keep exactly as much as learned"
        assert all(0 <= cell["accuracy"] <= 1 for cell in row.values())
    for ratio, schedule in results["schedules"].items():  # the learned shape, rescaled to the budget
        assert sum(schedule) / len(schedule) == pytest.approx(float(ratio), abs=1e-6)
    written = json.loads((output / "results.json").read_text())
    assert written["examples"] == 24 and written["timing_examples"] == 16
    targets = {check["target"]: check for check in results["targets"]}
    assert {
        "gate overhead at rho 1 vs stock",
        "peak memory above the model, rho 0.3 vs dense",
        "accuracy vs dense, rho 0.5",
        "accuracy vs dense, rho 0.3",
        "learned vs best baseline, rho 0.5",
        "learned vs best baseline, rho 0.3",
    } == set(targets), "SST-2 has no speed targets; every other target is checked"
    assert all(math.isfinite(check["measured"]) and isinstance(check["met"], bool) for check in targets.values())
    table = (output / "results.md").read_text()
    assert results["command"].startswith("python -m retention_hf.benchmarks.run --dataset=sst2 ")
    assert f"Command: `{results['command']}`" in table
    for row in expected_rows:
        assert f"| {row} |" in table
    for plot in ("accuracy_vs_budget.png", "speedup_vs_budget.png", "layer_retention.png"):
        assert (output / plot).stat().st_size > 1000


def test_one_checkpoint_at_many_budgets(checkpoints, tmp_path):
    output = tmp_path / "results"
    results = run_tiny_harness(
        checkpoints,
        output,
        "--learned",
        f"0.5={checkpoints['r50']}",
        f"--any_budget={checkpoints['r30']}",
        "--budgets",
        "1.0",
        "0.5",
        "0.2",
        "--limit=16",
        "--skip",
        "memory",
    )
    rows = {"any rho=1.0", "any rho=0.5", "any rho=0.2"}
    assert rows < set(results["speed"]) and rows < set(results["accuracy"])
    assert {key: results["any_budget"][key] for key in ("checkpoint", "budgets")} == {
        "checkpoint": str(checkpoints["r30"]),
        "budgets": [1.0, 0.5, 0.2],
    }
    for budget in (1.0, 0.5, 0.2):  # the one checkpoint runs at each budget, and the baselines keep as much
        row = results["accuracy"][f"any rho={budget}"]
        assert len({round(cell["keep_ratio"], 6) for cell in row.values()}) == 1
        assert row["learned"]["keep_ratio"] == pytest.approx(budget, abs=0.06)
    targets = {check["target"] for check in results["targets"]}
    assert {
        "any-budget vs per-budget model, rho 0.5",
        "any-budget at rho 1 vs dense",
        "any-budget vs best baseline, rho 0.2",
    } <= targets
    table = (output / "results.md").read_text()
    assert all(f"| {row} |" in table for row in rows)
    assert (output / "accuracy_vs_budget.png").stat().st_size > 1000


def test_one_checkpoint_alone(checkpoints, tmp_path):
    """`--any_budget` without per-budget models: every measurement runs on the one checkpoint at each budget."""
    output = tmp_path / "results"
    results = run_tiny_harness(
        checkpoints, output, f"--any_budget={checkpoints['r30']}", "--budgets", "1.0", "0.3", "--limit=16"
    )
    assert set(results["speed"]) == {"stock", "dense", "rho=1.0", "any rho=1.0", "any rho=0.3"}
    assert set(results["memory_mb"]) == {"stock", "dense", "any rho=1.0", "any rho=0.3"}
    assert set(results["accuracy"]["any rho=1.0"]) == {"learned"}, "at rho 1 every baseline is the dense model"
    assert set(results["accuracy"]["any rho=0.3"]) == {"learned", *BASELINES}
    assert results["schedules"] == {}
    schedules = results["any_budget"]["schedules"]
    assert sum(schedules["0.3"]) / len(schedules["0.3"]) == pytest.approx(0.3, abs=1e-6)
    assert schedules["1.0"] == [1.0, 1.0, 1.0]
    targets = {check["target"] for check in results["targets"]}
    assert {"any-budget at rho 1 vs dense", "any-budget vs best baseline, rho 0.3"} <= targets
    assert not any("per-budget" in target for target in targets)
    table = (output / "results.md").read_text()
    assert "| any rho=0.3 |" in table and "- any rho=0.3: " in table
    for plot in ("accuracy_vs_budget.png", "speedup_vs_budget.png", "layer_retention.png"):
        assert (output / plot).stat().st_size > 1000


def test_baselines_can_be_chosen(checkpoints, tmp_path):
    rows = ["--any_budget", str(checkpoints["r30"]), "--budgets", "0.5", "--limit=8", "--skip", "speed", "memory"]
    results = run_tiny_harness(checkpoints, tmp_path / "one", *rows, "--baselines", "truncation")
    assert set(results["accuracy"]["any rho=0.5"]) == {"learned", "truncation"}
    results = run_tiny_harness(checkpoints, tmp_path / "none", *rows, "--baselines")
    assert set(results["accuracy"]["any rho=0.5"]) == {"learned"}
    assert not any("baseline" in check["target"] for check in results["targets"]), "no baseline, no margin to check"


def test_harness_needs_a_model(checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_tiny_harness(checkpoints, tmp_path / "results")
    assert "nothing to measure: give --learned RATIO=CHECKPOINT ..., --any_budget CHECKPOINT" in capsys.readouterr().err


def test_any_budget_checks_on_hand_built_results():
    def cell(accuracy):
        return {"accuracy": accuracy, "keep_ratio": 0.3}

    baselines = {"random": cell(0.6), "truncation": cell(0.7), "attention": cell(0.75)}
    results = {
        "dataset": "sst2",
        "schedules": {"0.5": [0.5] * 6},
        "any_budget": {"checkpoint": "x", "budgets": [1.0, 0.5, 0.2]},
        "accuracy": {
            "dense": 0.9,
            "rho=0.5": {"learned": cell(0.87), **baselines},
            "any rho=1.0": {"learned": cell(0.896), **baselines},
            "any rho=0.5": {"learned": cell(0.864), **baselines},
            "any rho=0.2": {"learned": cell(0.74), **baselines},
        },
    }
    checks = {check["target"]: (check["shown"], check["met"]) for check in report.target_checks(results)}
    assert checks["any-budget at rho 1 vs dense"] == ("-0.0040", False)
    assert checks["any-budget vs per-budget model, rho 0.5"] == ("-0.0060", False)
    assert checks["any-budget vs best baseline, rho 0.2"] == ("-0.0100", False)
    results["accuracy"]["any rho=0.5"]["learned"] = cell(0.866)
    checks = {check["target"]: check["met"] for check in report.target_checks(results)}
    assert checks["any-budget vs per-budget model, rho 0.5"]


def test_target_checks_on_hand_built_imdb_results():
    def cell(accuracy):
        return {"accuracy": accuracy, "keep_ratio": 0.3}

    results = {
        "dataset": "imdb",
        "schedules": {"0.5": [0.5] * 6, "0.3": [0.3] * 6},
        "speed": {
            "rho=0.5": {"speedup_vs_dense": 2.3},
            "rho=0.3": {"speedup_vs_dense": 3.4},
            "ideal rho=0.5": {"speedup_vs_dense": 2.5},
            "ideal rho=0.3": {"speedup_vs_dense": 4.0},
        },
        "gate_overhead_rho1_vs_stock": 0.025,
        "memory_mb": {"dense": 200.0, "rho=0.3": 90.0},
        "accuracy": {
            "dense": 0.9,
            "rho=0.5": {"learned": cell(0.9), "random": cell(0.8), "truncation": cell(0.85), "attention": cell(0.9)},
            "rho=0.3": {"learned": cell(0.891), "random": cell(0.7), "truncation": cell(0.8), "attention": cell(0.85)},
        },
    }
    checks = {check["target"]: (check["shown"], check["met"]) for check in report.target_checks(results)}
    assert checks == {
        "throughput vs dense, rho 0.5": ("2.30x", True),
        "throughput vs dense, rho 0.3": ("3.40x", False),
        "share of the ideal speed-up, rho 0.3": ("85%", False),
        "gate overhead at rho 1 vs stock": ("+2.5%", False),
        "peak memory above the model, rho 0.3 vs dense": ("0.45x", True),
        "accuracy vs dense, rho 0.5": ("100.0%", True),
        "accuracy vs dense, rho 0.3": ("99.0%", True),
        "learned vs best baseline, rho 0.5": ("+0.0000", False),  # a tie is not a win
        "learned vs best baseline, rho 0.3": ("+0.0410", True),
    }


def test_the_best_baseline_and_the_table_columns_follow_the_measured_baselines():
    def cell(accuracy):
        return {"accuracy": accuracy, "keep_ratio": 0.5}

    older = {"random": cell(0.7), "truncation": cell(0.75), "attention": cell(0.8)}  # before cls_attention existed
    results = {
        "dataset": "sst2",
        "examples": 4,
        "batch_size": 2,
        "max_length": 16,
        "repeats": 1,
        "machine": {"cpu_count": 2, "torch": "x"},
        "command": "x",
        "schedules": {"0.5": [0.5] * 6},
        "accuracy": {"dense": 0.9, "rho=0.5": {"learned": cell(0.82), **older}},
    }
    checks = {check["target"]: check["shown"] for check in report.target_checks(results)}
    assert checks["learned vs best baseline, rho 0.5"] == "+0.0200"
    assert "| accuracy | random | truncation | attention |\n" in report.table(results)
    results["accuracy"]["rho=0.5"]["cls_attention"] = cell(0.85)
    checks = {check["target"]: check["shown"] for check in report.target_checks(results)}
    assert checks["learned vs best baseline, rho 0.5"] == "-0.0300"
    table = report.table(results)
    assert "| accuracy | random | truncation | attention | cls_attention |\n" in table
    assert "| 0.8200 | 0.7000 | 0.7500 | 0.8000 | 0.8500 |\n" in table


def test_jsonl_reviews_with_unicode_line_separators_load_whole(tmp_path, monkeypatch):
    path = tmp_path / "reviews.jsonl"
    rows = [{"text": "one\u2028line, not two\u0085really", "label": 1}, {"text": "plain", "label": 0}]
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n", encoding="utf-8")
    monkeypatch.setitem(DATASETS, "imdb", path)
    examples = load_examples("imdb")
    assert examples.texts == [row["text"] for row in rows] and examples.labels == [1, 0]


def test_benchmark_modules_import_without_a_cycle():
    """The package reads top-down: no module imports (directly or not) one that imports it back."""
    package = Path(report.__file__).parent
    edges = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        edges[path.stem] = {
            (node.module or "").split(".")[0] or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names
        }
    assert edges["memory"] >= {"models"} and "run" not in edges["memory"]

    def reaches(start, goal, seen=()):
        return any(
            name == goal or (name not in seen and reaches(name, goal, (*seen, name))) for name in edges.get(start, ())
        )

    assert [name for name in edges if reaches(name, name)] == []


@pytest.mark.skipif(not bench_data.IMDB_TRAIN.is_file(), reason="needs ../shared/data/imdb")
def test_imdb_train_splits_are_disjoint_and_balanced(tmp_path):
    train, validation = bench_data.write_imdb_train_splits(tmp_path)
    rows = {path.name: [json.loads(line) for line in path.open(encoding="utf-8")] for path in (train, validation)}
    assert [len(rows[path.name]) for path in (train, validation)] == [6000, 1000]
    assert [sum(row["label"] for row in rows[path.name]) for path in (train, validation)] == [3000, 500]
    assert not {row["id"] for row in rows[train.name]} & {row["id"] for row in rows[validation.name]}
    train.write_text("kept")
    assert bench_data.write_imdb_train_splits(tmp_path) == (train, validation) and train.read_text() == "kept"


@pytest.mark.parametrize(
    ("retention_class", "stock_class"),
    [
        (RetentionBertForSequenceClassification, BertForSequenceClassification),
        (RetentionRobertaForSequenceClassification, RobertaForSequenceClassification),
    ],
)
def test_an_untrained_twin_has_the_trained_config_and_the_base_encoder(tmp_path, retention_class, stock_class):
    """reproduce_onnx.sh's ONNX_WEIGHTS=untrained: a trained checkpoint's config on the base model's encoder
    weights, with the base tokenizer, so that its export has the same graph and kept counts as the trained one's."""
    trained = save_tiny_text_model(
        tmp_path / "trained", retention_class, retention_ratio=0.3, retention_schedule="decay"
    )
    base = save_tiny_text_model(tmp_path / "base", stock_class, hidden_act="relu")
    stock = stock_class.from_pretrained(base)
    with torch.no_grad():  # weights of its own, whatever the tiny models' shared seed gives
        for weight in stock.parameters():
            weight.add_(torch.randn_like(weight))
    stock.save_pretrained(base)
    save_untrained_twin(str(trained / "config.json"), str(tmp_path / "twin"), str(base))
    twin = load_retention_model(str(tmp_path / "twin"))
    assert twin.config.to_diff_dict() == load_retention_model(str(trained)).config.to_diff_dict()
    for name, weight in stock.base_model.encoder.state_dict().items():
        assert torch.equal(twin.base_model.encoder.state_dict()[name], weight), name
    assert (tmp_path / "twin" / "tokenizer.json").exists()
