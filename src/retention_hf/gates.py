"""The retention mechanism as pure tensor code: scorers, Hard-Concrete gates, per-example top-k,
gather and restore.

Nothing here knows about BERT or RoBERTa, so every piece can be unit-tested on random tensors and is
shared by both model families. Copied next to the weights for ``trust_remote_code``: imports only
``torch``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def is_tracing() -> bool:
    """True while ``torch.export`` / ``torch.compile`` (or the TorchScript tracer) records the forward pass:
    then no value may be read on the host, and every op must have an ONNX form (see ``export.py``)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


# ---------------------------------------------------------------------------------------------- scorers
def decayed_prefix_sum(values: torch.Tensor, decay: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Inclusive scan ``m_t = decay_t * m_{t-1} + values_t`` along dim 1, with ``m_{-1} = 0``.

    Computed with a Hillis-Steele doubling scan: ``ceil(log2(T))`` vectorised steps instead of a
    Python loop over ``T`` positions. Every factor is in ``[0, 1]``, so no step can overflow.

    While a graph is traced for export the length is symbolic (after a gate it even depends on the data), so
    the scan takes the steps that ``max_length`` needs. A step whose offset reaches past the sequence adds
    exact zeros, so the result is the same to the bit.

    Args:
        values: ``(batch, seq, dim)``.
        decay: ``(batch, seq, 1)`` per-position decay in ``[0, 1]``.
        max_length: the longest sequence the traced graph will see (``max_position_embeddings``).
    """
    total, factor = values, decay
    seq_len = values.shape[1]
    traced = is_tracing()
    if traced and max_length is None:
        raise ValueError("a traced scan needs max_length: its sequence length is not known while tracing")
    longest = max_length if traced else seq_len
    for step in range(math.ceil(math.log2(longest)) if longest > 1 else 0):
        offset = 2**step
        shifted_total = nn.functional.pad(total, (0, 0, offset, 0))[:, :seq_len]
        shifted_factor = nn.functional.pad(factor, (0, 0, offset, 0), value=1.0)[:, :seq_len]
        total = total + factor * shifted_total
        factor = factor * shifted_factor
    return total


def constant_decay_prefix_sum(values: torch.Tensor, alive: torch.Tensor, decay: float) -> torch.Tensor:
    """:func:`decayed_prefix_sum` for a decay of ``decay`` at the ``alive`` slots ``(batch, seq)`` and 1 elsewhere
    (Eq. 3's scan), in closed form: ``m_t = g^{c_t} * sum_{s <= t} g^{-c_s} values_s``, ``c`` being the running
    count of alive slots. One cumulative sum instead of the doubling steps: an exported graph holds a handful of
    nodes per gate instead of about sixty. Computed in float64, where ``g^{-c}`` stays finite while
    ``c * log(1 / g) < 700``: :func:`fits_constant_decay_prefix_sum` says whether every length up to a maximum
    does."""
    counts = alive.to(torch.float64).cumsum(dim=1).unsqueeze(-1)
    # the decay as the values' dtype holds it, as the scan multiplies by it (0.9 in float32 is 0.9 - 2.4e-8)
    log_decay = math.log(torch.tensor(decay, dtype=values.dtype).item())
    scaled = values.to(torch.float64) * torch.exp(-log_decay * counts)
    return (scaled.cumsum(dim=1) * torch.exp(log_decay * counts)).to(values.dtype)


def fits_constant_decay_prefix_sum(decay: float, max_length: int | None) -> bool:
    """Whether :func:`constant_decay_prefix_sum` stays finite for every input up to ``max_length`` slots."""
    return max_length is not None and decay > 0.0 and max_length * -math.log(decay) < 600.0


def pooled_query(hidden_states: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, 1, hidden)``: the mean hidden state of the ``query_mask`` tokens of each row (zeros where none)."""
    weights = query_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)


def received_attention(
    hidden_states: torch.Tensor,
    alive: torch.Tensor,
    query_proj: nn.Module,
    key_proj: nn.Module,
    num_heads: int,
    scaling: float,
    sources: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(batch, seq)`` float32: the attention every alive slot receives in a layer with these query and key
    projections, averaged over heads and over the attending slots; dead slots get 0.

    The attending slots are the ``sources`` mask ``(batch, seq)`` of each row (the protected question of an extractive
    QA input), or the first slot ([CLS] / ``<s>``) without one. The first slot's attention is EViT's token importance
    (Liang et al., 2022): it is the token a classification head reads, so the tokens it attends to are the ones the
    prediction uses. A QA head reads the context instead, and it is the question that looks for the answer there.
    Costs the attending slots' queries and every slot's key (the dot products in float32).
    """
    batch, slots, _ = hidden_states.shape
    if sources is None:
        attending, weights = hidden_states[:, :1], hidden_states.new_ones(batch, 1, dtype=torch.float32)
    else:
        columns, valid = masked_slots(sources)
        attending, weights = gather_slots(hidden_states, columns), valid.float()
    query = query_proj(attending).view(batch, attending.shape[1], num_heads, -1).float()
    keys = key_proj(hidden_states).view(batch, slots, num_heads, -1).float()
    logits = torch.einsum("bqhd,bshd->bqhs", query, keys) * scaling
    logits = logits.masked_fill(~alive.bool()[:, None, None], torch.finfo(logits.dtype).min)
    per_source = logits.softmax(dim=-1).mean(dim=2)  # (batch, attending slots, seq)
    return (per_source * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)


class QueryTerm(nn.Module):
    """``Q q``: the projection of the pooled query (``retention_scorer_query``) that every token's score adds."""

    def __init__(self, hidden_size: int, scorer_size: int):
        super().__init__()
        self.query_proj = nn.Linear(hidden_size, scorer_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
        if query_mask is None:
            raise ValueError("a query-aware scorer (retention_scorer_query) needs the query tokens' mask")
        return self.query_proj(pooled_query(hidden_states, query_mask)).float()


def window_sum(values: torch.Tensor, window: int) -> torch.Tensor:
    """``out[:, t] = values[:, t - window : t + window + 1].sum(1)`` for ``(batch, n)`` values (zeros past the ends),
    from one cumulative sum, so it traces to ONNX's ``CumSum`` at any length."""
    length = values.shape[1]
    prefix = nn.functional.pad(values, (window + 1, window)).cumsum(dim=1)
    return prefix[:, 2 * window + 1 :] - prefix[:, :length]


def sentence_sum(values: torch.Tensor, sentences: torch.Tensor) -> torch.Tensor:
    """``out[:, t]`` sums ``values`` ``(batch, n)`` over the run of slots around ``t`` that share its sentence id
    (``sentences``, ``(batch, n)``, non-decreasing along each row's real slots, as gathering keeps their order).

    The runs are relabelled ``0 .. n - 1`` first, so the ids may come from the full-length input while ``n`` is
    the number of slots left after the gates before."""
    changes = sentences[:, 1:] != sentences[:, :-1]
    runs = torch.cat([torch.zeros_like(sentences[:, :1]), changes.long().cumsum(dim=1)], dim=1)
    totals = torch.zeros_like(values).scatter_add(1, runs, values)
    return totals.gather(1, runs)


class QuestionMatch(nn.Module):
    """``w * log(1 + n_t)``: the extractive-QA prior ``retention_scorer_question_match`` adds to a gate's score.

    ``c_t = sum_q sigmoid(SHARPNESS * (cos(h_t, h_q) - threshold))`` softly counts the question tokens ``q`` (the
    query mask) whose hidden state is close to that of ``t``, an alive token outside the question, and ``n_t`` sums
    ``c`` over the slots within ``window`` of ``t`` or, given sentence ids (``retention_scorer_match_sentence_end_ids``),
    over the alive slots of ``t``'s sentence, which a window of fixed width cuts. The answer of a question usually
    sits in the sentence that repeats its words, which is visible before any layer has run, where the learned scorer
    alone cannot see the question. ``threshold`` (starting at 0.9) and ``w`` (starting at 1) are learned per gate, which holds this module;
    the encoder adds it to the gate's score, as it adds the attention prior.
    """

    SHARPNESS = 50.0
    INITIAL_THRESHOLD = 0.9  # a word of the question repeated in the context, at the embeddings

    def __init__(self, window: int):
        super().__init__()
        self.window = int(window)
        self.threshold = nn.Parameter(torch.tensor(self.INITIAL_THRESHOLD))
        self.match_scale = nn.Parameter(torch.ones(()))

    def forward(
        self,
        hidden_states: torch.Tensor,
        alive: torch.Tensor,
        query_mask: torch.Tensor | None,
        sentences: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if query_mask is None:
            raise ValueError("retention_scorer_question_match needs the query tokens' mask (the protected question)")
        unit = nn.functional.normalize(hidden_states.float(), dim=-1)
        columns, is_question = masked_slots(query_mask)
        similarity = unit @ gather_slots(unit, columns).transpose(1, 2)  # (batch, n, longest question)
        close = torch.sigmoid(self.SHARPNESS * (similarity - self.threshold.float()))
        # the question's own tokens (always kept) would count themselves and lift the context next to them
        counts = (close * is_question.unsqueeze(1).float()).sum(dim=-1) * (alive & ~query_mask).float()
        nearby = window_sum(counts, self.window) if sentences is None else sentence_sum(counts, sentences)
        return self.match_scale.float() * torch.log1p(nearby)


def masked_slots(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The slots of each row's ``mask`` ``(batch, n)``, in order, padded to the row with the most (at least one):
    ``(index, valid)``, both ``(batch, m)``. Work done on them costs ``m`` instead of ``n`` per row: the question
    match and the question's attention compare every token with the question's ``q`` slots only (the question is
    not always a prefix: a protected separator can close the context), and the restore's attention runs on the
    dropped tokens only."""
    counts = mask.sum(dim=1)
    if is_tracing():  # a data-dependent width: an unbacked size with the bounds the exporter needs
        width = counts.max().clamp(min=1).item()
        torch._check(width >= 1)
        torch._check(width <= mask.shape[1])
    else:
        width = int(counts.max().clamp(min=1))
    return alive_first(mask, width)


class ContextScorer(nn.Module):
    """The context-aware scorer of the paper's Eq. 3.

    ``m_t = g m_{t-1} + (1 - g) h_t`` is a running summary of the tokens before ``t`` and
    ``s_t = v^T tanh(W h_t + U m_{t-1}) + b``. The recurrence runs over the tokens that are still
    alive: a dropped or padding token neither enters the summary nor advances its decay, so the score
    of a token is the same whether the dead tokens are masked (training) or physically removed
    (inference). Because ``U`` is linear, ``U m_{t-1}`` is the same scan applied to ``U h``, which keeps
    the scan in the scorer's small width.

    With ``attention_prior`` the scorer holds ``attention_prior_scale`` (learned, starting at 1), and the encoder,
    which owns the layer weights, adds ``attention_prior_scale * log a_t`` to its score, ``a_t`` being
    :func:`received_attention` in the layer the gate feeds (``retention_scorer_attention_prior``).
    """

    def __init__(
        self,
        hidden_size: int,
        scorer_size: int,
        decay: float,
        max_length: int | None = None,
        query: bool = False,
        attention_prior: bool = False,
        match_window: int | None = None,
    ):
        super().__init__()
        self.decay = float(decay)
        self.max_length = max_length  # the longest input (max_position_embeddings): what an exported scan covers
        self.token_proj = nn.Linear(hidden_size, scorer_size)  # W (and its bias)
        self.context_proj = nn.Linear(hidden_size, scorer_size, bias=False)  # U
        self.query = QueryTerm(hidden_size, scorer_size) if query else None  # Q
        self.v = nn.Parameter(torch.zeros(scorer_size))
        self.b = nn.Parameter(torch.zeros(()))
        self.attention_prior_scale = nn.Parameter(torch.ones(())) if attention_prior else None
        self.question_match = QuestionMatch(match_window) if match_window is not None else None

    def forward(
        self, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the logits ``s`` (``(batch, seq)``, float32) for ``hidden_states`` ``(batch, seq, hidden)``;
        ``query_mask`` marks the tokens a query-aware scorer pools."""
        token_term = self.token_proj(hidden_states).float()
        context = self._previous_summary(self.context_proj(hidden_states).float(), alive)
        if self.query is not None:
            context = context + self.query(hidden_states, query_mask)
        hidden = torch.tanh(token_term + context + self._extra_context(hidden_states, alive))
        return hidden @ self.v.float() + self.b.float()

    def _previous_summary(self, projected: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """``U m_{t-1}``: the decayed summary of the alive tokens before ``t`` (``m_0 = 0``), already projected.

        A traced graph (ONNX export) takes the closed form, one cumulative sum; eager keeps the doubling scan, so
        training and the eager outputs stay as they were (the two agree to float32 rounding)."""
        weights = alive.unsqueeze(-1).to(projected.dtype)
        values = projected * ((1.0 - self.decay) * weights)
        if is_tracing() and fits_constant_decay_prefix_sum(self.decay, self.max_length):
            summary = constant_decay_prefix_sum(values, alive, self.decay)
        else:
            summary = decayed_prefix_sum(values, torch.where(weights > 0, self.decay, 1.0), self.max_length)
        return nn.functional.pad(summary[:, :-1], (0, 0, 1, 0))

    def _extra_context(self, hidden_states: torch.Tensor, alive: torch.Tensor) -> torch.Tensor | float:
        return 0.0


class BidirectionalContextScorer(ContextScorer):
    """Eq. 3 with a second, right-to-left summary: ``s_t = v^T tanh(W h_t + U m_{t-1} + U' m'_{t+1}) + b``.

    Eq. 3's summary starts from zero at the first token, so the first tokens are scored with almost no
    context, which biases selection by position. ``m'`` is the same decayed summary run from the end, so
    every token sees context on both sides. Dead tokens are skipped exactly as in :class:`ContextScorer`.
    """

    def __init__(self, hidden_size: int, scorer_size: int, *args, **kwargs):
        """Takes :class:`ContextScorer`'s arguments."""
        super().__init__(hidden_size, scorer_size, *args, **kwargs)
        self.backward_context_proj = nn.Linear(hidden_size, scorer_size, bias=False)  # U'

    def _extra_context(self, hidden_states: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        projected = self.backward_context_proj(hidden_states).float()
        return self._previous_summary(projected.flip(1), alive.flip(1)).flip(1)


class MLPScorer(nn.Module):
    """The token-wise scorer drawn in the paper's Figure 1: ``d -> k -> 1`` with a ReLU."""

    def __init__(
        self,
        hidden_size: int,
        scorer_size: int,
        query: bool = False,
        attention_prior: bool = False,
        match_window: int | None = None,
    ):
        super().__init__()
        self.token_proj = nn.Linear(hidden_size, scorer_size)
        self.query = QueryTerm(hidden_size, scorer_size) if query else None
        self.v = nn.Parameter(torch.zeros(scorer_size))
        self.b = nn.Parameter(torch.zeros(()))
        self.attention_prior_scale = nn.Parameter(torch.ones(())) if attention_prior else None
        self.question_match = QuestionMatch(match_window) if match_window is not None else None

    def forward(
        self, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        del alive  # token-wise: the other tokens play no role (but the pooled query, when there is one)
        hidden = self.token_proj(hidden_states).float()
        if self.query is not None:
            hidden = hidden + self.query(hidden_states, query_mask)
        hidden = nn.functional.relu(hidden)
        return hidden @ self.v.float() + self.b.float()


# ---------------------------------------------------------------------------------------------- Hard-Concrete
def hard_concrete_sample(
    log_alpha: torch.Tensor, beta: float, gamma: float, zeta: float, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Sample relaxed gates in ``[0, 1]`` (the paper's Eq. 6); exact zeros and ones have positive mass.

    ``noise`` (uniform in (0, 1), shaped like ``log_alpha``) may be given so that a token draws the same
    noise whether it sits in a full-length or in a compacted tensor.
    """
    noise = (torch.rand_like(log_alpha) if noise is None else noise).clamp(1e-6, 1.0 - 1e-6)
    relaxed = torch.sigmoid((log_alpha + torch.log(noise) - torch.log1p(-noise)) / beta)
    return (relaxed * (zeta - gamma) + gamma).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- selection
def gumbel_noise(shape: torch.Size, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)``: the top-k of ``s + noise`` samples k tokens without replacement
    from ``softmax(s)`` (the Gumbel top-k trick)."""
    uniform = torch.rand(shape, device=device, generator=generator).clamp(1e-9, 1.0 - 1e-9)
    return -torch.log(-torch.log(uniform))


def scheduled_keep_counts(
    real_lengths: torch.Tensor,
    protected_counts: torch.Tensor,
    layer_ratios: list[float] | list[list[float]],
    min_tokens: int,
    rounding: str = "budget",
) -> torch.Tensor:
    """Per-example number of slots every layer keeps: ``(batch, num_layers)``, non-increasing along layers.

    ``layer_ratios`` is one schedule for the batch, or one per example (per-example budgets).

    Layer ``l`` should process ``r_l * T_i`` of an example's ``T_i`` real tokens. Rounding each layer up on
    its own (``ceil``) overspends the budget on short inputs: on SST-2's training phrases (13 tokens on
    average) the 0.5 geometric schedule keeps 0.565 of the tokens. Instead each example keeps ``round(sum_l r_l * T_i)`` token-layers in all (largest remainder):
    every layer keeps ``floor(r_l * T_i)`` (with a 1e-6 tolerance, so that 0.3 * 10 is 3), and the layers
    with the largest fractional parts (ties to the earlier layer) keep one more. For a non-increasing
    schedule the counts stay non-increasing, so a dropped token never has to come back. ``rounding="ceil"``
    rounds every layer up instead (the rule before the budget one). Then every count
    is raised to the protected tokens and ``min_tokens``, capped at ``T_i`` and at the previous layer's
    count; only these floors can push an example above its budget. A row with no real token keeps one slot (its first position) so that
    tensor shapes stay valid.
    """
    lengths = real_lengths.to(torch.float64).unsqueeze(1)
    ratios = torch.tensor(layer_ratios, dtype=torch.float64, device=real_lengths.device)
    ideal = lengths * ratios
    if rounding == "ceil":
        keep = torch.ceil(ideal - 1e-6)
    else:
        keep = torch.floor(ideal + 1e-6)
        fraction_down = torch.round((keep - ideal) * 1e6)  # to 1e-6, so that float noise does not break ties
        order = stable_sort(fraction_down).indices  # largest fractional part first
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(ideal.shape[1], device=order.device).expand_as(order)
        )
        extra = torch.floor(ideal.sum(dim=1, keepdim=True) + 0.5 - 1e-6) - keep.sum(dim=1, keepdim=True)
        keep = keep + (rank < extra).to(keep.dtype)
    keep = keep.to(real_lengths.dtype)
    keep = torch.maximum(keep, torch.clamp(protected_counts, min=0).unsqueeze(1))
    keep = torch.minimum(keep.clamp(min=min_tokens), real_lengths.clamp(min=1).unsqueeze(1))
    running = [keep[:, 0]]  # the running minimum along the layers (cummin, in ops every exporter knows)
    for layer in range(1, keep.shape[1]):
        running.append(torch.minimum(running[-1], keep[:, layer]))
    return torch.stack(running, dim=1)


def stable_sort(values: torch.Tensor, descending: bool = False) -> torch.return_types.sort | torch.return_types.topk:
    """Sort along dim 1, equal values in their original order.

    A traced graph (ONNX export) gets ``topk`` over the whole row instead: ONNX has no stable sort, but its
    ``TopK`` puts equal values in index order, which is the same result.
    """
    if is_tracing():
        return torch.topk(values, values.shape[1], dim=1, largest=descending, sorted=True)
    return torch.sort(values, dim=1, descending=descending, stable=True)


def select_kept_slots(
    scores: torch.Tensor, real: torch.Tensor, protected: torch.Tensor, keep: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose, per row, the ``keep[i]`` best slots by score, returned in their original order.

    Protected slots always win, padding slots always lose, and ties go to the earlier slot (stable
    sort), so the choice of a row never depends on the other rows of the batch or on how much padding
    they add.

    Args:
        scores: ``(batch, n)`` scores of the current slots.
        real: ``(batch, n)`` bool, the slot holds a real (non-padding) token.
        protected: ``(batch, n)`` bool, the slot must be kept.
        keep: ``(batch,)`` number of slots each row keeps.
        width: ``max(keep)`` (or ``n``): the length of the new tensors.

    Returns:
        ``index`` ``(batch, width)``: the slots to gather: the kept ones ascending, then (in rows that keep
        fewer than ``width``) the best of the others, ascending too, as filler. A row that keeps all its real
        tokens at ``width = n`` is gathered unchanged (right padding). ``valid`` ``(batch, width)``: which
        gathered slots are kept.
    """
    key = scores.float().masked_fill(~real, -math.inf).masked_fill(protected, math.inf)
    order = stable_sort(key, descending=True).indices[:, :width]
    slot = torch.arange(width, device=scores.device)
    valid = slot.unsqueeze(0) < keep.unsqueeze(1)
    sentinel = scores.shape[1]
    index = stable_sort(torch.where(valid, order, order + sentinel)).values
    return torch.where(index >= sentinel, index - sentinel, index), valid


def gather_slots(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, j]]`` for ``values`` of shape ``(batch, n)`` or ``(batch, n, dim)``."""
    if values.dim() == 2:
        return values.gather(1, index)
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def scatter_to_positions(
    full: torch.Tensor, compact: torch.Tensor, positions: torch.Tensor, accumulate: bool = False
) -> torch.Tensor:
    """Write (or, with ``accumulate``, add) ``compact`` ``(batch, n, dim)`` into ``full`` ``(batch, T, dim)``
    at ``positions``.

    Slots whose position is ``-1`` (filler) are ignored. Returns a new tensor (autograd-safe).
    """
    seq_len = full.shape[1]
    target = torch.where(positions >= 0, positions, seq_len)  # filler slots go to a scratch column
    target = target.unsqueeze(-1).expand(-1, -1, full.shape[-1])
    padded = nn.functional.pad(full, (0, 0, 0, 1))
    compact = compact.to(full.dtype)
    padded = padded.scatter_add(1, target, compact) if accumulate else padded.scatter(1, target, compact)
    return padded[:, :seq_len]


def alive_first(alive: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots to gather so that each row's alive slots come first, in order: ``(index, valid)``, both ``(batch, width)``."""
    index = stable_sort((~alive).float()).indices[:, :width]  # a TopK when traced: the question match exports it
    valid = torch.arange(width, device=alive.device).unsqueeze(0) < alive.sum(dim=1, keepdim=True)
    return index.masked_fill(~valid, 0), valid
