"""The pure tensor pieces of the mechanism, against hand-computed values and naive references."""

import pytest
import torch

from retention_hf.gates import (
    ContextScorer,
    MLPScorer,
    QuestionMatch,
    constant_decay_prefix_sum,
    decayed_prefix_sum,
    fits_constant_decay_prefix_sum,
    gather_slots,
    hard_concrete_sample,
    masked_slots,
    scatter_to_positions,
    scheduled_keep_counts,
    select_kept_slots,
    sentence_sum,
    window_sum,
)


def loop_prefix_sum(values, decay):
    out, state = [], torch.zeros_like(values[:, 0])
    for t in range(values.shape[1]):
        state = decay[:, t] * state + values[:, t]
        out.append(state)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("seq_len", [1, 2, 7, 64, 513])
def test_decayed_prefix_sum_matches_python_loop(seq_len):
    torch.manual_seed(0)
    values = torch.randn(3, seq_len, 5, dtype=torch.float64)
    decay = torch.rand(3, seq_len, 1, dtype=torch.float64)
    torch.testing.assert_close(decayed_prefix_sum(values, decay), loop_prefix_sum(values, decay), atol=1e-10, rtol=0)


@pytest.mark.parametrize("decay", [0.9, 0.5, 1.0])
def test_the_closed_form_scan_matches_the_loop_at_the_longest_length(decay):
    """Eq. 3's decays (``decay`` at alive slots, 1 at dead ones: padding, holes, a dead prefix) over 512 slots."""
    torch.manual_seed(0)
    values = torch.randn(3, 512, 5, dtype=torch.float64)
    alive = torch.rand(3, 512) > 0.3
    alive[1, :40] = False
    alive[2, 300:] = False
    values = values * alive.unsqueeze(-1)
    decays = torch.where(alive, torch.tensor(decay, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    expected = loop_prefix_sum(values, decays.unsqueeze(-1))
    assert fits_constant_decay_prefix_sum(decay, 512)
    torch.testing.assert_close(constant_decay_prefix_sum(values, alive, decay), expected, atol=1e-10, rtol=1e-10)
    single = values.float()  # the scorer's float32: the closed form takes the decay as float32 holds it, like the scan
    scan = decayed_prefix_sum(single, torch.where(alive, decay, 1.0).unsqueeze(-1))
    torch.testing.assert_close(constant_decay_prefix_sum(single, alive, decay), scan, atol=1e-5, rtol=1e-5)
    assert not fits_constant_decay_prefix_sum(0.1, 512) and not fits_constant_decay_prefix_sum(0.0, 512)
    assert not fits_constant_decay_prefix_sum(0.9, None)


def eq3_reference(scorer: ContextScorer, hidden: torch.Tensor) -> torch.Tensor:
    """Eq. 3 written literally: m_t = g m_{t-1} + (1-g) h_t, s_t = v^T tanh(W h_t + U m_{t-1}) + b."""
    g = scorer.decay
    summary = torch.zeros(hidden.shape[0], hidden.shape[-1])
    scores = []
    for t in range(hidden.shape[1]):
        h_t = hidden[:, t]
        pre = scorer.token_proj(h_t) + scorer.context_proj(summary)
        scores.append(torch.tanh(pre) @ scorer.v + scorer.b)
        summary = g * summary + (1 - g) * h_t
    return torch.stack(scores, dim=1)


def test_context_scorer_is_eq3():
    torch.manual_seed(0)
    scorer = ContextScorer(hidden_size=16, scorer_size=8, decay=0.7)
    torch.nn.init.normal_(scorer.v)
    hidden = torch.randn(2, 11, 16)
    alive = torch.ones(2, 11, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(scorer(hidden, alive), eq3_reference(scorer, hidden), atol=1e-5, rtol=0)


def test_context_scorer_skips_dead_tokens():
    """Scores of the living tokens are the same whether the dead ones are masked or removed."""
    torch.manual_seed(0)
    scorer = ContextScorer(hidden_size=16, scorer_size=8, decay=0.5)
    torch.nn.init.normal_(scorer.v)
    hidden = torch.randn(1, 10, 16)
    alive = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        masked = scorer(hidden, alive)[alive]
        compact_hidden = hidden[:, alive[0]]
        compact = scorer(compact_hidden, torch.ones(1, compact_hidden.shape[1], dtype=torch.bool))[0]
    torch.testing.assert_close(masked, compact, atol=1e-6, rtol=0)


def test_context_scorer_ignores_trailing_padding():
    torch.manual_seed(0)
    scorer = ContextScorer(hidden_size=8, scorer_size=4, decay=0.9)
    hidden = torch.randn(1, 6, 8)
    padded = torch.cat([hidden, torch.randn(1, 3, 8)], dim=1)
    alive = torch.tensor([[1] * 6 + [0] * 3], dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(scorer(padded, alive)[:, :6], scorer(hidden, alive[:, :6]), atol=1e-6, rtol=0)


def test_mlp_scorer_is_tokenwise():
    torch.manual_seed(0)
    scorer = MLPScorer(hidden_size=8, scorer_size=4)
    torch.nn.init.normal_(scorer.v)
    hidden = torch.randn(2, 5, 8)
    alive = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        expected = torch.relu(scorer.token_proj(hidden)) @ scorer.v + scorer.b
        torch.testing.assert_close(scorer(hidden, alive), expected)
        torch.testing.assert_close(scorer(hidden[:, 2:3], alive[:, :1]), expected[:, 2:3])


def test_hard_concrete_range_and_exact_zeros_and_ones():
    torch.manual_seed(0)
    log_alpha = torch.tensor([-8.0, 0.0, 8.0]).repeat(2000, 1)
    gates = hard_concrete_sample(log_alpha, beta=0.66, gamma=-0.1, zeta=1.1)
    assert gates.min() >= 0.0 and gates.max() <= 1.0
    assert (gates[:, 0] == 0).float().mean() > 0.99  # strongly negative: clamped to exactly 0
    assert (gates[:, 2] == 1).float().mean() > 0.99  # strongly positive: clamped to exactly 1
    assert 0.1 < (gates[:, 1] == 0).float().mean() < 0.5


SCHEDULE = [1.0, 0.7, 0.5, 0.3]
LENGTHS = torch.tensor([10, 7, 3, 0, 512])
PROTECTED = torch.tensor([1, 5, 1, 1, 1])


def test_scheduled_keep_counts_meet_each_examples_budget():
    # T=7: ideal 7, 4.9, 3.5, 2.1 -> floors 7, 4, 3, 2 (16) and round(17.5 - 1/2) = 17: the 0.9 rounds up;
    # the protected 5 then lift the later layers. T=3: 3, 2.1, 1.5, 0.9 -> 7 of 7.5: the 0.9 rounds up.
    # T=512: 512, 358.4, 256, 153.6 -> 1280 exactly: the 0.6 rounds up, not the 0.4.
    counts = scheduled_keep_counts(LENGTHS, PROTECTED, SCHEDULE, 1)
    assert counts.tolist() == [[10, 7, 5, 3], [7, 5, 5, 5], [3, 2, 1, 1], [1, 1, 1, 1], [512, 358, 256, 154]]
    assert scheduled_keep_counts(LENGTHS, PROTECTED, SCHEDULE, 4).tolist() == [
        [10, 7, 5, 4],
        [7, 5, 5, 5],
        [3, 3, 3, 3],
        [1, 1, 1, 1],
        [512, 358, 256, 154],
    ]
    assert scheduled_keep_counts(LENGTHS, PROTECTED, [1.0] * 4, 1).tolist() == [
        [10] * 4,
        [7] * 4,
        [3] * 4,
        [1] * 4,
        [512] * 4,
    ]


def test_scheduled_keep_counts_ceil_rounds_every_layer_up():
    counts = scheduled_keep_counts(LENGTHS, PROTECTED, SCHEDULE, 1, rounding="ceil")
    assert counts.tolist() == [[10, 7, 5, 3], [7, 5, 5, 5], [3, 3, 2, 1], [1, 1, 1, 1], [512, 359, 256, 154]]


def test_scheduled_keep_counts_ties_go_to_the_earlier_layer_and_counts_never_grow():
    two = torch.tensor([2])
    one = torch.tensor([1])
    # 2, 1.5, 1.5, 1 -> 6 token-layers: one of the two 0.5 remainders rounds up, the earlier one
    assert scheduled_keep_counts(two, one, [1.0, 0.75, 0.75, 0.5], 1).tolist() == [[2, 2, 1, 1]]
    # a schedule that rises again is capped by the previous layer: dropped tokens do not come back
    assert scheduled_keep_counts(torch.tensor([10]), one, [1.0, 0.5, 0.6, 0.5], 1).tolist() == [[10, 5, 5, 5]]


def test_select_kept_slots_hand_built():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.2, 0.0], [0.3, 0.3, 0.3, 0.8, 0.0, 0.0]])
    real = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    protected = torch.zeros_like(real)
    protected[:, 0] = True
    keep = torch.tensor([3, 3])
    index, valid = select_kept_slots(scores, real, protected, keep, width=3)
    # row 0: slot 0 is protected, then the best two (1: 0.9, 3: 0.7), in order
    # row 1: slot 0 protected, slot 3 (0.8), then the tie 0.3/0.3 goes to the earlier slot 1
    assert index.tolist() == [[0, 1, 3], [0, 1, 3]]
    assert valid.all()


def test_select_kept_slots_ragged_and_padding_invariant():
    torch.manual_seed(0)
    scores = torch.randn(2, 8)
    real = torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.bool)
    protected = torch.zeros_like(real)
    keep = torch.tensor([4, 2])
    index, valid = select_kept_slots(scores, real, protected, keep, width=4)
    assert valid.tolist() == [[True] * 4, [True, True, False, False]]
    kept_row1 = index[1][valid[1]].tolist()
    assert kept_row1 == sorted(torch.topk(scores[1, :5], 2).indices.tolist())
    # the same row with more padding chooses the same slots
    wider = torch.cat([scores[1:], torch.randn(1, 4)], dim=1)
    wider_real = torch.cat([real[1:], torch.zeros(1, 4, dtype=torch.bool)], dim=1)
    index2, valid2 = select_kept_slots(wider, wider_real, torch.zeros_like(wider_real), keep[1:], width=2)
    assert index2[0][valid2[0]].tolist() == kept_row1
    # filler slots are the best of the others, in order; a row that keeps every real token at full width
    # is gathered unchanged (what the exported graph relies on where eager mode skips the gate)
    filler = index[1][~valid[1]].tolist()
    assert filler == sorted(filler) and not set(filler) & set(kept_row1)
    full, _ = select_kept_slots(scores, real, protected, torch.tensor([8, 5]), width=8)
    assert full.tolist() == [list(range(8)), list(range(8))]


