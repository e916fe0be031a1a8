"""The retention mechanism, written once for every encoder family.

Data path: input ids -> stock embeddings -> [score -> select (gather) -> stock layer]* ->
restore (token-level heads only) -> stock head.

``RetentionEncoder`` owns the stock layers (``encoder.layer.{i}``, so vanilla checkpoints load) and one
scorer per gated layer (``encoder.gates.{i}``). It runs in one of three modes:

* dense: retention disabled, numerically identical to the stock encoder;
* soft (``model.train()``): full-length tensors, Hard-Concrete gates multiplied along depth, applied
  to the hidden states and as a log-mask to the attention keys; returns the differentiable expected
  keep ratios a trainer needs for the budget;
* compact (``model.eval()``): at every gated layer each example keeps its top ``r_l * T_i`` surviving
  tokens (rounded so that its total over layers is its budget), which are gathered into shorter tensors,
  in order.

The family modules (``modeling_retention_bert.py``, ``modeling_retention_roberta.py``) only plug in
their stock embeddings, layers, pooler and heads through the mixins below. Imports stay relative so
``trust_remote_code`` can copy the files next to the weights.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import transformers
from torch import nn
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    ModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.hub import hf_api
from transformers.utils.output_capturing import capture_outputs

from .configuration_retention import RetentionConfig, _check_ratio
from .gates import (
    BidirectionalContextScorer,
    ContextScorer,
    MLPScorer,
    QuestionMatch,
    alive_first,
    gather_slots,
    gumbel_noise,
    hard_concrete_sample,
    is_tracing,
    masked_slots,
    received_attention,
    scatter_to_positions,
    scheduled_keep_counts,
    select_kept_slots,
)


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class RetentionStatistics:
    """What a retention forward pass reports besides the usual outputs.

    Args:
        kept_counts: ``(batch, num_layers)`` real tokens processed by each layer, per example.
        kept_positions: In eval mode, one ``(batch, n_l)`` tensor per layer: the original position of
            every token that layer processed, in order, ``-1`` in padding slots.
        keep_ratio: ``(batch,)`` realised fraction of the dense token-layer work.
        layer_keep_ratio: ``(batch, num_layers)`` realised fraction of each example's real tokens that
            each layer processed.
        expected_keep_ratio: ``(batch,)`` in training: the differentiable expected fraction of the
            dense work under the sampled gates (the quantity the budget constrains).
        expected_layer_keep_ratio: ``(batch, num_layers)`` in training: the same, per layer.
        gate_scores: In training, one entry per layer: the ``(batch, n_l)`` scores of the slots the gate
            before that layer chose from, ``None`` where no gate scored (what ranking distillation teaches).
        gate_positions: In training, the matching ``(batch, n_l)`` original positions of those slots, ``-1``
            where the gate cannot drop the slot (padding, protected tokens, tokens already dropped).
    """

    kept_counts: torch.LongTensor | None = None
    kept_positions: tuple[torch.LongTensor, ...] | None = None
    keep_ratio: torch.FloatTensor | None = None
    layer_keep_ratio: torch.FloatTensor | None = None
    expected_keep_ratio: torch.FloatTensor | None = None
    expected_layer_keep_ratio: torch.FloatTensor | None = None
    gate_scores: tuple[torch.FloatTensor, ...] | None = None
    gate_positions: tuple[torch.LongTensor, ...] | None = None

    def retention_statistics(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in RetentionStatistics.__dataclass_fields__}


@dataclass
class RetentionModelOutput(RetentionStatistics, BaseModelOutputWithPooling):
    """``BaseModelOutputWithPooling`` plus :class:`RetentionStatistics`.

    In eval mode with retention active, ``last_hidden_state`` holds only the tokens the last layer
    processed (``kept_positions[-1]`` says where they came from), unless the model was called with
    ``restore_dropped_tokens=True``; ``hidden_states`` entries shrink with depth in the same way.
    """


@dataclass
class RetentionSequenceClassifierOutput(RetentionStatistics, SequenceClassifierOutput):
    """``SequenceClassifierOutput`` plus :class:`RetentionStatistics`."""


@dataclass
class RetentionTokenClassifierOutput(RetentionStatistics, TokenClassifierOutput):
    """``TokenClassifierOutput`` plus :class:`RetentionStatistics`; logits cover every input position."""


@dataclass
class RetentionQuestionAnsweringModelOutput(RetentionStatistics, QuestionAnsweringModelOutput):
    """``QuestionAnsweringModelOutput`` plus :class:`RetentionStatistics`; logits cover every input position."""


@dataclass
class RetentionSentenceScoringOutput(RetentionStatistics, ModelOutput):
    """Extractive summarisation outputs: one score per sentence marker, plus :class:`RetentionStatistics`.

    Args:
        loss: Binary cross-entropy over the labelled sentences (labels ``-100`` are ignored).
        sentence_logits: ``(batch, max_sentences)``: the logit of each sentence, in the order of
            ``sentence_positions``; ``0`` in padding slots.
        sentence_mask: ``(batch, max_sentences)``: True where a sentence is.
    """

    loss: torch.FloatTensor | None = None
    sentence_logits: torch.FloatTensor | None = None
    sentence_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class _EncoderResult:
    last_hidden_state: torch.Tensor
    statistics: dict[str, object]


# ---------------------------------------------------------------------------------------------- encoder
LEARNED_SCORERS = (ContextScorer, MLPScorer)  # BidirectionalContextScorer is a ContextScorer
ATTENTION_PRIOR_FLOOR = 1e-6  # log a_t of a token nobody attends to: finite, so the ranking stays defined


def build_scorer(config: RetentionConfig) -> nn.Module:
    match_window = config.retention_scorer_match_window if config.retention_scorer_question_match else None
    if config.retention_scorer in ("context", "bidirectional"):
        scorer_class = ContextScorer if config.retention_scorer == "context" else BidirectionalContextScorer
        return scorer_class(
            config.hidden_size,
            config.retention_scorer_width,
            config.retention_scorer_decay,
            max_length=config.max_position_embeddings,
            query=config.retention_scorer_query,
            attention_prior=config.retention_scorer_attention_prior,
            match_window=match_window,
        )
    return MLPScorer(
        config.hidden_size,
        config.retention_scorer_width,
        query=config.retention_scorer_query,
        attention_prior=config.retention_scorer_attention_prior,
        match_window=match_window,
    )


def additive_key_mask(gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``log(gate)`` on the keys as an additive ``(batch, 1, 1, seq)`` mask; exact zeros become the dtype minimum.

    Softmax weights then scale with the gate, so a fading token fades out of everyone's attention.
    """
    gate = gate.to(torch.promote_types(gate.dtype, dtype))  # float64 models keep their precision
    log_gate = torch.where(gate > 0, torch.log(gate.clamp_min(1e-30)), torch.finfo(gate.dtype).min)
    return log_gate.clamp_min(torch.finfo(dtype).min).to(dtype)[:, None, None, :]


