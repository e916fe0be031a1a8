"""RetentionConfig: validation with clear errors, schedules, and model-type conversion."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from retention_hf import RetentionBertConfig, RetentionConfig, RetentionRobertaConfig

from families import FAMILIES


ConfigError = (StrictDataclassFieldValidationError, StrictDataclassClassValidationError)


@pytest.fixture(params=FAMILIES, ids=lambda family: family.name)
def family(request):
    return request.param


def test_model_types_and_shared_definition():
    assert RetentionBertConfig.model_type == "retention-bert"
    assert RetentionRobertaConfig.model_type == "retention-roberta"
    for config_class in (RetentionBertConfig, RetentionRobertaConfig):
        assert issubclass(config_class, RetentionConfig)
    shared = set(RetentionConfig.__dataclass_fields__)
    assert shared <= set(RetentionBertConfig.__dataclass_fields__)
    assert shared <= set(RetentionRobertaConfig.__dataclass_fields__)


def test_defaults(family):
    config = family.config()
    assert config.retention_enabled is True
    assert config.retention_ratio == 0.5
    assert config.retention_schedule == "decay"
    assert (config.hard_concrete_beta, config.hard_concrete_gamma, config.hard_concrete_zeta) == (0.66, -0.1, 1.1)
    assert config.retention_scorer == "context"
    assert config.retention_min_tokens == 1
    assert config.retention_scorer_width == 32 // 8


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retention_ratio", 0.0, r"retention_ratio must be a number in \(0, 1\], got 0.0"),
        ("retention_ratio", 1.01, r"got 1.01"),
        ("retention_ratio", -1, r"got -1"),
        ("retention_ratio", float("nan"), r"got nan"),
        ("retention_ratio", True, r"got True"),
        (
            "retention_schedule",
            "linear",
            r"retention_schedule must be one of \('learned', 'uniform', 'geometric', 'decay'\)",
        ),
        ("retention_schedule", [1.0, 0.0, 0.5, 0.5], r"retention_schedule\[1\] must be a number in \(0, 1\], got 0.0"),
        ("retention_learned_schedule", [1.0, 1.5], r"retention_learned_schedule\[1\]"),
        ("retention_first_gated_layer", -1, r"retention_first_gated_layer must be an integer >= 0, got -1"),
        ("retention_scorer_match_window", -1, r"retention_scorer_match_window must be an integer >= 0, got -1"),
        (
            "retention_scorer_match_sentence_end_ids",
            [1012, -5],
            r"retention_scorer_match_sentence_end_ids must hold non-negative integers, got -5",
        ),
        ("retention_scorer_match_sentence_end_ids", ".", r"retention_scorer_match_sentence_end_ids must be a list"),
        (
            "retention_scorer",
            "lstm",
            r"retention_scorer must be one of \('context', 'bidirectional', 'mlp'\), got 'lstm'",
        ),
        ("retention_scorer_decay", 1.5, r"retention_scorer_decay must be a number in \[0, 1\], got 1.5"),
        ("retention_schedule_decay", 0, r"retention_schedule_decay must be a number in \(0, 1\], got 0"),
        ("retention_scorer_hidden_size", 0, r"retention_scorer_hidden_size must be a positive integer or None, got 0"),
        ("retention_gate_init_bias", float("inf"), r"retention_gate_init_bias must be a finite number, got inf"),
        ("hard_concrete_beta", 0.0, r"hard_concrete_beta \(temperature\) must be > 0, got 0.0"),
        ("hard_concrete_gamma", 0.1, r"hard_concrete_gamma \(lower stretch limit\) must be < 0, got 0.1"),
        ("hard_concrete_zeta", 1.0, r"hard_concrete_zeta \(upper stretch limit\) must be > 1, got 1.0"),
        ("retention_protected_token_ids", [3, -2], r"non-negative integers, got -2"),
        ("retention_protected_token_ids", 102, r"must be a list of token ids, got 102"),
        ("retention_min_tokens", 0, r"retention_min_tokens must be an integer >= 1, got 0"),
    ],
)
def test_every_field_is_validated(family, field, value, message):
    with pytest.raises(ConfigError, match=message):
        family.config(**{field: value})
    config = family.config()
    with pytest.raises(ConfigError, match=message):
        setattr(config, field, value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"retention_first_gated_layer": 4},
            r"retention_first_gated_layer=4 leaves no gated layer: the model has 4 layers",
        ),
        (
            {"retention_ratio": 0.2, "retention_first_gated_layer": 1},
            r"retention_ratio=0.2 is unreachable: the 1 ungated",
        ),
        ({"retention_schedule": [1.0, 0.5, 0.5]}, r"retention_schedule has 3 entries, expected one per layer \(4\)"),
        ({"retention_schedule": [1.0, 0.4, 0.5, 0.4], "retention_ratio": 0.575}, r"must be non-increasing"),
        (
            {"retention_schedule": [0.9, 0.5, 0.4, 0.4], "retention_ratio": 0.55, "retention_first_gated_layer": 1},
            r"must be 1.0 before retention_first_gated_layer=1",
        ),
        ({"retention_schedule": [1.0, 0.5, 0.4, 0.3]}, r"spends 0.5500 of the dense work but retention_ratio=0.5"),
        (
            {"retention_learned_schedule": [1.0, 0.5]},
            r"retention_learned_schedule has 2 entries, expected one per layer",
        ),
        (
            {"retention_protect_first_segment": True},
            r"retention_protect_first_segment needs the separator in retention_protected_token_ids",
        ),
        (
            {"retention_scorer_match_sentence_end_ids": [1012]},
            r"retention_scorer_match_sentence_end_ids=\[1012\] sets the span of retention_scorer_question_match, "
            "which is off",
        ),
    ],
)
def test_cross_field_validation(family, overrides, message):
    with pytest.raises(ConfigError, match=message):
        family.config(**overrides)


def test_uniform_schedule_meets_the_budget(family):
    for first, ratio in [(0, 0.3), (1, 0.3), (1, 0.5), (2, 0.8), (0, 1.0)]:
        config = family.config(retention_ratio=ratio, retention_first_gated_layer=first, retention_schedule="uniform")
        ratios = config.retention_layer_ratios()
        assert ratios[:first] == [1.0] * first
        assert len(set(ratios[first:])) == 1
        assert sum(ratios) / 4 == pytest.approx(ratio)


def test_learned_schedule_keeps_its_shape_and_meets_the_budget(family):
    learned = [1.0, 0.9, 0.6, 0.3]
    config = family.config(
        retention_ratio=0.5,
        retention_schedule="learned",
        retention_learned_schedule=learned,
        retention_first_gated_layer=1,
    )
    ratios = config.retention_layer_ratios()
    assert sum(ratios) / 4 == pytest.approx(0.5, abs=1e-9)
    assert ratios[0] == 1.0
    assert ratios[1] / ratios[3] == pytest.approx(0.9 / 0.3)
    # no schedule learned yet: falls back to uniform
    learned_config = family.config(retention_ratio=0.5, retention_schedule="learned", retention_first_gated_layer=1)
    assert learned_config.retention_layer_ratios() == [1.0] + [1 / 3] * 3
    learned_config = family.config(retention_ratio=0.5, retention_schedule="learned")
    assert learned_config.retention_layer_ratios() == [0.5] * 4  # the first gate sits before layer 0


def test_learned_schedule_is_capped_and_monotone(family):
    config = family.config(retention_ratio=0.9, retention_learned_schedule=[1.0, 0.95, 0.2, 0.1])
    ratios = config.retention_layer_ratios()
    assert all(r <= 1.0 for r in ratios)
    assert all(later <= earlier for earlier, later in pairwise(ratios))
    assert sum(ratios) / 4 == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("schedule", ["decay", "learned", [1.0, 0.8, 0.5, 0.3]])
def test_full_budget_keeps_every_token_exactly(family, schedule):
    """At rho 1 every schedule is all ones, not a rounding error short of it (which would cost a token)."""
    config = family.config(
        retention_ratio=0.65, retention_schedule=schedule, retention_learned_schedule=[0.8, 0.5, 0.3, 0.1]
    )
    assert config.retention_layer_ratios(1.0) == [1.0] * 4


def test_explicit_schedule(family):
    config = family.config(retention_schedule=[1.0, 0.6, 0.4, 0.2], retention_ratio=0.55)
    assert config.retention_layer_ratios() == [1.0, 0.6, 0.4, 0.2]


def test_round_trip_through_json(family, tmp_path):
    config = family.config(
        retention_ratio=0.3,
        retention_first_gated_layer=0,
        retention_scorer="mlp",
        retention_protected_token_ids=[5, 6],
        retention_learned_schedule=[0.9, 0.5, 0.2, 0.1],
    )
    config.save_pretrained(tmp_path)
    loaded = family.config_class.from_pretrained(tmp_path)
    for name in RetentionConfig.__dataclass_fields__:
        assert getattr(loaded, name) == getattr(config, name), name


def test_plain_checkpoint_config_converts(family, tmp_path):
    family.stock_config().save_pretrained(tmp_path)
    logger = logging.get_logger("transformers.configuration_utils")
    with CaptureLogger(logger) as captured:
        config = family.config_class.from_pretrained(tmp_path, retention_ratio=0.5)
    assert type(config) is family.config_class
    assert config.model_type == f"retention-{family.name}"
    assert config.retention_ratio == 0.5
    assert config.hidden_size == 32
    assert "to instantiate a model of type" not in captured.out
    other = [f for f in FAMILIES if f is not family][0]  # a checkpoint of the other family is not converted
    with CaptureLogger(logger) as captured:
        other.config_class.from_pretrained(tmp_path)
    assert "to instantiate a model of type" in captured.out
    with pytest.raises(ConfigError, match="got 1.5"):
        family.config_class.from_pretrained(tmp_path, retention_ratio=1.5)


def test_checkpoints_saved_before_budget_rounding_keep_ceil(family, tmp_path):
    family.config().save_pretrained(tmp_path / "new")
    assert family.config_class.from_pretrained(tmp_path / "new").retention_count_rounding == "budget"
    old = json.loads((tmp_path / "new" / "config.json").read_text())
    del old["retention_count_rounding"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    assert family.config_class.from_pretrained(tmp_path / "old").retention_count_rounding == "ceil"
    assert AutoConfig.from_pretrained(tmp_path / "old").retention_count_rounding == "ceil"
    overridden = family.config_class.from_pretrained(tmp_path / "old", retention_count_rounding="budget")
    assert overridden.retention_count_rounding == "budget"
    family.stock_config().save_pretrained(tmp_path / "vanilla")  # new to retention: today's rule
    assert family.config_class.from_pretrained(tmp_path / "vanilla").retention_count_rounding == "budget"
