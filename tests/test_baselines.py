"""Training-free selection baselines share the model's budget and kept counts; only the choice differs."""

from __future__ import annotations

import pytest
import torch

from retention_hf.baselines import BASELINES, ClsAttentionScorer, baseline_selection

from families import FAMILIES
from test_modeling import make_model


@pytest.fixture(params=FAMILIES, ids=lambda family: family.name)
def family(request):
    return request.param


def run(model, inputs, baseline=None, **kwargs):
    with torch.no_grad():
        if baseline is None:
            return model(**inputs, **kwargs)
        with baseline_selection(model, baseline):
            return model(**inputs, **kwargs)


@pytest.mark.parametrize("baseline", BASELINES)
def test_same_kept_counts_as_the_learned_gates(family, baseline):
    model = make_model(family, retention_ratio=0.525, retention_schedule=[1.0, 0.6, 0.3, 0.2])
    inputs = family.inputs([22, 15, 6], seq_len=22)
    learned = run(model, inputs)
    heuristic = run(model, inputs, baseline)
    assert heuristic.kept_counts.tolist() == learned.kept_counts.tolist()
    assert [p.shape for p in heuristic.kept_positions] == [p.shape for p in learned.kept_positions]


def test_truncation_keeps_the_first_tokens(family):
    model = make_model(family, retention_ratio=0.4)
    inputs = family.inputs([20, 9], seq_len=20)
    outputs = run(model, inputs, "truncation")
    for positions, counts in zip(outputs.kept_positions, outputs.kept_counts.T, strict=True):
        for row in range(2):
            assert positions[row][positions[row] >= 0].tolist() == list(range(counts[row]))


def test_attention_keeps_the_most_attended_tokens(family):
    model = make_model(family, retention_ratio=0.4)
    inputs = family.inputs([20, 13], seq_len=20)
    outputs = run(model, inputs, "attention", output_attentions=True)
    for layer in range(1, 4):
        attention = outputs.attentions[layer - 1]  # probabilities of the layer before the gate
        previous, kept = outputs.kept_positions[layer - 1], outputs.kept_positions[layer]
        for row in range(2):
            real = previous[row] >= 0
            received = (attention[row][:, real][:, :, real]).sum(dim=(0, 1))
            received[0] = float("inf")  # the first token is protected
            count = int(outputs.kept_counts[row, layer])
            best = sorted(previous[row][real][torch.topk(received, count).indices].tolist())
            assert kept[row][kept[row] >= 0].tolist() == best


def test_cls_attention_is_the_first_tokens_attention_in_the_layer_the_gate_feeds(family):
    model = make_model(family, retention_enabled=False)
    inputs = family.inputs([20, 13], seq_len=20)
    with torch.no_grad():
        outputs = model(**inputs, output_attentions=True, output_hidden_states=True)
        for layer in range(4):
            scorer = ClsAttentionScorer(model.base_model.encoder.layer[layer].attention.self)
            scores = scorer(outputs.hidden_states[layer], inputs["attention_mask"].bool())  # the layer's input
            first_row = outputs.attentions[layer][:, :, 0, :].mean(dim=1)  # stock probabilities, mean over heads
            for row, length in enumerate([20, 13]):
                torch.testing.assert_close(scores[row, :length], first_row[row, :length], atol=1e-5, rtol=0)
                assert torch.all(scores[row, length:] == 0)  # padding gets no attention


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_cls_attention_keeps_the_most_attended_tokens_before_layer_0(family, attn_implementation):
    model = make_model(family, attn_implementation=attn_implementation, retention_ratio=0.4)
    inputs = family.inputs([20, 13], seq_len=20)
    reference = make_model(family, retention_ratio=1.0)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        attention = reference(**inputs, output_attentions=True).attentions[0][:, :, 0, :].mean(dim=1)
    outputs = run(model, inputs, "cls_attention")
    for row, length in enumerate([20, 13]):
        received = attention[row, :length].clone()
        received[0] = float("inf")  # the first token is protected
        best = sorted(torch.topk(received, int(outputs.kept_counts[row, 0])).indices.tolist())
        kept = outputs.kept_positions[0][row]
        assert kept[kept >= 0].tolist() == best


def test_random_is_seeded_and_the_gates_come_back(family):
    model = make_model(family, retention_ratio=0.4)
    inputs = family.inputs([24, 18], seq_len=24)
    before = run(model, inputs)
    first, second = run(model, inputs, "random"), run(model, inputs, "random")
    assert all(torch.equal(a, b) for a, b in zip(first.kept_positions, second.kept_positions, strict=True))
    truncation = run(model, inputs, "truncation")
    assert not all(torch.equal(a, b) for a, b in zip(first.kept_positions, truncation.kept_positions, strict=True))
    after = run(model, inputs)
    torch.testing.assert_close(after.last_hidden_state, before.last_hidden_state, atol=0, rtol=0)