def test_gather_and_scatter_round_trip():
    values = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    index = torch.tensor([[0, 2, 4], [1, 3, 0]])
    gathered = gather_slots(values, index)
    assert gathered[1, 1].tolist() == values[1, 3].tolist()
    full = torch.zeros_like(values)
    positions = torch.tensor([[0, 2, 4], [1, 3, -1]])  # -1: a padding slot, ignored
    restored = scatter_to_positions(full, gathered, positions)
    assert restored[0, 2].tolist() == values[0, 2].tolist()
    assert restored[1, 3].tolist() == values[1, 3].tolist()
    assert restored[1, 0].abs().sum() == 0 and restored[0, 1].abs().sum() == 0
    assert restored.shape == values.shape


def test_a_query_aware_scorer_reads_the_pooled_query():
    torch.manual_seed(0)
    scorer = ContextScorer(hidden_size=8, scorer_size=4, decay=0.9, query=True)
    torch.nn.init.normal_(scorer.v)
    hidden = torch.randn(2, 6, 8)
    alive = torch.ones(2, 6, dtype=torch.bool)
    query = torch.zeros(2, 6, dtype=torch.bool)
    query[:, :2] = True  # [CLS] and a one-token question
    scores = scorer(hidden, alive, query)
    # the same scores by hand: the scorer without the query term, plus Q times the mean of the query tokens
    plain = ContextScorer(hidden_size=8, scorer_size=4, decay=0.9)
    plain.load_state_dict({k: v for k, v in scorer.state_dict().items() if not k.startswith("query.")})
    token = plain.token_proj(hidden)
    context = plain._previous_summary(plain.context_proj(hidden), alive)
    pooled = scorer.query.query_proj(hidden[:, :2].mean(dim=1, keepdim=True))
    torch.testing.assert_close(scores, torch.tanh(token + context + pooled) @ scorer.v + scorer.b)
    # another question changes every context token's score; without a mask the scorer refuses
    other = hidden.clone()
    other[:, 1] = torch.randn(2, 8)
    changed = scorer(other, alive, query)
    assert bool((changed[:, 2:] != scores[:, 2:]).all())
    with pytest.raises(ValueError, match="needs the query tokens' mask"):
        scorer(hidden, alive)
    mlp = MLPScorer(hidden_size=8, scorer_size=4, query=True)
    assert mlp(hidden, alive, query).shape == (2, 6)


