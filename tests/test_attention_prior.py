"""retention_scorer_attention_prior: gates that start from the [CLS] token's attention ranking and learn to correct it."""

from __future__ import annotations

import pytest
import torch

from retention_hf.baselines import baseline_selection

from families import FAMILIES
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
    prior = encoder._log_attention_prior(1, hidden, alive)
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
