"""Configurations of the retention model family.

The retention settings are defined once, in :class:`RetentionConfig`, and mixed into a stock
``BertConfig`` / ``RobertaConfig``. The fields are flat (``config.retention_ratio``, not
``config.retention.ratio``) so that ``from_pretrained(path, retention_ratio=0.3)`` overrides them the
same way it overrides any other config attribute.

This module imports nothing outside ``transformers`` / ``huggingface_hub``: it is copied next to the
weights for ``trust_remote_code`` loading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar, Literal

from huggingface_hub.dataclasses import strict, validated_field
from transformers import BertConfig, RobertaConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

SCHEDULE_NAMES = ("learned", "uniform", "geometric", "decay")
SCORER_NAMES = ("context", "bidirectional", "mlp")
ATTENTION_PRIOR_SOURCES = ("first_token", "question")
BUDGET_COSTS = ("probability", "l0")
COUNT_ROUNDINGS = ("budget", "ceil")
GATE_SAMPLINGS = ("hard_concrete", "sigmoid")
SELECTIONS = ("topk", "threshold")


def _is_real_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_ratio(value: Any) -> None:
    if not _is_real_number(value) or not 0.0 < value <= 1.0 or math.isnan(value):
        raise ValueError(f"retention_ratio must be a number in (0, 1], got {value!r}")


def _check_ratio_range(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_real_number(bound) for bound in value):
        raise ValueError(f"retention_trained_ratio_range must be None or two numbers (low, high), got {value!r}")
    if not 0.0 < value[0] <= value[1] <= 1.0:
        raise ValueError(f"retention_trained_ratio_range must satisfy 0 < low <= high <= 1, got {value!r}")


def _check_schedule(value: Any) -> None:
    if isinstance(value, str):
        if value not in SCHEDULE_NAMES:
            raise ValueError(f"retention_schedule must be one of {SCHEDULE_NAMES} or a list of floats, got {value!r}")
        return
    _check_fractions("retention_schedule", value)


def _check_learned_schedule(value: Any) -> None:
    if value is not None:
        _check_fractions("retention_learned_schedule", value)


def _check_fractions(name: str, values: Any) -> None:
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of per-layer keep fractions, got {values!r}")
    for index, value in enumerate(values):
        if not _is_real_number(value) or not 0.0 < value <= 1.0:
            raise ValueError(f"{name}[{index}] must be a number in (0, 1], got {value!r}")


def _check_first_gated_layer(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"retention_first_gated_layer must be an integer >= 0, got {value!r}")


def _check_match_window(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"retention_scorer_match_window must be an integer >= 0, got {value!r}")


def _check_scorer(value: Any) -> None:
    if value not in SCORER_NAMES:
        raise ValueError(f"retention_scorer must be one of {SCORER_NAMES}, got {value!r}")


def _check_attention_prior_source(value: Any) -> None:
    if value not in ATTENTION_PRIOR_SOURCES:
        raise ValueError(
            f"retention_scorer_attention_prior_source must be one of {ATTENTION_PRIOR_SOURCES}, got {value!r}"
        )


def _check_decay(value: Any) -> None:
    if not _is_real_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"retention_scorer_decay must be a number in [0, 1], got {value!r}")


def _check_schedule_decay(value: Any) -> None:
    if not _is_real_number(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"retention_schedule_decay must be a number in (0, 1], got {value!r}")


def _check_scorer_hidden_size(value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"retention_scorer_hidden_size must be a positive integer or None, got {value!r}")


def _check_beta(value: Any) -> None:
    if not _is_real_number(value) or not value > 0:
        raise ValueError(f"hard_concrete_beta (temperature) must be > 0, got {value!r}")


def _check_gamma(value: Any) -> None:
    if not _is_real_number(value) or not value < 0:
        raise ValueError(f"hard_concrete_gamma (lower stretch limit) must be < 0, got {value!r}")


def _check_zeta(value: Any) -> None:
    if not _is_real_number(value) or not value > 1:
        raise ValueError(f"hard_concrete_zeta (upper stretch limit) must be > 1, got {value!r}")


def _check_token_ids(name: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of token ids, got {value!r}")
    for token_id in value:
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ValueError(f"{name} must hold non-negative integers, got {token_id!r}")


def _check_protected_ids(value: Any) -> None:
    _check_token_ids("retention_protected_token_ids", value)


def _check_sentence_end_ids(value: Any) -> None:
    if value is not None:
        _check_token_ids("retention_scorer_match_sentence_end_ids", value)


def _check_min_tokens(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"retention_min_tokens must be an integer >= 1, got {value!r}")


def _check_gate_sampling(value: Any) -> None:
    if value not in GATE_SAMPLINGS:
        raise ValueError(f"retention_gate_sampling must be one of {GATE_SAMPLINGS}, got {value!r}")


def _check_selection(value: Any) -> None:
    if value not in SELECTIONS:
        raise ValueError(f"retention_inference_selection must be one of {SELECTIONS}, got {value!r}")


def _check_threshold(value: Any) -> None:
    if not _is_real_number(value) or not 0.0 < value < 1.0:
        raise ValueError(f"retention_threshold must be a probability in (0, 1), got {value!r}")


def _check_budget_cost(value: Any) -> None:
    if value not in BUDGET_COSTS:
        raise ValueError(f"retention_budget_cost must be one of {BUDGET_COSTS}, got {value!r}")


def _check_count_rounding(value: Any) -> None:
    if value not in COUNT_ROUNDINGS:
        raise ValueError(f"retention_count_rounding must be one of {COUNT_ROUNDINGS}, got {value!r}")


def _check_topk_noise(value: Any) -> None:
    if not _is_real_number(value) or not value >= 0 or math.isinf(value):
        raise ValueError(f"retention_topk_noise (Gumbel scale) must be a finite number >= 0, got {value!r}")


def _check_gate_bias(value: Any) -> None:
    if not _is_real_number(value) or math.isnan(value) or math.isinf(value):
        raise ValueError(f"retention_gate_init_bias must be a finite number, got {value!r}")


@dataclass(repr=False, eq=False, kw_only=True)
class RetentionConfig:
    """Adaptive Retention settings, shared by every retention config class.

    Args:
        retention_enabled: Turn retention off to get exactly the stock encoder on the same weights.
        retention_ratio: The budget rho in (0, 1]: the fraction of the dense encoder's token-layer work
            (sum over layers of the tokens each layer processes, over ``num_layers * real_tokens``) that
            the model may spend. Ungated layers count at full length. Normalised per example.
        retention_schedule: How the budget is split over layers at inference. ``"uniform"``: every gated
            layer keeps the same fraction of the example's tokens, chosen to meet ``retention_ratio``, so
            all the dropping happens at the first gate. ``"geometric"``: the ``j``-th gated layer keeps
            ``q ** j`` of the tokens (``j = 1, 2, ...``), with ``q`` chosen to meet ``retention_ratio``, so
            every gate drops a share of what is left and later gates decide with more context. At low
            budgets ``q`` is small, so the last layers keep almost nothing. ``"decay"``: every gated
            layer keeps ``retention_schedule_decay`` times the share of the layer before it, all scaled
            (and capped at 1) to meet ``retention_ratio``: the same shape at every budget, so a low budget
            thins every layer instead of starving the last ones (the default: it won the recipe
            ablation over three seeds, see docs/training.md).
            ``"learned"``: the per-layer keep ratios measured in training
            (``retention_learned_schedule``), rescaled to meet ``retention_ratio``; uniform until a
            schedule has been learned. A list: the fraction of the example's tokens each of the
            ``num_hidden_layers`` layers processes (non-increasing, 1.0 for ungated layers, its mean
            must equal ``retention_ratio``).
        retention_schedule_decay: The layer-to-layer ratio of the ``"decay"`` schedule, in (0, 1]; 1 is
            the uniform schedule.
        retention_learned_schedule: Per-layer keep ratios measured in training; written by
            ``RetentionTrainer`` at the end of Hard-Concrete training (top-k training writes none).
        retention_first_gated_layer: Index of the first layer preceded by a gate. ``0`` scores the
            embeddings and lets every layer run shorter; ``1`` lets layer 0 contextualise the tokens
            before the first decision.
        retention_scorer: ``"context"`` is the paper's Eq. 3 scorer with a running summary of the
            preceding kept tokens; ``"bidirectional"`` adds a second summary that runs right to left, so
            the first tokens are scored with context too; ``"mlp"`` is the Figure 1 token-wise MLP.
        retention_scorer_decay: The decay ``g`` of Eq. 3's running summaries.
        retention_scorer_hidden_size: Width of the scorer; ``None`` means ``hidden_size // 8``.
        retention_scorer_query: The scorer also reads the mean hidden state of the protected tokens (with
            ``retention_protect_first_segment``, the question of a QA input, with [CLS] and the separator), so a
            context token is scored with the question in view: ``s_t = v^T tanh(W h_t + U m_{t-1} + Q q) + b``.
            Adds one ``hidden -> width`` projection per gate (``query_proj``).
        retention_scorer_question_match: Every gate's score adds ``w * log(1 + n_t)``, where ``n_t`` counts the
            question tokens (the protected ones, as for ``retention_scorer_query``) whose hidden state is close to
            that of a token within ``retention_scorer_match_window`` alive tokens of ``t`` (a soft count: cosine
            similarity through a sigmoid around a learned threshold, starting at 0.9), and ``w`` is a learned scale
            per gate (starting at 1). It is the lexical prior of extractive QA, where the answer sits near words of
            the question, so that a gate before layer 0 can tell where the answer may be. Costs one ``(n, q)``
            similarity per gate, ``q`` being the longest question of the batch.
        retention_scorer_match_window: The half-width, in alive tokens, of ``retention_scorer_question_match``'s
            window.
        retention_scorer_match_sentence_end_ids: Token ids that end a sentence (for example those of ``.``, ``?``
            and ``!``). When set, ``retention_scorer_question_match`` counts over the alive tokens of ``t``'s
            sentence instead of the window (a sentence runs up to and including one of these ids; text without them
            is one sentence). Needs ``input_ids``.
        retention_scorer_attention_prior: Every gate's score adds ``w * log a_t``, where ``a_t`` is the attention
            the first token ([CLS] / ``<s>``) pays token ``t`` in the layer the gate feeds (EViT's importance, the
            ``cls_attention`` baseline), computed from that layer's own query and key weights without gradient, and
            ``w`` is a learned scale per gate (``attention_prior_scale``, starting at 1). With the scorer's small
            initial output, training starts from the ``cls_attention`` selection and learns to correct it.
            ``log a_t`` is centred over each row's tokens, so the scale learns the ranking, not the overall
            keep level. Costs every token's key projection once more per gate. Top-k selection only:
            threshold selection and Hard-Concrete training read the score as a probability, which the prior
            would shift, and refuse it.
        retention_scorer_attention_prior_source: Whose attention ``retention_scorer_attention_prior`` reads:
            ``"first_token"`` (the default), or ``"question"``: the attention the protected question pays token
            ``t``, averaged over the question's tokens ([CLS] and the separator with them), for extractive QA,
            whose head reads the context rather than [CLS]. Needs ``retention_protect_first_segment``. Costs the
            question's queries per gate, ``(q, n)`` dot products.
        retention_gate_init_bias: Initial bias of the scorer output. A positive bias starts training
            near keep-all, so the budget, not the initialisation, decides what is dropped.
        hard_concrete_beta / hard_concrete_gamma / hard_concrete_zeta: Hard-Concrete temperature and
            stretch interval (Louizos et al., 2018).
        retention_protected_token_ids: Token ids that are never dropped (for example ``[SEP]``). The
            first position ([CLS] / <s>) is always protected.
        retention_protect_first_segment: Also protect every token up to the first occurrence of a
            ``retention_protected_token_ids`` token: for a pair encoded ``[CLS] question [SEP] context
            [SEP]`` (or RoBERTa's ``<s> question </s></s> context </s>``), the question. Only the second
            segment then competes for the budget; the protected tokens still count towards it.
        retention_min_tokens: Every example keeps at least this many tokens (or all, if it is shorter).
        retention_gate_sampling: ``"hard_concrete"`` samples the paper's Eq. 6 gates in training;
            ``"sigmoid"`` uses the deterministic gate ``sigmoid(s)`` (the paper's "no Hard-Concrete" ablation).
        retention_inference_selection: ``"topk"`` keeps the scheduled ``r_l * T_i`` tokens per layer
            (rounded by ``retention_count_rounding``); ``"threshold"`` keeps every token whose keep probability reaches
            ``retention_threshold`` (the paper's threshold ablation; kept counts then vary per input).
        retention_threshold: The keep-probability threshold of ``"threshold"`` selection.
        retention_count_rounding: How ``r_l * T_i`` becomes a whole number of tokens. ``"budget"``: each
            example keeps ``round(sum_l r_l * T_i)`` token-layers in all, the layers with the largest
            fractional parts rounding up, so the budget holds on short inputs too. ``"ceil"``: every layer
            rounds up on its own, which overspends on short inputs (0.565 instead of 0.5 on SST-2's
            training phrases); the rule of checkpoints trained before the option existed.
        retention_sparse_training: In training, physically remove the tokens whose sampled gate is
            exactly 0. They carry no gradient, so the loss and gradients are those of the masked
            computation, for less work.
        retention_train_with_topk: In training, select tokens exactly as at inference (scheduled top-k by
            score, tokens physically removed) instead of sampling gates, so the training budget is exact and
            the encoder adapts to the tokens it will see. ``RetentionTrainer`` uses it for the whole budgeted
            phase (``selection_training="topk"``) or for its final steps (``topk_finetune_steps``).
        retention_topk_straight_through: In top-k training, pass the task gradient to the scores of the
            kept tokens: each kept token is scaled by ``exp(s - stop_gradient(s))`` (value 1) and its
            attention keys get ``s - stop_gradient(s)`` (value 0), so the forward pass is the exact top-k
            selection and a score learns how much its token's presence helps the loss.
        retention_topk_noise: In top-k training, the scale of the Gumbel noise added to the scores before
            selecting (Gumbel top-k: sampling without replacement), which lets tokens near the cut be tried;
            0 selects deterministically, as at inference.
        retention_budget_cost: What the budget counts in Hard-Concrete training. ``"probability"``: the
            paper's ``sum_t p_t`` with ``p = sigmoid(s)``. ``"l0"``: ``P(z != 0) = sigmoid(s - beta *
            log(-gamma / zeta))``, the probability that a gate lets its token through at all, which is the
            compute that training (and ``retention_sparse_training``) really spends.
        retention_budget_gradient: ``"bias"``: the budget penalty trains only the scorers' output biases;
            ``"full"``: every scorer weight, as in the paper.
        retention_detach_scorer_input: The scorers read the hidden states without sending gradients back
            into the encoder.
        retention_merge_dropped: With top-k selection (inference and top-k training), the tokens a gate
            drops are not lost: their mean hidden state rides along as one extra slot, which takes one of the
            kept slots (so the budget is unchanged) and counts as many keys in attention as the tokens it
            holds. Later gates fold the tokens they drop into it. It needs eager or sdpa attention.
        retention_restore_attention: Token-level heads (QA, token classification), top-k selection: before the
            head, every token dropped before the last layer attends once to the tokens the last layer kept, through
            the last layer's attention sublayer (its weights, no new ones), and is restored with that output instead
            of the representation it had when it was dropped, which a token dropped at the embeddings carries bare.
            Costs the queries, attention and output projection of one attention sublayer over every token. Other
            heads never restore, and ignore it.
        retention_trained_ratio_range: The budgets the checkpoint was trained to serve, ``[low, high]``: written by
            ``RetentionTrainer`` when it trains with ``retention_ratio_range`` (each example drawing its budget), so
            the card can say which per-call budgets the model learned; ``None`` for a model trained at one budget.
    """

    base_model_type: ClassVar[str] = ""
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "kept_positions",
        "kept_counts",
        "keep_ratio",
        "layer_keep_ratio",
        "expected_keep_ratio",
        "expected_layer_keep_ratio",
    ]

    retention_enabled: bool = True
    retention_ratio: float | int = validated_field(_check_ratio, default=0.5)
    retention_schedule: Literal["learned", "uniform", "geometric", "decay"] | list[float | int] = validated_field(
        _check_schedule, default="decay"
    )
    retention_schedule_decay: float | int = validated_field(_check_schedule_decay, default=0.8)
    retention_learned_schedule: list[float | int] | None = validated_field(_check_learned_schedule, default=None)
    retention_first_gated_layer: int = validated_field(_check_first_gated_layer, default=0)
    retention_scorer: Literal["context", "bidirectional", "mlp"] = validated_field(_check_scorer, default="context")
    retention_scorer_decay: float | int = validated_field(_check_decay, default=0.9)
    retention_scorer_hidden_size: int | None = validated_field(_check_scorer_hidden_size, default=None)
    retention_scorer_query: bool = False
    retention_scorer_attention_prior: bool = False
    retention_scorer_attention_prior_source: Literal["first_token", "question"] = validated_field(
        _check_attention_prior_source, default="first_token"
    )
    retention_scorer_question_match: bool = False
    retention_scorer_match_window: int = validated_field(_check_match_window, default=15)
    retention_scorer_match_sentence_end_ids: list[int] | None = validated_field(_check_sentence_end_ids, default=None)
    retention_gate_init_bias: float | int = validated_field(_check_gate_bias, default=3.0)
    hard_concrete_beta: float | int = validated_field(_check_beta, default=0.66)
    hard_concrete_gamma: float | int = validated_field(_check_gamma, default=-0.1)
    hard_concrete_zeta: float | int = validated_field(_check_zeta, default=1.1)
    retention_protected_token_ids: list[int] = validated_field(_check_protected_ids, default_factory=list)
    retention_protect_first_segment: bool = False
    retention_min_tokens: int = validated_field(_check_min_tokens, default=1)
    retention_gate_sampling: Literal["hard_concrete", "sigmoid"] = validated_field(
        _check_gate_sampling, default="hard_concrete"
    )
    retention_inference_selection: Literal["topk", "threshold"] = validated_field(_check_selection, default="topk")
    retention_threshold: float | int = validated_field(_check_threshold, default=0.5)
    retention_count_rounding: Literal["budget", "ceil"] = validated_field(_check_count_rounding, default="budget")
    retention_sparse_training: bool = False
    retention_train_with_topk: bool = False
    retention_topk_straight_through: bool = False
    retention_topk_noise: float | int = validated_field(_check_topk_noise, default=0.0)
    retention_budget_cost: Literal["probability", "l0"] = validated_field(_check_budget_cost, default="probability")
    retention_detach_scorer_input: bool = True
    retention_budget_gradient: Literal["bias", "full"] = "bias"
    retention_merge_dropped: bool = False
    retention_restore_attention: bool = False
    retention_trained_ratio_range: list[float | int] | None = validated_field(_check_ratio_range, default=None)

    @classmethod
    def get_config_dict(cls, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read a config file, converting a plain BERT/RoBERTa model type into the retention one.

        This is what lets ``RetentionBertConfig.from_pretrained(<bert dir>)`` (and so
        ``RetentionBertModel.from_pretrained(<bert dir>)``) load a vanilla checkpoint without a
        model-type mismatch warning.
        """
        config_dict, kwargs = super().get_config_dict(*args, **kwargs)  # type: ignore[misc]
        if config_dict.get("model_type") == cls.base_model_type:
            logger.info(f"Converting a `{cls.base_model_type}` config into a `{cls.model_type}` config.")  # type: ignore[attr-defined]
            config_dict = {**config_dict, "model_type": cls.model_type}  # type: ignore[attr-defined]
            config_dict.setdefault("retention_count_rounding", "budget")  # new to retention: today's rule
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """As ``PreTrainedConfig.from_dict``; a retention checkpoint saved before ``retention_count_rounding``
        existed keeps the rule it was trained and measured with (``"ceil"``). A vanilla BERT/RoBERTa config
        gets the current default."""
        saved_before_rounding = str(config_dict.get("model_type", "")).startswith("retention-") and (
            "retention_count_rounding" not in config_dict
        )
        if saved_before_rounding and "retention_count_rounding" not in kwargs:
            config_dict = {**config_dict, "retention_count_rounding": "ceil"}
        return super().from_dict(config_dict, **kwargs)  # type: ignore[misc]

    # ------------------------------------------------------------------ validation
    def set_retention_budget(self, ratio: float) -> None:
        """Make ``ratio`` the default budget. An explicit list schedule is rescaled to it (the rule a per-call
        budget follows), so that the list keeps meaning the default budget; named schedules adapt by themselves."""
        layer_ratios = self.retention_layer_ratios(ratio)
        if isinstance(self.retention_schedule, (list, tuple)):
            self.retention_schedule = layer_ratios
        self.retention_ratio = float(ratio)

    def validate_retention(self) -> None:
        """Cross-field checks (run by ``@strict`` at construction and by :meth:`retention_layer_ratios`)."""
        num_layers = self.num_hidden_layers  # type: ignore[attr-defined]
        first = self.retention_first_gated_layer
        if first >= num_layers:
            raise ValueError(
                f"retention_first_gated_layer={first} leaves no gated layer: the model has {num_layers} layers"
            )
        if isinstance(self.retention_schedule, (list, tuple)):
            self._validate_explicit_schedule(list(self.retention_schedule))
        elif self.retention_ratio < 1.0 and self.retention_ratio * num_layers <= first:
            raise ValueError(
                f"retention_ratio={self.retention_ratio} is unreachable: the {first} ungated layer(s) alone cost "
                f"{first}/{num_layers} = {first / num_layers:.3f} of the dense work. Raise retention_ratio or "
                f"lower retention_first_gated_layer."
            )
        if self.retention_protect_first_segment and not self.retention_protected_token_ids:
            raise ValueError(
                "retention_protect_first_segment needs the separator in retention_protected_token_ids (for example "
                "[tokenizer.sep_token_id]): the first segment ends at its first occurrence"
            )
        if self.retention_sparse_training and self.retention_gate_sampling != "hard_concrete":
            raise ValueError(
                "retention_sparse_training needs retention_gate_sampling='hard_concrete': sigmoid gates are never "
                "exactly zero, so no token could be removed"
            )
        if self.retention_scorer_attention_prior and self.retention_inference_selection == "threshold":
            raise ValueError(
                "retention_scorer_attention_prior needs retention_inference_selection='topk': threshold selection reads "
                "the score as a keep probability, which the attention prior would shift"
            )
        if self.retention_scorer_attention_prior_source == "question" and not self.retention_protect_first_segment:
            raise ValueError(
                "retention_scorer_attention_prior_source='question' needs retention_protect_first_segment=True: the "
                "question is the protected first segment"
            )
        if self.retention_scorer_match_sentence_end_ids and not self.retention_scorer_question_match:
            raise ValueError(
                f"retention_scorer_match_sentence_end_ids={self.retention_scorer_match_sentence_end_ids} sets the span "
                "of retention_scorer_question_match, which is off"
            )
        if self.retention_learned_schedule is not None and len(self.retention_learned_schedule) != num_layers:
            raise ValueError(
                f"retention_learned_schedule has {len(self.retention_learned_schedule)} entries, expected one per "
                f"layer ({num_layers})"
            )

    def _validate_explicit_schedule(self, schedule: list[float]) -> None:
        num_layers = self.num_hidden_layers  # type: ignore[attr-defined]
        first = self.retention_first_gated_layer
        if len(schedule) != num_layers:
            raise ValueError(f"retention_schedule has {len(schedule)} entries, expected one per layer ({num_layers})")
        if any(later > earlier for earlier, later in pairwise(schedule)):
            raise ValueError(f"retention_schedule must be non-increasing (drops are permanent), got {schedule}")
        if any(ratio != 1.0 for ratio in schedule[:first]):
            raise ValueError(
                f"retention_schedule must be 1.0 before retention_first_gated_layer={first}, got {schedule[:first]}"
            )
        mean = sum(schedule) / num_layers
        if abs(mean - self.retention_ratio) > 1e-3:
            raise ValueError(
                f"retention_schedule spends {mean:.4f} of the dense work but retention_ratio={self.retention_ratio}; "
                f"set retention_ratio={mean:.4f} or change the schedule"
            )

    # ------------------------------------------------------------------ derived values
    @property
    def retention_gated_layers(self) -> list[int]:
        """Indices of the layers that are preceded by a gate."""
        return list(range(self.retention_first_gated_layer, self.num_hidden_layers))  # type: ignore[attr-defined]

    @property
    def retention_scorer_width(self) -> int:
        """The scorer's hidden width (``retention_scorer_hidden_size`` or ``hidden_size // 8``)."""
        if self.retention_scorer_hidden_size is not None:
            return self.retention_scorer_hidden_size
        return max(1, self.hidden_size // 8)  # type: ignore[attr-defined]

    def retention_layer_ratios(self, ratio: float | None = None) -> list[float]:
        """The fraction of each example's real tokens that every layer processes at inference.

        One entry per layer, non-increasing, 1.0 for ungated layers. The mean equals the budget
        (``ratio`` when given, else ``retention_ratio``), before the per-example rounding. A budget other
        than ``retention_ratio`` rescales the schedule's shape (explicit or learned) to meet it.
        """
        self.validate_retention()
        num_layers = self.num_hidden_layers  # type: ignore[attr-defined]
        first = self.retention_first_gated_layer
        budget = self.retention_ratio
        if ratio is not None:
            _check_ratio(ratio)
            if ratio < 1.0 and ratio * num_layers <= first:
                raise ValueError(
                    f"retention_ratio={ratio} is unreachable: the {first} ungated layer(s) alone cost "
                    f"{first}/{num_layers} = {first / num_layers:.3f} of the dense work"
                )
            budget = float(ratio)
        schedule = self.retention_schedule
        if isinstance(schedule, (list, tuple)):
            if budget == self.retention_ratio:
                return [float(value) for value in schedule]
            return _rescale_to_budget(list(schedule), first, budget)
        if schedule == "learned" and self.retention_learned_schedule is not None:
            return _rescale_to_budget(self.retention_learned_schedule, first, budget)
        if schedule == "geometric":
            return [1.0] * first + _geometric_schedule(num_layers - first, budget * num_layers - first)
        if schedule == "decay":
            shape = [1.0] * first + [self.retention_schedule_decay**index for index in range(num_layers - first)]
            return _rescale_to_budget(shape, first, budget)
        gated_ratio = (budget * num_layers - first) / (num_layers - first)
        return [1.0] * first + [min(1.0, gated_ratio)] * (num_layers - first)


def _geometric_schedule(gated_layers: int, target: float) -> list[float]:
    """``[q, q**2, ..., q**gated_layers]`` whose sum is ``target`` (found by bisection on ``q`` in (0, 1])."""
    if target >= gated_layers:
        return [1.0] * gated_layers
    low, high = 0.0, 1.0
    for _ in range(100):
        middle = (low + high) / 2.0
        spent = sum(middle**power for power in range(1, gated_layers + 1))
        low, high = (middle, high) if spent < target else (low, middle)
    return [high**power for power in range(1, gated_layers + 1)]


def _rescale_to_budget(learned: list[float], first_gated: int, budget: float) -> list[float]:
    """Scale the gated layers of a learned schedule so that the mean over layers equals ``budget``.

    The learned schedule fixes the *shape* (how the budget is split over depth); the scale makes the
    inference cost match the configured budget exactly, even if training ended slightly off budget.
    """
    num_layers = len(learned)
    if budget >= 1.0:  # the one schedule at full budget; the bisection below would land a rounding error short of it
        return [1.0] * num_layers
    gated = [float(ratio) for ratio in learned[first_gated:]]
    target = budget * num_layers - first_gated

    def spent(scale: float) -> float:
        return sum(min(1.0, scale * ratio) for ratio in gated)

    low, high = 0.0, 1.0
    while spent(high) < target and high < 1e6:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2.0
        low, high = (middle, high) if spent(middle) < target else (low, middle)
    scaled = [min(1.0, high * ratio) for ratio in gated]
    for index in range(1, len(scaled)):  # drops are permanent: never keep more than the layer before
        scaled[index] = min(scaled[index], scaled[index - 1])
    return [1.0] * first_gated + scaled


@strict
class RetentionBertConfig(RetentionConfig, BertConfig):
    """A ``BertConfig`` with the Adaptive Retention settings of :class:`RetentionConfig`."""

    model_type = "retention-bert"
    base_model_type = "bert"


@strict
class RetentionRobertaConfig(RetentionConfig, RobertaConfig):
    """A ``RobertaConfig`` with the Adaptive Retention settings of :class:`RetentionConfig`."""

    model_type = "retention-roberta"
    base_model_type = "roberta"


__all__ = ["RetentionBertConfig", "RetentionConfig", "RetentionRobertaConfig"]
