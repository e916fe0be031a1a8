"""ONNX export: the graph holds the selection, and ONNX Runtime matches PyTorch (1e-4, same kept counts).

Each export takes tens of seconds, so every exported model is built once per module and checked on several
batches: padded mixed lengths, batch 1, inputs of 1 and 2 tokens, a longer batch than the one traced and a batch
padded beyond its longest row. Outputs are compared at every position, padding included. The exported models have
two layers (`LAYERS`): the export's time grows with depth (one BERT classifier took 42 s at two layers and 76 s at
four), and two already give two gates with different kept counts, the second reading the first's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

import retention_hf as rh
from retention_hf.cli import main
from retention_hf.export import ORTModel, check_parity, output_names, to_onnx

from families import BERT, QA_PROTECTION, ROBERTA, save_tiny_text_model


LAYERS = 2  # the exported models' depth

BATCHES = {  # name -> (lengths, padded length)
    "padded mixed lengths": ([9, 5, 7], 9),
    "batch 1": ([6], 6),
    "one token": ([1, 1], 1),
    "two tokens": ([2, 1], 2),
    "longer than traced": ([30, 30, 12, 4], 31),
    "padded to a fixed length": ([5, 3], 12),  # no row fills the batch, as with padding="max_length"
}


def spread_gates(model: torch.nn.Module) -> torch.nn.Module:
    """Random scorer outputs, so that the selection depends on the tokens (fresh scorers score 0), and an
    attention prior (where the gates have one) large enough to rank together with the scorer's term."""
    torch.manual_seed(1)
    for gate in model.base_model.encoder.gates.values():
        torch.nn.init.normal_(gate.v, std=1.0)
        if getattr(gate, "attention_prior_scale", None) is not None:
            torch.nn.init.constant_(gate.attention_prior_scale, 2.0)
    return model.eval()


def inputs_for(family, lengths, seq_len, token_type_ids: bool) -> dict[str, torch.Tensor]:
    inputs = family.inputs(lengths, seq_len=seq_len, seed=len(lengths) + seq_len)
    if token_type_ids:
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    return inputs


def assert_parity(model, path: Path, family, token_type_ids: bool = True) -> None:
    session = ORTModel(path)
    for name, (lengths, seq_len) in BATCHES.items():
        inputs = inputs_for(family, lengths, seq_len, token_type_ids)
        try:
            assert check_parity(model, session, inputs) <= 1e-4
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export lazily and cache: (family, head, budget) -> (model, path)."""
    cache = {}

    def export(family, model_class, budget: float, **overrides):
        key = (family.name, model_class.__name__, budget, repr(sorted(overrides.items())))
        if key not in cache:
            config = family.config(retention_ratio=budget, num_hidden_layers=LAYERS, **overrides)
            model = spread_gates(model_class(config))
            cache[key] = model, to_onnx(model, tmp_path_factory.mktemp("onnx"))
        return cache[key]

    return export


def bert_classifier(exports, budget: float):
    """The BERT classifier's export; at rho 0.3 its gates carry the attention prior."""
    prior = {"retention_scorer_attention_prior": True} if budget < 1 else {}
    return exports(BERT, rh.RetentionBertForSequenceClassification, budget, **prior)


@pytest.mark.parametrize("budget", [1.0, 0.3])
def test_bert_classifier_parity(exports, budget):
    """At rho 0.3 the gates carry the attention prior (the first token's attention from the next layer's
    query/key weights): it is part of the graph too."""
    model, path = bert_classifier(exports, budget)
    assert_parity(model, path, BERT)
    assert ORTModel(path).output_names == ["logits", "kept_counts"]
    inputs = inputs_for(BERT, [30, 30, 12, 4], 31, token_type_ids=True)
    kept = ORTModel(path)(**inputs)["kept_counts"]
    lengths = inputs["attention_mask"].sum(dim=1).numpy()
    if budget == 1.0:
        assert (kept == lengths[:, None]).all()
    else:  # tokens really are dropped in the graph: 30 tokens keep 30 * 0.3 * 2 layers = 18 token-layers
        assert kept[0].sum() == 18 and (kept[:, -1] < lengths).all()


def test_roberta_classifier_parity_without_token_types(exports):
    model, path = exports(ROBERTA, rh.RetentionRobertaForSequenceClassification, 0.3)
    assert ORTModel(path).input_names == ["input_ids", "attention_mask"]
    assert_parity(model, path, ROBERTA, token_type_ids=False)


