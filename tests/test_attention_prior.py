"""retention_scorer_attention_prior: gates that start from the [CLS] token's attention ranking and learn to correct it."""

from __future__ import annotations

import pytest
import torch

from retention_hf.baselines import baseline_selection
from retention_hf.gates import received_attention

from families import FAMILIES, QA_PROTECTION
from test_configuration import ConfigError
from test_modeling import make_model
from test_trainer import make_trainer


@pytest.fixture(params=FAMILIES, ids=lambda family: family.name)
def family(request):
    return request.param


def blank_scorers(model):
    """Scorers whose own term is a constant (v = 0), so only the prior ranks."""
    for gate in model.base_model.encoder.gates.values():
        torch.nn.init.zeros_(gate.v)
    return model


@pytest.mark.parametrize("scorer", ["context", "mlp"])
def test_a_blank_scorer_with_the_prior_selects_as_the_cls_attention_baseline(family, scorer):
    model = blank_scorers(
        make_model(family, retention_ratio=0.4, retention_scorer=scorer, retention_scorer_attention_prior=True)
    )
    inputs = family.inputs([20, 13, 7], seq_len=20)
    with torch.no_grad():
        learned = model(**inputs)
        with baseline_selection(model, "cls_attention"):
            heuristic = model(**inputs)
    assert learned.kept_counts.tolist() == heuristic.kept_counts.tolist()
    for mine, theirs in zip(learned.kept_positions, heuristic.kept_positions, strict=True):
        assert mine.tolist() == theirs.tolist()
    without = blank_scorers(make_model(family, retention_ratio=0.4, retention_scorer=scorer))
    with torch.no_grad():  # a blank scorer without the prior ranks every token alike: another selection
        blind = without(**inputs)
    assert any(a.tolist() != b.tolist() for a, b in zip(blind.kept_positions, learned.kept_positions, strict=True))


def test_the_prior_scale_is_a_gate_parameter_that_starts_at_one_and_loads_into_older_checkpoints(family, tmp_path):
    model = make_model(family, "sequence", retention_ratio=0.4)
    assert all(
        name.endswith(("v", "b", "weight", "bias")) for name, _ in model.base_model.encoder.gates.named_parameters()
    )
    model.save_pretrained(tmp_path)  # a checkpoint without the prior
    loaded = type(model).from_pretrained(tmp_path, retention_scorer_attention_prior=True)
    scales = [gate.attention_prior_scale for gate in loaded.base_model.encoder.gates.values()]
    assert len(scales) == 4 and all(scale.item() == 1.0 for scale in scales)
    names = [name for name, _ in loaded.named_parameters() if name.endswith("attention_prior_scale")]
    assert names[0].endswith("encoder.gates.0.attention_prior_scale")