def attend_to_kept(
    layer: nn.Module, queries: torch.Tensor, kept: torch.Tensor, kept_real: torch.Tensor
) -> torch.Tensor:
    """One pass of ``layer``'s attention sublayer in which every row of ``queries`` ``(batch, n, hidden)`` attends to
    the real slots of ``kept`` ``(batch, w, hidden)``: the layer's own query, key, value and output weights and its
    LayerNorm (``retention_restore_attention``; no new parameter, so a stock checkpoint has everything it uses)."""
    attention = layer.attention
    heads, size = attention.self.num_attention_heads, attention.self.attention_head_size
    batch, length, _ = queries.shape

    def split(states: torch.Tensor) -> torch.Tensor:  # (batch, slots, hidden) -> (batch, heads, slots, size)
        return states.view(batch, -1, heads, size).transpose(1, 2)

    query = split(attention.self.query(queries))
    key, value = split(attention.self.key(kept)), split(attention.self.value(kept))
    mask = additive_key_mask(kept_real.to(query.dtype), query.dtype)
    if is_tracing():  # the number of queries depends on the data: broadcasting one mask row would guard on it being 1
        mask = mask.expand(-1, -1, query.shape[2], -1)
    # one fused kernel: the (n, w) logits, their mask, softmax and weighted sum were 13 % of a MiniLM QA forward at
    # rho 0.5 as separate ops (384 tokens, batch 32), several times the projections' cost
    context = nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=attention.self.dropout.p if layer.training else 0.0,
        scale=attention.self.scaling,
    )
    return attention.output(context.transpose(1, 2).reshape(batch, length, heads * size), queries)


def _per_call_budget(retention_ratio, batch_size: int) -> float | list[float] | None:
    """Check a call's ``retention_ratio``: ``None``, one number, or one number per example (a sequence or a tensor
    of ``batch_size`` values); returned as a float or a list of floats."""
    if retention_ratio is None:
        return None
    if isinstance(retention_ratio, torch.Tensor):
        if is_tracing():
            raise NotImplementedError(
                "a per-call retention_ratio cannot be traced (exported): set config.retention_ratio"
            )
        if retention_ratio.dim() > 1:
            raise ValueError(
                f"retention_ratio must be a number or one number per example, got a tensor of shape "
                f"{tuple(retention_ratio.shape)}"
            )
        retention_ratio = retention_ratio.item() if retention_ratio.dim() == 0 else retention_ratio.tolist()
    if isinstance(retention_ratio, (list, tuple)):
        if len(retention_ratio) != batch_size:
            raise ValueError(
                f"retention_ratio has {len(retention_ratio)} values, expected one per example ({batch_size})"
            )
        for value in retention_ratio:
            _check_ratio(value)
        values = [float(value) for value in retention_ratio]
        return values[0] if len(set(values)) == 1 else values
    _check_ratio(retention_ratio)
    return float(retention_ratio)


def _is_per_example(retention_ratio) -> bool:
    """Whether a call's ``retention_ratio`` gives one budget per example (a sequence, or a 1-d tensor)."""
    return isinstance(retention_ratio, (list, tuple)) or (
        isinstance(retention_ratio, torch.Tensor) and retention_ratio.dim() == 1
    )


def _as_list(budget: float | list[float]) -> list[float]:
    return budget if isinstance(budget, list) else [budget]