@pytest.mark.parametrize("match_span", ["window", "sentence"])
def test_question_answering_parity_with_protected_question(exports, match_span):
    """Start/end logits over every position: the restore of dropped tokens is in the graph too, and so are the
    query-aware scorers' pooling of the question, their question-word match (its window is a CumSum; its sentence
    sums, a ScatterElements add), the attention the question pays each token (the prior) and the restore's attention
    of the dropped tokens to the last layer's kept ones."""
    sentences = {"retention_scorer_match_sentence_end_ids": [5]} if match_span == "sentence" else {}
    model, path = exports(
        BERT,
        rh.RetentionBertForQuestionAnswering,
        0.5,
        num_labels=2,
        **QA_PROTECTION,
        retention_scorer_query=True,
        retention_scorer_question_match=True,
        retention_scorer_match_window=2,
        retention_scorer_attention_prior=True,
        retention_scorer_attention_prior_source="question",
        retention_restore_attention=True,
        **sentences,
    )
    assert ORTModel(path).output_names == ["start_logits", "end_logits", "kept_counts"]
    session = ORTModel(path)
    for lengths, seq_len in BATCHES.values():
        inputs = inputs_for(BERT, lengths, seq_len, token_type_ids=True)
        inputs["input_ids"][:, min(3, seq_len - 1)] = 4  # the question ends at position 3
        inputs["input_ids"][:, 6::5] = 5  # sentences end at positions 6, 11, ...
        assert check_parity(model, session, inputs) <= 1e-4


def test_roberta_token_classification_parity(exports):
    model, path = exports(ROBERTA, rh.RetentionRobertaForTokenClassification, 0.3)
    assert_parity(model, path, ROBERTA, token_type_ids=False)


def test_stock_dense_model_exports_the_same_way(tmp_path):
    """The dense baseline of the ONNX benchmark: stock BERT through the same function, no kept_counts."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BERT.stock_config()).eval()
    path = to_onnx(model, tmp_path)
    assert ORTModel(path).output_names == ["logits"]
    assert_parity(model, path, BERT)


def test_export_errors(exports, tmp_path):
    with pytest.raises(ValueError, match="supports the heads .*ForSequenceClassification.*got RetentionBertModel"):
        output_names(rh.RetentionBertModel(BERT.config()))
    model = rh.RetentionBertForSequenceClassification(BERT.config())
    with pytest.raises(ValueError, match="1.5"):
        to_onnx(model, tmp_path, retention_ratio=1.5)
    assert model.config.retention_ratio == 0.5 and model.config._attn_implementation == "sdpa"  # nothing changed
    with pytest.raises(FileNotFoundError, match="no model.onnx in"):
        ORTModel.from_pretrained(tmp_path)
    session_inputs = {"input_ids": np.ones((1, 3), dtype=np.int64)}
    with pytest.raises(ValueError, match="needs \\['attention_mask'\\]"):
        ORTModel(bert_classifier(exports, 0.3)[1])(**session_inputs)


def test_export_command(tmp_path, capsys):
    """``retention-hf export CKPT OUT --budget``: model.onnx, config and tokenizer, loadable and checked."""
    checkpoint = save_tiny_text_model(
        tmp_path / "ckpt", rh.RetentionBertForSequenceClassification, num_hidden_layers=LAYERS
    )
    output = tmp_path / "onnx"
    assert main(["export", str(checkpoint), str(output), "--budget", "0.3"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    assert {"model.onnx", "config.json", "tokenizer.json"} <= {path.name for path in output.iterdir()}
    config = rh.RetentionBertConfig.from_pretrained(output)
    assert config.retention_ratio == 0.3
    tokenizer = AutoTokenizer.from_pretrained(output)
    encoded = tokenizer(
        ["a short one", "a somewhat longer sentence to keep a third of"], padding=True, return_tensors="np"
    )
    outputs = ORTModel.from_pretrained(output)(**encoded)
    model = rh.RetentionBertForSequenceClassification.from_pretrained(checkpoint, retention_ratio=0.3).eval()
    with torch.no_grad():
        expected = model(**{key: torch.from_numpy(value) for key, value in encoded.items()})
    np.testing.assert_allclose(outputs["logits"], expected.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(outputs["kept_counts"], expected.kept_counts.numpy())


def test_benchmark_onnxruntime_backend(tmp_path):
    """``retention-hf benchmark --backend onnxruntime``: ORT and eager rows side by side, parity, export times."""
    dense = save_tiny_text_model(
        tmp_path / "dense", rh.RetentionBertForSequenceClassification, num_hidden_layers=LAYERS
    )
    argv = ["benchmark", "--dataset=sst2", f"--dense={dense}", "--learned", f"0.5={dense}", "--max_length=32"]
    argv += ["--batch_size=8", "--repeats=1", "--limit=16", "--backend=onnxruntime", f"--output={tmp_path / 'out'}"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["speed"]) == {"eager dense", "eager rho=0.5", "ort dense", "ort rho=0.5"}
    assert results["speed"]["ort dense"]["speedup_vs_ort_dense"] == 1.0
    assert set(results["ort_vs_eager"]) == {"dense", "rho=0.5"}
    assert max(results["onnx_parity_max_abs_difference"].values()) <= 1e-4
    assert "memory_mb" not in results and "accuracy" not in results
    assert "| ort rho=0.5 |" in (tmp_path / "out" / "results.md").read_text()