def test_topk_training_trains_the_prior_scale_and_no_gradient_flows_through_the_prior(tmp_path):
    trainer = make_trainer(
        tmp_path,
        model_config={"retention_ratio": 0.5, "retention_scorer_attention_prior": True},
        selection_training="topk",
        topk_straight_through=True,
        max_steps=3,
    )
    encoder = trainer.model.base_model.encoder
    hidden = torch.randn(2, 6, trainer.model.config.hidden_size, requires_grad=True)
    alive = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    prior = encoder._log_attention_prior(1, hidden, alive, torch.zeros_like(alive))
    assert prior.shape == (2, 6)
    assert not prior.requires_grad  # a fixed input: the layer's attention is not trained by it
    # centred over each row's alive tokens (a constant push on every score gives the scale no gradient); dead slots 0
    torch.testing.assert_close(prior.sum(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    assert prior[1, 4:].tolist() == [0.0, 0.0] and prior[1, :4].abs().sum() > 0
    trainer.train()
    scales = [gate.attention_prior_scale.item() for gate in encoder.gates.values()]
    assert all(scale != 1.0 for scale in scales), scales  # every gate's scale learned from the straight-through scores


def test_the_prior_refuses_selections_that_read_the_score_as_a_probability(family, tmp_path):
    with pytest.raises(
        ConfigError, match="retention_scorer_attention_prior needs retention_inference_selection='topk'"
    ):
        family.config(retention_scorer_attention_prior=True, retention_inference_selection="threshold")
    with pytest.raises(ValueError, match="retention_scorer_attention_prior needs selection_training='topk'"):
        make_trainer(tmp_path, family, model_config={"retention_scorer_attention_prior": True})
    inputs = family.inputs([8, 5], seq_len=8)
    model = make_model(family, retention_ratio=0.4)
    model.config.retention_scorer_attention_prior = True  # switched on after the gates were built
    with pytest.raises(ValueError, match="=True, but this model's gates were built without the prior's scale"):
        model(**inputs)
    model = make_model(family, retention_ratio=0.4, retention_scorer_attention_prior=True)
    model.config.retention_scorer_attention_prior = False  # or off
    with pytest.raises(ValueError, match="=False, but this model's gates were built with the prior's scale"):
        model(**inputs)
    model.config.retention_scorer_attention_prior = True
    model.train()  # a custom loop's Hard-Concrete pass (retention_train_with_topk is off) ...
    with pytest.raises(ValueError, match="top-k selection only: Hard-Concrete training reads the score"):
        model(**inputs)
    model.eval().config.retention_inference_selection = "threshold"  # ... or threshold selection set after building
    with pytest.raises(ValueError, match="top-k selection only: threshold selection reads the score"):
        model(**inputs)
    model.config.retention_inference_selection = "topk"
    assert model(**inputs).kept_counts.shape == (2, 4)


def test_the_question_prior_is_the_attention_the_question_pays_each_token(family):
    """received_attention with ``sources``: the stock attention probabilities of each row's question slots (row 0:
    slots 0-3; row 1: slots 0, 1 and 5, not a prefix), averaged over heads and over those slots, in every layer."""
    model = make_model(family, retention_enabled=False)
    inputs = family.inputs([20, 13], seq_len=20)
    question = torch.zeros(2, 20, dtype=torch.bool)
    question[0, :4] = True
    question[1, [0, 1, 5]] = True
    with torch.no_grad():
        outputs = model(**inputs, output_attentions=True, output_hidden_states=True)
        for layer in range(4):
            attention = model.base_model.encoder.layer[layer].attention.self
            projections = (attention.query, attention.key, attention.num_attention_heads, attention.scaling)
            alive = inputs["attention_mask"].bool()
            received = received_attention(outputs.hidden_states[layer], alive, *projections, sources=question)
            stock = outputs.attentions[layer].mean(dim=1)  # (batch, attending slot, attended slot), mean over heads
            for row, length in enumerate([20, 13]):
                expected = stock[row, question[row]].mean(dim=0)
                torch.testing.assert_close(received[row, :length], expected[:length], atol=1e-5, rtol=0)
                assert torch.all(received[row, length:] == 0)  # padding gets no attention
            first_token = received_attention(outputs.hidden_states[layer], alive, *projections)
            torch.testing.assert_close(
                first_token,
                received_attention(
                    outputs.hidden_states[layer], alive, *projections, sources=(torch.arange(20) == 0).expand(2, 20)
                ),
                atol=0,
                rtol=0,
            )


def test_a_blank_scorer_with_the_question_prior_keeps_what_the_question_attends_to(family):
    """retention_scorer_attention_prior_source='question' on a QA input ([CLS] 7 8 [SEP] context): the first gate keeps
    the question and the context tokens the question attends to most in layer 0, and the first token's prior keeps
    others; top-k training runs with it, and a model whose first segment is not protected refuses it."""
    inputs = family.inputs([20, 16], seq_len=20, seed=3)
    inputs["input_ids"][:, 3] = 4  # the question ends at the separator in position 3

    def first_gate(source: str):
        model = blank_scorers(
            make_model(
                family,
                "qa",
                retention_ratio=0.4,
                retention_scorer_attention_prior=True,
                retention_scorer_attention_prior_source=source,
                **QA_PROTECTION,
            )
        )
        with torch.no_grad():
            outputs = model(**inputs, output_hidden_states=True)
        return model, outputs, [set(row.tolist()) - {-1} for row in outputs.kept_positions[0]]

    model, outputs, kept = first_gate("question")
    attention = model.base_model.encoder.layer[0].attention.self
    alive = inputs["attention_mask"].bool()
    question = ((torch.arange(20) <= 3) | (inputs["input_ids"] == 4)) & alive  # row 1 has a separator at 13 too
    with torch.no_grad():
        received = received_attention(
            model.base_model.embeddings(inputs["input_ids"], token_type_ids=inputs.get("token_type_ids")),
            alive,
            attention.query,
            attention.key,
            attention.num_attention_heads,
            attention.scaling,
            sources=question,
        )
    for row, length in enumerate([20, 16]):
        protected = question[row].nonzero()[:, 0]
        context = received[row, :length].masked_fill(question[row, :length], -1.0)
        best = torch.topk(context, int(outputs.kept_counts[row, 0]) - len(protected)).indices
        assert kept[row] == set(protected.tolist()) | set(best.tolist())
    _, _, first_token = first_gate("first_token")
    assert first_token != kept
    model.train()
    model.config.retention_train_with_topk = model.config.retention_topk_straight_through = True
    model(**inputs).start_logits.sum().backward()  # the straight-through scores carry the task gradient
    assert model.base_model.encoder.gates["0"].attention_prior_scale.grad.abs() > 0  # a gate that dropped tokens
    with pytest.raises(ConfigError, match="retention_scorer_attention_prior_source='question' needs retention_protect"):
        family.config(retention_scorer_attention_prior=True, retention_scorer_attention_prior_source="question")
    with pytest.raises(ConfigError, match="must be one of \\('first_token', 'question'\\), got 'cls'"):
        family.config(retention_scorer_attention_prior_source="cls")