def test_bad_baseline_requests(family):
    model = make_model(family, retention_ratio=0.4)
    with pytest.raises(ValueError, match="unknown baseline 'oracle'"), baseline_selection(model, "oracle"):
        pass
    sdpa = make_model(family, attn_implementation="sdpa", retention_ratio=0.4)
    with (
        pytest.raises(ValueError, match="load the model with attn_implementation='eager'"),
        baseline_selection(sdpa, "attention"),
    ):
        pass


def diagnose_budget():
    """examples/diagnose_budget.py, imported as a module (examples are scripts, not a package)."""
    import sys
    from pathlib import Path

    examples = str(Path(__file__).resolve().parents[1] / "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    import diagnose_budget

    return diagnose_budget


def test_the_diagnosis_oracle_ranks_by_a_fixed_importance_at_every_gate(family):
    oracle_selection = diagnose_budget().oracle_selection

    model = make_model(family, retention_ratio=0.4)
    inputs = family.inputs([20, 13], seq_len=20)
    importance = torch.rand(2, 20, generator=torch.Generator().manual_seed(0))
    with oracle_selection(model) as state, torch.no_grad():
        state["scores"] = importance
        outputs = model(**inputs)
    assert outputs.kept_counts.tolist() == run(model, inputs).kept_counts.tolist()
    previous = [list(range(20)), list(range(13))]
    for positions, counts in zip(outputs.kept_positions, outputs.kept_counts.T, strict=True):
        for row in range(2):
            ranked = sorted(previous[row], key=lambda p: (p != 0, -importance[row, p].item()))  # 0 is protected
            kept = sorted(ranked[: int(counts[row])])
            assert positions[row][positions[row] >= 0].tolist() == kept
            previous[row] = kept
    assert type(model.base_model.encoder.gates["0"]).__name__ != "OracleScorer", "the learned gates are back"


def test_the_diagnosis_breaks_accuracy_down_by_length_from_the_hits_of_one_pass(family):
    accuracy_by_length, score = diagnose_budget().accuracy_by_length, diagnose_budget().score

    model = make_model(family, task="sequence", retention_ratio=0.5, num_labels=2)
    inputs = family.inputs([20, 13, 7, 3], seq_len=20)
    labels = torch.tensor([0, 1, 1, 0])
    hits: list[torch.Tensor] = []
    row = score(model, [(inputs, labels)], hits=hits)
    (right,) = hits
    assert right.tolist() == (model(**inputs).logits.argmax(dim=-1) == labels).tolist()
    assert row["accuracy"] == right.float().mean().item()

    lengths = torch.tensor([20, 13, 7, 3, 9, 15, 2, 11])
    correct = torch.tensor([True, False, True, True, False, True, False, True])
    rows = accuracy_by_length(lengths, {"learned": correct, "off": torch.ones(8, dtype=torch.bool)}, quarters=2)
    # shortest half: lengths 2, 3, 7, 9 -> right False, True, True, False
    assert rows == {
        "2-9 tokens (4 sentences)": {"learned": 0.5, "off": 1.0},
        "11-20 tokens (4 sentences)": {"learned": 0.75, "off": 1.0},
    }


@pytest.mark.parametrize("prior", [False, True])
def test_the_diagnosis_calibrates_one_threshold_per_gate_to_the_same_tokens_per_layer(family, prior):
    score, score_with_dataset_budget = diagnose_budget().score, diagnose_budget().score_with_dataset_budget

    model = make_model(
        family, task="sequence", retention_ratio=0.5, num_labels=2, retention_scorer_attention_prior=prior
    )
    batches = [
        (family.inputs(lengths, seq_len=20, seed=seed), torch.tensor([0, 1, 1]))
        for seed, lengths in enumerate([[20, 13, 17], [9, 20, 15], [11, 12, 19]])
    ]
    learned = score(model, batches)
    calibrated = score_with_dataset_budget(model, batches, learned["tokens_per_layer"])
    assert calibrated["tokens_per_layer"] == learned["tokens_per_layer"]
    assert calibrated["keep_ratio"] != learned["keep_ratio"], "the same totals, but not the same share of each row"
    assert model.config.retention_inference_selection == "topk"
    assert model.config.retention_scorer_attention_prior is prior
    assert score(model, batches) == learned, "the scheduled top-k selection is back"