class RetentionEncoder(nn.Module):
    """Stock encoder layers with a gate (scorer) in front of every layer from ``retention_first_gated_layer`` on."""

    def __init__(self, config: RetentionConfig, layer_class: type[nn.Module]):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([layer_class(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.gates = nn.ModuleDict({str(i): build_scorer(config) for i in config.retention_gated_layers})

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        protected: torch.Tensor,
        restore_dropped_tokens: bool = False,
        retention_ratio: float | torch.Tensor | list[float] | None = None,
        sentences: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> _EncoderResult:
        """``sentences`` ``(batch, seq)``: each token's sentence id, which ``retention_scorer_question_match`` counts
        within when ``retention_scorer_match_sentence_end_ids`` is set (see :func:`sentence_ids`)."""
        config = self.config
        protected = protected & attention_mask.bool()  # a protected id in padding is still padding
        # Per-example budgets in straight-through top-k training (RetentionTrainer's retention_ratio_range): every
        # gate trains its scores on every row, also where the row (or the whole batch) keeps every token, so that a
        # row's gradient does not depend on the budgets beside it in its batch
        every_row_trains = (
            self.training
            and config.retention_train_with_topk
            and config.retention_topk_straight_through
            and _is_per_example(retention_ratio)
        )
        retention_ratio = _per_call_budget(retention_ratio, hidden_states.shape[0])
        budget = config.retention_ratio if retention_ratio is None else retention_ratio
        # Budget 1 is the stock encoder in training too (no gate is sampled; see above for per-example budgets); at
        # inference the top-k at budget 1 keeps every token anyway and reports the kept positions, and threshold
        # selection ignores the budget
        if not config.retention_enabled or (self.training and min(_as_list(budget)) >= 1.0 and not every_row_trains):
            return self._dense_forward(hidden_states, attention_mask, **kwargs)
        gated = self.config.retention_gated_layers
        if [str(i) for i in gated] != list(self.gates.keys()):
            raise ValueError(
                f"retention_first_gated_layer={self.config.retention_first_gated_layer} does not match the gates this "
                f"model was built with (before layers {list(self.gates.keys())}); rebuild the model to change it"
            )
        if (
            retention_ratio is not None
            and config.retention_enabled
            and (
                (not self.training and config.retention_inference_selection == "threshold")
                or (self.training and not config.retention_train_with_topk)
            )
        ):
            mode = "Hard-Concrete training" if self.training else "threshold selection"
            raise ValueError(
                f"retention_ratio={retention_ratio} was given, but {mode} does not select by a budget: the call "
                "would ignore it (per-call budgets work with top-k selection, at inference and in top-k training)"
            )
        if config.retention_scorer_attention_prior and (
            (self.training and not config.retention_train_with_topk)
            or (not self.training and config.retention_inference_selection == "threshold")
        ):
            mode = "Hard-Concrete training" if self.training else "threshold selection"
            raise ValueError(
                f"retention_scorer_attention_prior works with top-k selection only: {mode} reads the score as a keep "
                "probability, which the prior would shift (train with retention_train_with_topk, as "
                "RetentionTrainer's selection_training='topk' does)"
            )
        if self.training and not self.config.retention_train_with_topk:
            return self._soft_forward(
                hidden_states, attention_mask, protected, restore_dropped_tokens, sentences, **kwargs
            )
        return self._compact_forward(
            hidden_states,
            attention_mask,
            protected,
            restore_dropped_tokens,
            sentences,
            retention_ratio,
            every_row_trains=every_row_trains,
            **kwargs,
        )

    def _layer_ratios(self, ratio: float | list[float] | None) -> list[float] | list[list[float]]:
        """The schedule at this call's budget: one list of layer ratios, or one per example for per-example budgets
        (computed once per distinct budget)."""
        if not isinstance(ratio, list):
            return self.config.retention_layer_ratios(ratio)
        schedules = {value: self.config.retention_layer_ratios(value) for value in set(ratio)}
        return [schedules[value] for value in ratio]

    def _score(self, index: int, hidden_states, alive, query_mask, sentences=None) -> torch.Tensor:
        """The logits of the gate before layer ``index``, with the gate's priors (question match, attention) added; a
        query-aware scorer also gets the query tokens' mask (any other scorer, such as the training-free baselines that
        stand in for the gates, keeps the two-argument call)."""
        gate = self.gates[str(index)]
        scores = (
            gate(hidden_states, alive, query_mask) if self.config.retention_scorer_query else gate(hidden_states, alive)
        )
        if not isinstance(gate, LEARNED_SCORERS):  # a training-free baseline standing in for the gate ranks alone
            return scores
        matching, scale = gate.question_match is not None, gate.attention_prior_scale
        if self.config.retention_scorer_question_match != matching:
            raise ValueError(
                f"retention_scorer_question_match={self.config.retention_scorer_question_match}, but this model's "
                f"gates were built {'with' if matching else 'without'} it; rebuild the model (from_pretrained with the "
                "option) to change it"
            )
        if self.config.retention_scorer_attention_prior != (scale is not None):
            built = "with" if scale is not None else "without"
            raise ValueError(
                f"retention_scorer_attention_prior={self.config.retention_scorer_attention_prior}, but this model's "
                f"gates were built {built} the prior's scale; rebuild the model (from_pretrained with the option) to "
                "change it"
            )
        if matching:
            scores = scores + gate.question_match(hidden_states, alive, query_mask, sentences)
        if scale is not None:
            scores = scores + scale.float() * self._log_attention_prior(index, hidden_states, alive, query_mask)
        return scores

    def _log_attention_prior(
        self, index: int, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor
    ) -> torch.Tensor:
        """``log a_t`` centred over each row's alive tokens: the attention of the first token, or of the question
        (``query_mask``, with ``retention_scorer_attention_prior_source='question'``), in layer ``index`` (its own
        weights), a fixed input to the gate.

        No gradient flows through it: the selection's gradient trains the scorer and its scale, not the layer's
        attention. Centring leaves every row's ranking as it is, and keeps the row mean (about ``-log n``) out of the
        scale's gradient: without it, the push to keep more or fewer tokens overall, which the scorer's bias already
        takes, would move the scale with the sequence length."""
        attention = self.layer[index].attention.self
        with torch.no_grad():
            from_question = self.config.retention_scorer_attention_prior_source == "question"
            received = received_attention(
                hidden_states,
                alive,
                attention.query,
                attention.key,
                attention.num_attention_heads,
                attention.scaling,
                sources=query_mask if from_question else None,
            )
            log_received = torch.log(received.clamp_min(ATTENTION_PRIOR_FLOOR))
            weights = alive.to(log_received.dtype)
            mean = (log_received * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
            return (log_received - mean) * weights

    def _catch_up(self, restored, real, final, final_real, final_positions) -> torch.Tensor:
        """``retention_restore_attention``: the tokens dropped before the last layer attend once to the tokens it
        kept (its output), through the last layer's attention sublayer, and take that output; a token dropped at
        the embeddings then reaches the head with context from the deepest states instead of none. The tokens the
        last layer kept, and padding, are left as they are (so rho = 1 is the stock encoder)."""
        kept = scatter_to_positions(  # 1 at the positions the last layer kept
            real.new_zeros(real.shape, dtype=restored.dtype).unsqueeze(-1),
            final_real.to(restored.dtype).unsqueeze(-1),
            final_positions.masked_fill(~final_real, -1),
        )[..., 0]
        slots, valid = masked_slots(real & (kept == 0))  # the dropped tokens only: no pass for the kept ones
        caught_up = attend_to_kept(self.layer[-1], gather_slots(restored, slots), final, final_real)
        return scatter_to_positions(restored, caught_up, slots.masked_fill(~valid, -1))

    def _check_training_attention(self, what: str = "Training with retention applies the gates") -> None:
        if self.config._attn_implementation not in ("eager", "sdpa"):
            raise ValueError(
                f"{what} as an additive attention mask, which needs attn_implementation 'eager' or 'sdpa', got "
                f"{self.config._attn_implementation!r}"
            )

    def _mask(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor | None:
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=padding_mask)

    def _dense_forward(self, hidden_states, attention_mask, **kwargs) -> _EncoderResult:
        mask = self._mask(hidden_states, attention_mask)
        for layer in self.layer:
            hidden_states = layer(hidden_states, mask, **kwargs)
        real_lengths = attention_mask.sum(dim=1)
        batch_size, num_layers = hidden_states.shape[0], len(self.layer)
        ones = hidden_states.new_ones(batch_size, num_layers, dtype=torch.float32)
        statistics = {
            "kept_counts": real_lengths.long().unsqueeze(1).expand(batch_size, num_layers),
            "keep_ratio": ones[:, 0],
            "layer_keep_ratio": ones,
        }
        return _EncoderResult(hidden_states, statistics)

    # -------------------------------------------------------------------------------- gates
    @staticmethod
    def _keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
        """The retention probability ``p = sigmoid(s)`` of the paper's Eq. 2-3: the budget counts ``sum_t p_t``
        (with ``retention_budget_cost="probability"``) and the threshold ablation compares it with
        ``retention_threshold``."""
        return torch.sigmoid(log_alpha)

    def _budget_cost(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """What one gate costs the budget: ``p = sigmoid(s)`` (the paper), or with ``retention_budget_cost="l0"``
        the probability ``P(z != 0) = sigmoid(s - beta * log(-gamma / zeta))`` that the Hard-Concrete gate
        is non-zero, i.e. that the token is processed at all (Louizos et al., 2018, Eq. 12)."""
        config = self.config
        if config.retention_budget_cost == "l0" and config.retention_gate_sampling == "hard_concrete":
            shift = config.hard_concrete_beta * math.log(-config.hard_concrete_gamma / config.hard_concrete_zeta)
            return torch.sigmoid(log_alpha - shift)
        return torch.sigmoid(log_alpha)

    def _sample_gates(self, log_alpha: torch.Tensor, positions: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Relaxed training gates. The noise is drawn per original position, so a token gets the same gate
        whether the batch is full-length (masked training) or compacted (sparse training)."""
        config = self.config
        if config.retention_gate_sampling == "sigmoid":
            return torch.sigmoid(log_alpha)
        noise = torch.rand(log_alpha.shape[0], seq_len, device=log_alpha.device)
        noise = noise.gather(1, positions.clamp(min=0))
        return hard_concrete_sample(
            log_alpha, config.hard_concrete_beta, config.hard_concrete_gamma, config.hard_concrete_zeta, noise=noise
        )

    # -------------------------------------------------------------------------------- top-k: gather
    def _compact_forward(
        self,
        hidden_states,
        attention_mask,
        protected,
        restore,
        sentences=None,
        ratio: float | list[float] | None = None,
        every_row_trains: bool = False,
        **kwargs,
    ) -> _EncoderResult:
        """Scheduled top-k selection with physical removal: inference, and top-k training.

        In training (``retention_train_with_topk``) the selection is the same, at the budget ``ratio`` (the
        trainer's annealed target), optionally perturbed by Gumbel noise; with
        ``retention_topk_straight_through`` the kept tokens carry ``exp(s - sg(s))`` on their hidden states
        and ``s - sg(s)`` on their attention keys, accumulated along depth like the soft gates, so the
        values are those of the selection (exactly, with eager attention; up to kernel rounding with sdpa, whose
        masked path differs) and the scorers still receive the task gradient. ``every_row_trains`` (per-example
        budgets in straight-through training) runs that gate also where no row drops a token, which an inference
        pass skips.
        """
        config = self.config
        training = self.training
        straight_through = training and config.retention_topk_straight_through
        noise_scale = float(config.retention_topk_noise) if training else 0.0
        if straight_through:
            self._check_training_attention()
        real = attention_mask.bool()
        real_lengths = real.sum(dim=1)
        protected_counts = protected.sum(dim=1)
        by_threshold = config.retention_inference_selection == "threshold"
        # Eager: every tensor length of the pass is known from one host sync, and a gate whose counts keep every
        # token is skipped. Traced (ONNX export, torch.export): no host value exists, so the lengths stay tensors
        # (``max`` of the counts) and every gate selects; selecting all tokens keeps them in order, so the result
        # is the same.
        traced = is_tracing()
        if not by_threshold:
            scheduled = scheduled_keep_counts(
                real_lengths,
                protected_counts,
                self._layer_ratios(ratio),
                config.retention_min_tokens,
                config.retention_count_rounding,
            )
            scheduled_host = None if traced else scheduled.tolist()
        current = real_lengths.clamp(min=1)
        current_host = None if traced else current.tolist()

        batch_size, seq_len = real.shape
        positions = torch.arange(seq_len, device=real.device).expand(batch_size, seq_len)
        mask = self._mask(hidden_states, attention_mask)
        restored = hidden_states if restore else None
        log_gate = None  # straight-through: the kept tokens' accumulated s - sg(s) (value 0)
        kept_positions, kept_counts = [], []
        gate_scores, gate_positions = [None] * len(self.layer), [None] * len(self.layer)
        merge = config.retention_merge_dropped
        if merge:  # the dropped tokens' mean rides along as one extra slot, weighted in attention by its count
            if traced:
                raise NotImplementedError("retention_merge_dropped cannot be traced (exported) yet")
            self._check_training_attention("retention_merge_dropped weights the merged slot's attention")
            merged = hidden_states.new_zeros(batch_size, 1, hidden_states.shape[-1])
            mass = hidden_states.new_zeros(batch_size)
            mask = self._key_mask_with_merged(real, log_gate, mass, hidden_states.dtype)
        for index, layer in enumerate(self.layer):
            if str(index) in self.gates:
                scores = None
                if by_threshold:
                    scores = self._score(index, hidden_states, real, protected & real, sentences)
                    passing = (self._keep_probability(scores) >= config.retention_threshold) | protected
                    keep = (passing & real).sum(dim=1).clamp(min=config.retention_min_tokens)
                    keep = torch.minimum(keep, current)
                    keep_host = None if traced else keep.tolist()
                else:
                    keep = scheduled[:, index]
                    keep_host = None if traced else [row[index] for row in scheduled_host]
                if merge:  # the merged slot counts as one of the kept slots
                    keep = self._make_room_for_merged(keep, current, mass, protected)
                    keep_host = keep.tolist()
                drops = traced or any(k < c for k, c in zip(keep_host, current_host, strict=True))
                if drops or every_row_trains:
                    if scores is None:
                        detach = training and config.retention_detach_scorer_input
                        scorer_input = hidden_states.detach() if detach else hidden_states
                        scores = self._score(index, scorer_input, real, protected & real, sentences)
                    if training:
                        gate_scores[index] = scores
                        gate_positions[index] = positions.masked_fill(~real | protected, -1)
                if not drops and every_row_trains:  # every token stays: the straight-through gates alone
                    log_gate = self._add_straight_through(log_gate, scores, protected, real)
                    mask = self._straight_through_mask(real, log_gate, mass if merge else None, hidden_states.dtype)
                elif drops:
                    selection_scores = scores.detach()
                    if noise_scale > 0:
                        selection_scores = selection_scores + noise_scale * gumbel_noise(scores.shape, scores.device)
                    if traced:
                        # eager skips a gate at which no row drops a token, keeping the width (and any padding
                        # slots beyond the longest row); the graph selects at that same width
                        full = torch.ones_like(real[:1], dtype=torch.long).sum()
                        width = torch.where((keep == current).all(), full, keep.max()).item()
                        torch._check(width >= 1)  # a data-dependent length: the bounds the exporter needs
                        torch._check(width <= hidden_states.shape[1])
                    else:
                        width = max(keep_host)
                    slots, valid = select_kept_slots(selection_scores, real, protected, keep, width)
                    if merge:
                        merged, mass = self._merge_dropped(hidden_states, real, slots, valid, merged, mass)
                    if restore:
                        restored = scatter_to_positions(restored, hidden_states, positions)
                    hidden_states = gather_slots(hidden_states, slots)
                    # a dropped token keeps what it had when it left; a padding slot that stays is written back
                    positions = gather_slots(positions, slots).masked_fill(~valid & gather_slots(real, slots), -1)
                    real = gather_slots(real, slots) & valid
                    protected = gather_slots(protected, slots) & valid
                    if sentences is not None:
                        sentences = gather_slots(sentences, slots)
                    if straight_through:
                        kept_gates = None if log_gate is None else gather_slots(log_gate, slots)
                        log_gate = self._add_straight_through(kept_gates, gather_slots(scores, slots), protected, real)
                    if merge or straight_through:
                        mask = self._straight_through_mask(real, log_gate, mass if merge else None, hidden_states.dtype)
                    else:
                        mask = self._mask(hidden_states, real)
                    current, current_host = keep, keep_host
            kept_positions.append(positions.masked_fill(~real, -1))
            kept_counts.append(real.sum(dim=1) + (mass > 0).long() if merge else real.sum(dim=1))
            layer_input = hidden_states
            if log_gate is not None:
                layer_input = hidden_states * torch.exp(log_gate).unsqueeze(-1).to(hidden_states.dtype)
            if merge:
                output = layer(torch.cat([layer_input, merged], dim=1), mask, **kwargs)
                hidden_states, merged = output[:, :-1], output[:, -1:]
            else:
                hidden_states = layer(layer_input, mask, **kwargs)
        if restore:  # padding slots are restored too, so that rho = 1 reproduces the stock outputs everywhere
            final, final_real = hidden_states, real
            hidden_states = scatter_to_positions(restored, hidden_states, positions)
            if config.retention_restore_attention:
                hidden_states = self._catch_up(hidden_states, attention_mask.bool(), final, final_real, positions)

        kept_counts = torch.stack(kept_counts, dim=1)
        layer_keep_ratio = kept_counts.float() / real_lengths.clamp(min=1).unsqueeze(1).float()
        statistics = {
            "kept_counts": kept_counts,
            "kept_positions": tuple(kept_positions),
            "keep_ratio": layer_keep_ratio.mean(dim=1),
            "layer_keep_ratio": layer_keep_ratio,
        }
        if training:
            statistics.update(gate_scores=tuple(gate_scores), gate_positions=tuple(gate_positions))
        return _EncoderResult(hidden_states, statistics)

    @staticmethod
    def _make_room_for_merged(
        keep: torch.Tensor, current: torch.Tensor, mass: torch.Tensor, protected: torch.Tensor
    ) -> torch.Tensor:
        """Real tokens to keep when the merged slot takes one of the ``keep`` slots: one fewer in every row that
        has or is about to get a merged slot, never fewer than its protected tokens or one token."""
        has_slot = (mass > 0) | (keep < current)
        floor = protected.sum(dim=1).clamp(min=1)
        return torch.minimum(keep, torch.maximum(keep - has_slot.long(), floor))

    @staticmethod
    def _add_straight_through(log_gate, scores, protected, real) -> torch.Tensor:
        """A gate's straight-through term ``s - sg(s)`` (value 0, the task gradient to the scores) on the real,
        unprotected tokens, added to the gates accumulated along depth (``log_gate``, None before the first)."""
        delta = (scores - scores.detach()).masked_fill(protected | ~real, 0.0)
        return delta if log_gate is None else log_gate + delta

    @classmethod
    def _straight_through_mask(cls, real, log_gate, mass, dtype: torch.dtype) -> torch.Tensor:
        """The additive key mask after a gate: the kept tokens weighted by their straight-through gates
        (``log_gate``, None without them), plus the merged slot where dropped tokens merge (``mass``)."""
        if mass is not None:
            return cls._key_mask_with_merged(real, log_gate, mass, dtype)
        return additive_key_mask(real.float() * torch.exp(log_gate), dtype)

    @staticmethod
    def _key_mask_with_merged(real, log_gate, mass, dtype: torch.dtype) -> torch.Tensor:
        """The kept tokens' additive key mask (with their straight-through gates), plus the merged slot's key,
        weighted by the number of tokens it holds (``log(mass)``; left out while it holds none)."""
        weights = real.float() if log_gate is None else real.float() * torch.exp(log_gate)
        return additive_key_mask(torch.cat([weights, mass.unsqueeze(1).float()], dim=1), dtype)

    @staticmethod
    def _merge_dropped(hidden_states, real, slots, valid, merged, mass) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold the real tokens this gate drops into the merged slot: the running mean of every dropped token,
        each counted once, and their number (``mass``)."""
        kept = torch.zeros_like(real).scatter(1, slots, valid)
        dropped = (real & ~kept).unsqueeze(-1).to(hidden_states.dtype)
        new_mass = mass + dropped.sum(dim=(1, 2))
        total = merged * mass.view(-1, 1, 1) + (hidden_states * dropped).sum(dim=1, keepdim=True)
        return total / new_mass.clamp(min=1.0).view(-1, 1, 1), new_mass

    # -------------------------------------------------------------------------------- train: soft gates
    def _soft_forward(
        self, hidden_states, attention_mask, protected, restore, sentences=None, **kwargs
    ) -> _EncoderResult:
        """Training pass with relaxed gates.

        With ``retention_sparse_training`` the tokens whose cumulative gate is exactly 0 are gathered
        out after every gate; otherwise they stay in the tensors with a zero gate. Both compute the same
        loss and gradients: a zero gate zeroes the token's input, removes it from every key set, and its
        later scores and statistics are multiplied by zero.
        """
        config = self.config
        if restore and config.retention_restore_attention:
            raise ValueError(
                "retention_restore_attention restores the tokens dropped by top-k selection; Hard-Concrete training "
                "has none (train with retention_train_with_topk, as RetentionTrainer's selection_training='topk' does)"
            )
        self._check_training_attention()
        sparse = config.retention_sparse_training
        real = attention_mask.bool()
        real_lengths = real.sum(dim=1).float().clamp(min=1.0)
        batch_size, seq_len = real.shape
        positions = torch.arange(seq_len, device=real.device).expand(batch_size, seq_len)
        gate = real.float()  # cumulative relaxed gate: products along depth, so a dropped token stays dropped
        expected = real.float()  # probability of being processed, along the sampled trajectory
        restored = torch.zeros_like(hidden_states) if restore else None
        mask = self._mask(hidden_states, attention_mask)
        expected_layers, kept_counts = [], []
        gate_scores, gate_positions = [None] * len(self.layer), [None] * len(self.layer)
        for index, layer in enumerate(self.layer):
            layer_input = hidden_states
            if str(index) in self.gates:
                alive = gate > 0
                scorer_input = hidden_states.detach() if config.retention_detach_scorer_input else hidden_states
                log_alpha = self._score(index, scorer_input, alive, protected & alive & real, sentences)
                gate_scores[index] = log_alpha
                gate_positions[index] = positions.masked_fill(~(alive & real) | protected, -1)
                sample = torch.where(protected, 1.0, self._sample_gates(log_alpha, positions, seq_len))
                cost_logits = log_alpha
                if config.retention_budget_gradient == "bias":  # the budget moves the threshold, the task the ranking
                    bias = self.gates[str(index)].b
                    cost_logits = log_alpha.detach() + (bias - bias.detach())
                keep_probability = torch.where(protected, 1.0, self._budget_cost(cost_logits))
                new_gate = gate * sample
                # tokens that are already gone cost nothing; the others cost their survival probability
                expected = expected * keep_probability * alive
                if restore:  # a token leaving here carries its current representation, weighted by how much it left
                    leaving = (gate - new_gate).unsqueeze(-1).to(hidden_states.dtype) * hidden_states
                    restored = scatter_to_positions(restored, leaving, positions, accumulate=True)
                gate = new_gate
            expected_layers.append(expected.sum(dim=1) / real_lengths)
            kept_counts.append(((gate > 0) & real).sum(dim=1))
            if str(index) in self.gates:
                if sparse and bool((gate[real] == 0).any()):
                    survivors = gate > 0
                    slots, valid = alive_first(survivors, int(survivors.sum(dim=1).max().clamp(min=1)))
                    hidden_states, gate, expected = (gather_slots(x, slots) for x in (hidden_states, gate, expected))
                    positions = gather_slots(positions, slots).masked_fill(~valid, -1)
                    real = gather_slots(real, slots) & valid
                    protected = gather_slots(protected, slots) & valid
                    if sentences is not None:
                        sentences = gather_slots(sentences, slots)
                    gate = gate * valid
                layer_input = hidden_states * gate.unsqueeze(-1).to(hidden_states.dtype)
                mask = additive_key_mask(gate, hidden_states.dtype)
            hidden_states = layer(layer_input, mask, **kwargs)
        if restore:
            remaining = gate.unsqueeze(-1).to(hidden_states.dtype) * hidden_states
            hidden_states = scatter_to_positions(restored, remaining, positions, accumulate=True)

        expected_layer_keep_ratio = torch.stack(expected_layers, dim=1)
        kept_counts = torch.stack(kept_counts, dim=1)
        layer_keep_ratio = kept_counts.float() / real_lengths.unsqueeze(1)
        statistics = {
            "kept_counts": kept_counts,
            "keep_ratio": layer_keep_ratio.mean(dim=1),
            "layer_keep_ratio": layer_keep_ratio,
            "expected_keep_ratio": expected_layer_keep_ratio.mean(dim=1),
            "expected_layer_keep_ratio": expected_layer_keep_ratio,
            "gate_scores": tuple(gate_scores),
            "gate_positions": tuple(gate_positions),
        }
        return _EncoderResult(hidden_states, statistics)


# ---------------------------------------------------------------------------------------------- models
class RetentionPreTrainedMixin:
    """Behaviour shared by every retention model class; mixed in before the family's ``PreTrainedModel``."""

    config: RetentionConfig

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # type: ignore[misc]
        if isinstance(module, LEARNED_SCORERS):
            init.normal_(module.v, mean=0.0, std=self.config.initializer_range)
            init.constant_(module.b, self.config.retention_gate_init_bias)
            if module.attention_prior_scale is not None:  # the gate starts as the first token's attention ranking
                init.constant_(module.attention_prior_scale, 1.0)
        if isinstance(module, QuestionMatch):
            init.constant_(module.threshold, QuestionMatch.INITIAL_THRESHOLD)
            init.constant_(module.match_scale, 1.0)

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """Save as usual, plus the model card (``README.md``); when registered for an auto class,
        ``auto_map`` also lists the config and ``AutoModel``.

        With that ``auto_map`` (and the code files that ``save_pretrained`` copies) the checkpoint loads
        with ``trust_remote_code=True`` where retention_hf is not installed. The card is written when
        the model has card data (``model_card_data``, set by ``RetentionTrainer``) or the directory has no
        ``README.md`` yet, so saving a freshly loaded model never replaces a richer card.
        ``push_to_hub=True`` saves locally, then uploads through :meth:`push_to_hub` (card and code included).
        """
        if self._auto_class is not None:  # type: ignore[attr-defined]
            base = type(self.base_model) if self.base_model is not self else type(self)  # type: ignore[attr-defined]
            config_class = type(self.config)
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoConfig": f"{config_class.__module__.split('.')[-1]}.{config_class.__name__}",
                "AutoModel": f"{base.__module__.split('.')[-1]}.{base.__name__}",
            }
        hub = {name: kwargs.pop(name) for name in _PUSH_ARGUMENTS if name in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        has_card = os.path.isfile(os.path.join(save_directory, "README.md"))
        if kwargs.get("is_main_process", True) and (getattr(self, "model_card_data", None) or not has_card):
            self._write_model_card(save_directory)
        if push_to_hub:
            repo_id = hub.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(repo_id, **hub)

    def _write_model_card(self, save_directory, model_name: str | None = None, tags=()) -> None:
        """Write ``README.md`` from ``self.model_card_data`` and the config (see ``retention_hf.model_card``).

        Cards are a retention_hf feature: a model loaded through ``trust_remote_code`` alone writes none
        (the import sits in a ``try`` so that ``trust_remote_code`` does not require retention_hf).
        """
        try:
            from retention_hf.model_card import write_model_card
        except ImportError:
            return
        write_model_card(self, save_directory, model_name=model_name, tags=tags)

    def auto_class_name(self) -> str:
        """The transformers Auto class that loads this head (``AutoModelForSequenceClassification`` ...);
        ``AutoModel`` for a head transformers has no Auto class for (sentence scoring)."""
        name = type(self).__name__
        auto_class = "AutoModel" + name[name.index("For") :] if "For" in name else "AutoModel"
        return auto_class if hasattr(transformers, auto_class) else "AutoModel"

    @contextmanager
    def remote_code_files(self):
        """Within the block, saving writes ``auto_map`` and the code files for ``trust_remote_code=True``.

        ``register_for_auto_class`` sets a class attribute for good, and saving then leaves ``auto_map``
        in the config; both are undone on exit, so later ``save_pretrained`` calls behave as before.
        """
        model_class = type(self)
        registered = self._auto_class is None  # type: ignore[attr-defined]
        had_auto_map = hasattr(self.config, "auto_map")
        auto_map = getattr(self.config, "auto_map", None)
        if registered:
            model_class.register_for_auto_class(self.auto_class_name())  # type: ignore[attr-defined]
        try:
            yield
        finally:
            if registered:
                del model_class._auto_class  # back to the inherited None
            if had_auto_map:
                self.config.auto_map = auto_map
            elif hasattr(self.config, "auto_map"):
                del self.config.auto_map

    def push_to_hub(
        self,
        repo_id: str,
        *,
        processing_class=None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ):
        """Upload the model to the Hub in one commit, ready for ``from_pretrained`` with or without retention_hf.

        Unlike transformers' ``push_to_hub`` the commit holds the retention model card (transformers would
        replace ``README.md`` with its generic card), the config's ``auto_map`` and the code files for
        ``trust_remote_code=True``, and, when ``processing_class`` is given, the tokenizer. ``tags`` (and
        ``model.model_tags``) are added to the card's tags.
        """
        repo_id = hf_api().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        card_tags = [*(tags or []), *(getattr(self, "model_tags", None) or [])]
        with tempfile.TemporaryDirectory() as work_dir, self.remote_code_files():
            self.save_pretrained(work_dir, max_shard_size=max_shard_size)
            self._write_model_card(work_dir, model_name=repo_id, tags=card_tags)  # names the repo it loads from
            if processing_class is not None:
                processing_class.save_pretrained(work_dir)
            return self._upload_modified_files(  # type: ignore[attr-defined]
                work_dir,
                repo_id,
                files_timestamps={},
                commit_message=commit_message,
                token=token,
                create_pr=create_pr,
                revision=revision,
                commit_description=commit_description,
            )


# What ``save_pretrained(push_to_hub=True, ...)`` hands on to ``push_to_hub``.
_PUSH_ARGUMENTS = ("repo_id", "commit_message", "commit_description", "private", "token", "revision", "create_pr")


def _check_encoder_config(model_class: type, config: RetentionConfig) -> None:
    expected = model_class.config_class
    # compare names too: trust_remote_code may import the config module twice, as two distinct classes
    if not isinstance(config, expected) and type(config).__name__ != expected.__name__:
        raise TypeError(f"{model_class.__name__} needs a {expected.__name__}, got {type(config).__name__}")
    if config.is_decoder or config.add_cross_attention:
        raise ValueError(
            "Retention models are bidirectional encoders: is_decoder and add_cross_attention must be False"
        )


def sentence_ids(config: RetentionConfig, input_ids: torch.Tensor | None) -> torch.Tensor | None:
    """Each token's sentence number ``(batch, seq)`` for ``retention_scorer_match_sentence_end_ids`` (``None``
    without them): a sentence ends with one of those ids, which belongs to it."""
    end_ids = config.retention_scorer_match_sentence_end_ids
    if not end_ids or not config.retention_scorer_question_match:
        return None
    if input_ids is None:
        raise ValueError("retention_scorer_match_sentence_end_ids finds the sentences in input_ids; pass input_ids")
    ends = (input_ids.unsqueeze(-1) == torch.tensor(end_ids, device=input_ids.device)).any(dim=-1).long()
    return ends.cumsum(dim=1) - ends


def _protected_positions(
    config: RetentionConfig, input_ids: torch.Tensor | None, shape: tuple[int, int], device, protected_mask
) -> torch.Tensor:
    """Tokens that are never dropped: the first position, the configured token ids (and, with
    ``retention_protect_first_segment``, everything before the first of them) and ``protected_mask``."""
    protected = torch.zeros(shape, dtype=torch.bool, device=device)
    protected[:, 0] = True
    if config.retention_protect_first_segment and input_ids is None:
        raise ValueError("retention_protect_first_segment finds the first segment in input_ids; pass input_ids")
    if input_ids is not None and config.retention_protected_token_ids:
        ids = torch.tensor(config.retention_protected_token_ids, device=device)
        separators = (input_ids.unsqueeze(-1) == ids).any(dim=-1)  # isin, in ops ONNX has (a handful of ids)
        protected |= separators
        if config.retention_protect_first_segment:
            # rows without a separator protect nothing more (first_separator = -1)
            first_separator = torch.where(separators.any(dim=1), separators.int().argmax(dim=1), -1)
            positions = torch.arange(shape[1], device=device)
            protected |= positions.unsqueeze(0) <= first_separator.unsqueeze(1)
    if protected_mask is not None:
        if protected_mask.shape != shape:
            raise ValueError(f"protected_mask has shape {tuple(protected_mask.shape)}, expected {shape}")
        protected |= protected_mask.bool()
    return protected


class RetentionModelMixin:
    """The base model: stock embeddings -> :class:`RetentionEncoder` -> stock pooler.

    Family classes set ``embeddings_class``, ``layer_class`` and ``pooler_class``.
    """

    embeddings_class: type[nn.Module]
    layer_class: type[nn.Module]
    pooler_class: type[nn.Module]

    def __init__(self, config: RetentionConfig, add_pooling_layer: bool = True):
        _check_encoder_config(type(self), config)
        super().__init__(config)  # type: ignore[call-arg]
        self.embeddings = self.embeddings_class(config)
        self.encoder = RetentionEncoder(config, self.layer_class)
        self.pooler = self.pooler_class(config) if add_pooling_layer else None
        self.post_init()  # type: ignore[attr-defined]

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        protected_mask: torch.Tensor | None = None,
        restore_dropped_tokens: bool = False,
        retention_ratio: float | torch.Tensor | list[float] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RetentionModelOutput:
        r"""
        protected_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Tokens that must never be dropped (for example the question of an extractive-QA input), on top
            of the first position and `config.retention_protected_token_ids`.
        restore_dropped_tokens (`bool`, *optional*, defaults to `False`):
            Return a full-length `last_hidden_state` in which every dropped token carries the
            representation it had when it was dropped (what token-level heads need).
        retention_ratio (`float`, or `torch.FloatTensor` / list of shape `(batch_size,)`, *optional*):
            The budget of this call for the top-k selection (inference, and top-k training), in (0, 1]: one
            number for the batch or one per example; defaults to `config.retention_ratio`. The schedule's shape
            is kept and rescaled to it, and each example's result does not depend on the other rows' budgets.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        embedding_output = self.embeddings(
            input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
        )
        shape = tuple(embedding_output.shape[:2])
        if attention_mask is None:
            attention_mask = torch.ones(shape, dtype=torch.long, device=embedding_output.device)
        elif tuple(attention_mask.shape) != shape:
            raise ValueError(
                f"attention_mask must be a 2D padding mask of shape {shape} (batch, sequence), "
                f"got {tuple(attention_mask.shape)}"
            )
        protected = _protected_positions(self.config, input_ids, shape, embedding_output.device, protected_mask)
        encoded = self.encoder(
            embedding_output,
            attention_mask=attention_mask,
            protected=protected,
            restore_dropped_tokens=restore_dropped_tokens,
            retention_ratio=retention_ratio,
            sentences=sentence_ids(self.config, input_ids),
            **kwargs,
        )
        sequence_output = encoded.last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return RetentionModelOutput(
            last_hidden_state=sequence_output, pooler_output=pooled_output, **encoded.statistics
        )


def _head_output(output_class, base_outputs: RetentionModelOutput, **fields):
    return output_class(
        hidden_states=base_outputs.hidden_states,
        attentions=base_outputs.attentions,
        **base_outputs.retention_statistics(),
        **fields,
    )


class RetentionSequenceClassificationMixin:
    """Sequence classification; the family class builds the head and implements ``classify``."""

    def classify(self, outputs: RetentionModelOutput) -> torch.Tensor:
        raise NotImplementedError

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        protected_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RetentionSequenceClassifierOutput:
        outputs = self.base_model(  # type: ignore[attr-defined]
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            protected_mask=protected_mask,
            return_dict=True,
            **kwargs,
        )
        logits = self.classify(outputs)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)  # type: ignore[attr-defined]
        return _head_output(RetentionSequenceClassifierOutput, outputs, loss=loss, logits=logits)


class _RestoringHeadMixin:
    """What every head that reads single positions shares: the encoder without its pooler, a classifier
    dropout, and the encoder call that restores every dropped position before the head."""

    # the pooler of a full checkpoint is unused by token-level heads: loading it is not a mistake worth reporting
    _keys_to_ignore_on_load_unexpected = [r"pooler\."]
    base_model_class: type[nn.Module]

    def _add_encoder(self, config: RetentionConfig) -> None:
        setattr(self, self.base_model_prefix, self.base_model_class(config, add_pooling_layer=False))  # type: ignore[attr-defined]

    @staticmethod
    def _classifier_dropout(config: RetentionConfig) -> nn.Dropout:
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob  # type: ignore[attr-defined]
        return nn.Dropout(dropout)

    def _restored_outputs(
        self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, protected_mask, **kwargs
    ) -> RetentionModelOutput:
        return self.base_model(  # type: ignore[attr-defined]
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            protected_mask=protected_mask,
            restore_dropped_tokens=True,
            return_dict=True,
            **kwargs,
        )


class RetentionTokenClassificationMixin(_RestoringHeadMixin):
    """Token classification on the restored full-length sequence; identical for every family."""

    def __init__(self, config: RetentionConfig):
        super().__init__(config)  # type: ignore[call-arg]
        self.num_labels = config.num_labels
        self._add_encoder(config)
        self.dropout = self._classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()  # type: ignore[attr-defined]

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        protected_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RetentionTokenClassifierOutput:
        outputs = self._restored_outputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, protected_mask, **kwargs
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config, **kwargs)  # type: ignore[attr-defined]
        return _head_output(RetentionTokenClassifierOutput, outputs, loss=loss, logits=logits)


class RetentionQuestionAnsweringMixin(_RestoringHeadMixin):
    """Extractive QA (start/end logits over the restored full-length sequence); identical for every family."""

    def __init__(self, config: RetentionConfig):
        super().__init__(config)  # type: ignore[call-arg]
        self.num_labels = config.num_labels
        self._add_encoder(config)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()  # type: ignore[attr-defined]

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        protected_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RetentionQuestionAnsweringModelOutput:
        outputs = self._restored_outputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, protected_mask, **kwargs
        )
        logits = self.qa_outputs(outputs.last_hidden_state)
        start_logits, end_logits = (part.squeeze(-1).contiguous() for part in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)  # type: ignore[attr-defined]
        return _head_output(
            RetentionQuestionAnsweringModelOutput, outputs, loss=loss, start_logits=start_logits, end_logits=end_logits
        )


class RetentionSentenceScoringMixin(_RestoringHeadMixin):
    """BertSum-style sentence scoring for extractive summarisation; identical for every family.

    Every sentence starts with a marker token (``[CLS]`` / ``<s>``) whose position is given in
    ``sentence_positions``. The markers are protected, so every layer processes them at any budget and
    every sentence gets exactly one score, read from its marker's final hidden state; the words around
    them compete for the budget.
    """

    # the pooler and classifier of a full checkpoint are unused here: loading them is not worth reporting
    _keys_to_ignore_on_load_unexpected = [r"pooler\.", r"classifier\."]

    def __init__(self, config: RetentionConfig):
        super().__init__(config)  # type: ignore[call-arg]
        self._add_encoder(config)
        self.dropout = self._classifier_dropout(config)
        self.sentence_scorer = nn.Linear(config.hidden_size, 1)
        self.post_init()  # type: ignore[attr-defined]

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        sentence_positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        protected_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RetentionSentenceScoringOutput:
        r"""
        sentence_positions (`torch.LongTensor` of shape `(batch_size, max_sentences)`):
            Position of each sentence's marker token, ``-1`` in padding slots.
        labels (`torch.FloatTensor` of shape `(batch_size, max_sentences)`, *optional*):
            ``1`` for a summary sentence, ``0`` otherwise, ``-100`` to ignore.
        """
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        if sentence_positions is None:
            raise ValueError("sentence scoring needs sentence_positions (the marker position of every sentence)")
        if sentence_positions.dim() != 2 or sentence_positions.shape[0] != shape[0]:
            raise ValueError(
                f"sentence_positions has shape {tuple(sentence_positions.shape)}, expected ({shape[0]}, max_sentences)"
            )
        if bool((sentence_positions >= shape[1]).any()):
            raise ValueError(f"sentence_positions point past the sequence length {shape[1]}")
        sentence_mask = sentence_positions >= 0
        index = sentence_positions.clamp(min=0)
        markers = torch.zeros(shape, dtype=torch.bool, device=sentence_positions.device)
        markers.scatter_(1, index, sentence_mask)
        if protected_mask is not None:
            markers |= protected_mask.bool()
        outputs = self._restored_outputs(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, markers, **kwargs
        )
        hidden = outputs.last_hidden_state
        states = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        logits = self.sentence_scorer(self.dropout(states)).squeeze(-1).masked_fill(~sentence_mask, 0.0)
        loss = None
        if labels is not None:
            counted = sentence_mask & (labels != -100)
            loss = nn.functional.binary_cross_entropy_with_logits(logits[counted], labels[counted].to(logits.dtype))
        return _head_output(
            RetentionSentenceScoringOutput, outputs, loss=loss, sentence_logits=logits, sentence_mask=sentence_mask
        )