@pytest.mark.parametrize("window", [0, 1, 3, 9])
def test_window_sum_matches_a_loop(window):
    values = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.stack(
        [values[:, max(0, t - window) : t + window + 1].sum(dim=1) for t in range(values.shape[1])], dim=1
    )
    torch.testing.assert_close(window_sum(values, window), expected, rtol=0, atol=1e-6)


def test_question_match_counts_question_words_in_the_window():
    """Orthonormal states: positions 0-1 are the question, position 3 repeats its first word; window 1."""
    basis = torch.eye(8)
    hidden_states = torch.stack([basis[0], basis[1], basis[2], basis[0], basis[4], basis[5]]).unsqueeze(0)
    query_mask = torch.tensor([[True, True, False, False, False, False]])
    alive = torch.ones(1, 6, dtype=torch.bool)
    match = QuestionMatch(window=1)
    close = torch.sigmoid(torch.tensor(50.0 * (1.0 - 0.9))).item()  # a state equal to a question word's
    # only position 3 counts (distinct states give sigmoid(-45), below 1e-19; the question does not count itself)
    windows = [0.0, 0.0, close, close, close, 0.0]
    expected = torch.log1p(torch.tensor([windows]))
    torch.testing.assert_close(match(hidden_states, alive, query_mask), expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        match.match_scale.fill_(2.0)
    torch.testing.assert_close(match(hidden_states, alive, query_mask), 2 * expected)
    alive[0, 3] = False  # a dead token does not count
    torch.testing.assert_close(match(hidden_states, alive, query_mask), torch.zeros(1, 6), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs the query tokens' mask"):
        match(hidden_states, alive, None)


def test_sentence_sum_sums_over_each_slots_sentence():
    """Sentence ids as they come from the full-length input (not starting at 0, larger than the slot count): each
    slot gets its run's total, and a gather that keeps the runs' order (filler after them) changes nothing for the
    kept slots."""
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0, 32.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    sentences = torch.tensor([[3, 3, 7, 7, 7, 12], [0, 0, 0, 0, 0, 0]])
    expected = torch.tensor([[3.0, 3.0, 28.0, 28.0, 28.0, 32.0], [6.0] * 6])
    torch.testing.assert_close(sentence_sum(values, sentences), expected, rtol=0, atol=0)
    slots = torch.tensor([[0, 2, 4, 5, 1], [1, 2, 5, 0, 3]])  # row 0 keeps 4 slots, then slot 1 as filler
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    kept_values = values.gather(1, slots) * valid
    gathered = sentence_sum(kept_values, sentences.gather(1, slots))
    expected_kept = torch.tensor([[1.0, 20.0, 20.0, 32.0], [3.0, 3.0, 3.0, 3.0]])
    torch.testing.assert_close(gathered[:, :4] * valid[:, :4], expected_kept * valid[:, :4], rtol=0, atol=0)


def test_question_match_counts_question_words_in_the_sentence():
    """Orthonormal states: positions 0-1 are the question, position 3 repeats its first word; sentences [0, 0],
    [2, 3, 4, 5], [6, 7]. Every alive token of position 3's sentence gets its count, beyond any window."""
    basis = torch.eye(8)
    hidden_states = torch.stack([basis[0], basis[1], basis[2], basis[0], basis[4], basis[5], basis[6], basis[7]])
    query_mask = torch.tensor([[True, True] + [False] * 6])
    alive = torch.ones(1, 8, dtype=torch.bool)
    sentences = torch.tensor([[0, 0, 1, 1, 1, 1, 2, 2]])
    match = QuestionMatch(window=0)
    close = torch.sigmoid(torch.tensor(50.0 * (1.0 - 0.9))).item()
    expected = torch.log1p(torch.tensor([[0.0, 0.0] + [close] * 4 + [0.0, 0.0]]))
    scores = match(hidden_states.unsqueeze(0), alive, query_mask, sentences)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
    window_only = match(hidden_states.unsqueeze(0), alive, query_mask)
    assert (window_only[0] > 1e-6).nonzero().flatten().tolist() == [3]


def test_question_match_compares_with_each_rows_own_question_tokens():
    """Queries of different lengths, one not a prefix (a protected last slot): the same counts as comparing every
    token with every slot and masking the non-query columns."""
    hidden_states = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(0))
    hidden_states[1, 3] = hidden_states[1, 6]  # a context token that repeats row 1's last query token
    query_mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    alive = torch.ones(2, 7, dtype=torch.bool)
    alive[0, 5] = False
    index, valid = masked_slots(query_mask)
    assert index[valid].tolist() == [0, 1, 2, 0, 6] and valid.tolist() == [[True] * 3, [True, True, False]]
    match = QuestionMatch(window=1)
    with torch.no_grad():
        match.threshold.fill_(0.5)  # random states: some pairs pass, some do not
    unit = torch.nn.functional.normalize(hidden_states, dim=-1)
    close = torch.sigmoid(QuestionMatch.SHARPNESS * (unit @ unit.transpose(1, 2) - 0.5))
    counts = (close * query_mask.unsqueeze(1)).sum(dim=-1) * (alive & ~query_mask)
    expected = torch.log1p(window_sum(counts, 1))
    assert expected[1, 2:5].min() > 0.5  # the repeated token lifts its window
    torch.testing.assert_close(match(hidden_states, alive, query_mask), expected, rtol=0, atol=1e-6)
