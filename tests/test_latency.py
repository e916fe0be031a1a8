"""``budget_for_latency``: the search on a stand-in clock, then real timing on a tiny model, and its errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from retention_hf import RetentionBertForSequenceClassification, budget_for_latency
from retention_hf import latency as latency_module

from families import save_tiny_text_model


TEXTS = ["a gripping , funny and warm film .", "dull , lifeless and far too long for what it has to say ."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_text_model(
        tmp_path_factory.mktemp("latency"), RetentionBertForSequenceClassification, retention_ratio=0.5
    )


@pytest.fixture
def model(checkpoint):
    return RetentionBertForSequenceClassification.from_pretrained(checkpoint)


def test_the_largest_budget_within_the_target_is_found_in_few_probes(model, checkpoint, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    probed = []

    def record(module, args, kwargs):
        probed.append(kwargs["retention_ratio"])

    model.register_forward_pre_hook(record, with_kwargs=True)

    def stand_in_clock(call, repeats, device=None):  # a machine on which a batch takes 100 ms times the budget
        call()
        return 100.0 * probed[-1]

    monkeypatch.setattr(latency_module, "_batch_latency_ms", stand_in_clock)
    model.train()
    assert budget_for_latency(model, tokenizer, TEXTS, max_ms=42.0) == 0.4
    assert len(set(probed)) <= 7  # a bisection over the 20 budgets 0.05 ... 1.0, not a scan
    assert model.training  # the mode is restored
    assert budget_for_latency(model, tokenizer, TEXTS, max_ms=500.0) == 1.0
    assert budget_for_latency(model, tokenizer, TEXTS, max_ms=30.0, budgets=[0.2, 0.25, 0.5]) == 0.25
    with pytest.raises(ValueError, match=r"no budget down to 0.05 meets max_ms=4.0: a batch of 2 texts takes 5.00 ms"):
        budget_for_latency(model, tokenizer, TEXTS, max_ms=4.0)


def test_real_timing_on_this_machine(model, checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert budget_for_latency(model, tokenizer, TEXTS, max_ms=1e9, repeats=1) == 1.0
    with pytest.raises(ValueError, match=r"no budget down to 0.05 meets max_ms=1e-09: a batch of 2 texts takes"):
        budget_for_latency(model, tokenizer, TEXTS, max_ms=1e-9, repeats=1)


def test_bad_inputs_fail_early(model, checkpoint, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="max_ms must be > 0, got 0"):
        budget_for_latency(model, tokenizer, TEXTS, max_ms=0)
    with pytest.raises(ValueError, match="texts must be a non-empty list of strings"):
        budget_for_latency(model, tokenizer, "one text", max_ms=10)
    with pytest.raises(ValueError, match=r"retention_ratio must be a number in \(0, 1\], got 1.5"):
        budget_for_latency(model, tokenizer, TEXTS, max_ms=10, budgets=[0.5, 1.5])
    stock = BertForSequenceClassification.from_pretrained(save_tiny_text_model(tmp_path, BertForSequenceClassification))
    with pytest.raises(
        TypeError, match="budget_for_latency needs a retention model, got BertForSequenceClassification"
    ):
        budget_for_latency(stock, tokenizer, TEXTS, max_ms=10)
    with pytest.raises(ValueError, match="budgets is empty"):
        budget_for_latency(model, tokenizer, TEXTS, max_ms=10, budgets=[])
    model.config.retention_enabled = False
    with pytest.raises(ValueError, match="needs retention on with top-k selection"):
        budget_for_latency(model, tokenizer, TEXTS, max_ms=10)
    assert torch.is_grad_enabled()
