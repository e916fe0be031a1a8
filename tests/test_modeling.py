"""Behaviour of the retention models, run once per family (BERT and RoBERTa) on tiny random configs."""

from __future__ import annotations

import inspect
from fractions import Fraction
from itertools import accumulate
from math import ceil, floor

import pytest
import torch
from huggingface_hub.errors import StrictDataclassFieldValidationError

import retention_hf.modeling_retention as modeling
from retention_hf.gates import scheduled_keep_counts
from retention_hf.modeling_retention import sentence_ids

from families import FAMILIES, QA_PROTECTION


TASKS = ["base", "sequence", "token", "qa"]


@pytest.fixture(params=FAMILIES, ids=lambda family: family.name)
def family(request):
    return request.param


def primary_output(outputs):
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits
    if getattr(outputs, "start_logits", None) is not None:
        return torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)
    return outputs.last_hidden_state


def make_model(family, task="base", attn_implementation="eager", seed=0, **config):
    torch.manual_seed(seed)
    config.setdefault("retention_schedule", "uniform")  # the counts these tests assert are written for it
    if task == "qa":
        config.setdefault("num_labels", 2)
    model_class = family.classes[task][0]
    return model_class(family.config(attn_implementation=attn_implementation, **config)).eval()


def stock_checkpoint(family, task, tmp_path):
    """A vanilla (stock transformers) checkpoint with random weights, saved to disk."""
    torch.manual_seed(1)
    num_labels = 2 if task == "qa" else 3
    stock = family.classes[task][1](family.stock_config(attn_implementation="eager", num_labels=num_labels)).eval()
    path = tmp_path / f"stock-{family.name}-{task}"
    stock.save_pretrained(path)
    return stock, path


def layer_input_lengths(model, inputs, grad=False):
    """Sequence length seen by every ``encoder.layer[i]``, recorded with forward hooks."""
    lengths = {}
    hooks = [
        layer.register_forward_hook(lambda module, args, output, i=i: lengths.__setitem__(i, args[0].shape[1]))
        for i, layer in enumerate(model.base_model.encoder.layer)
    ]
    with torch.set_grad_enabled(grad):
        outputs = model(**inputs)
    for hook in hooks:
        hook.remove()
    return [lengths[i] for i in range(len(lengths))], outputs


def exact_counts(length: int, ratios, minimum: int = 1, protected: int = 1, rounding: str = "budget") -> list[int]:
    """The kept count of every layer, in exact arithmetic: a reference for ``scheduled_keep_counts``."""
    ideal = [Fraction(str(ratio)) * length for ratio in ratios]
    if rounding == "ceil":
        counts = [ceil(value) for value in ideal]
    else:  # round(sum) token-layers in all; the largest fractional parts (earlier layer on ties) round up
        counts = [floor(value) for value in ideal]
        extra = ceil(sum(ideal) - Fraction(1, 2)) - sum(counts)
        for layer in sorted(range(len(ideal)), key=lambda i: (counts[i] - ideal[i], i))[:extra]:
            counts[layer] += 1
    counts = [min(max(count, minimum, protected), max(length, 1)) for count in counts]
    return list(accumulate(counts, min))


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("task", TASKS)
def test_vanilla_checkpoint_loads_and_matches_stock(family, task, tmp_path):
    stock, path = stock_checkpoint(family, task, tmp_path)
    model_class = family.classes[task][0]
    inputs = family.inputs([9, 6, 3], seq_len=12)
    with torch.no_grad():
        expected = primary_output(stock(**inputs))
    for overrides in ({"retention_enabled": False}, {"retention_ratio": 1.0}):
        model, info = model_class.from_pretrained(path, output_loading_info=True, **overrides)
        model.eval()
        assert not info["unexpected_keys"]
        assert info["missing_keys"], "the gates are new weights"
        assert all(key.split("encoder.gates.")[0] in ("", f"{family.name}.") for key in info["missing_keys"]), info[
            "missing_keys"
        ]
        assert model.config.model_type == f"retention-{family.name}"
        with torch.no_grad():
            outputs = model(**inputs)
        torch.testing.assert_close(primary_output(outputs), expected, atol=1e-5, rtol=0)
        if task == "base":
            torch.testing.assert_close(outputs.pooler_output, stock(**inputs).pooler_output, atol=1e-5, rtol=0)
        assert outputs.kept_counts.tolist() == [[9] * 4, [6] * 4, [3] * 4]


@pytest.mark.parametrize("task", TASKS)
def test_budget_one_is_the_stock_encoder_in_training_too(family, task, tmp_path):
    stock, path = stock_checkpoint(family, task, tmp_path)
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    model = family.classes[task][0].from_pretrained(path, retention_ratio=1.0, **no_dropout).train()
    inputs = family.inputs([9, 6, 3], seq_len=12)
    outputs = model(**inputs)
    with torch.no_grad():
        torch.testing.assert_close(primary_output(outputs), primary_output(stock(**inputs)), atol=1e-5, rtol=0)
    primary_output(outputs).sum().backward()
    assert all(parameter.grad is None for parameter in model.base_model.encoder.gates.parameters())
    assert outputs.kept_counts.tolist() == [[9] * 4, [6] * 4, [3] * 4]
    model.config.retention_ratio = 0.5  # a budget below 1 samples the gates again
    assert model(**inputs).expected_keep_ratio is not None


# ---------------------------------------------------------------------------------------------- eval: compact
def test_layer_input_lengths_follow_the_schedule(family):
    schedule = [1.0, 0.7, 0.5, 0.3]
    model = make_model(family, retention_schedule=schedule, retention_ratio=sum(schedule) / 4)
    lengths = [30, 17, 9, 4, 1]
    inputs = family.inputs(lengths, seq_len=32)
    seen, outputs = layer_input_lengths(model, inputs)
    expected_counts = [exact_counts(t, schedule) for t in lengths]
    assert outputs.kept_counts.tolist() == expected_counts
    # layer 0 is ungated and runs on the padded batch; then the longest kept row sets the width
    assert seen == [32] + [max(row[i] for row in expected_counts) for i in range(1, 4)]
    for i, positions in enumerate(outputs.kept_positions):
        assert positions.shape == (len(lengths), seen[i])
        assert (positions >= 0).sum(dim=1).tolist() == [row[i] for row in expected_counts]


@pytest.mark.parametrize("first_gated", [0, 1])
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_uniform_schedule_kept_counts(family, first_gated, ratio):
    model = make_model(family, retention_ratio=ratio, retention_first_gated_layer=first_gated)
    model.config.retention_schedule = "uniform"
    lengths = [40, 23, 11, 2]
    seen, outputs = layer_input_lengths(model, family.inputs(lengths, seq_len=40))
    gated = (Fraction(str(ratio)) * 4 - first_gated) / (4 - first_gated)
    per_layer = [Fraction(1)] * first_gated + [gated] * (4 - first_gated)
    expected = [exact_counts(t, per_layer) for t in lengths]
    assert outputs.kept_counts.tolist() == expected
    assert seen[first_gated] == max(row[first_gated] for row in expected)
    # the rows long enough not to hit the one-token floor spend their budget to half a token-layer
    realised = outputs.keep_ratio[:2]
    tolerance = torch.tensor([0.5 / (4 * t) for t in lengths[:2]]) + 1e-6
    assert torch.all((realised - ratio).abs() <= tolerance), realised


def test_cls_kept_order_preserved_and_drops_permanent(family):
    model = make_model(family, retention_ratio=0.3, retention_first_gated_layer=0)
    outputs = model(**family.inputs([25, 18, 7], seq_len=25))
    previous = None
    for positions in outputs.kept_positions:
        assert torch.all(positions[:, 0] == 0), "the first token ([CLS] / <s>) is always kept"
        for row in positions:
            kept = row[row >= 0].tolist()
            assert kept == sorted(kept) and len(set(kept)) == len(kept)
        if previous is not None:
            for before, after in zip(previous, positions, strict=True):
                assert set(after[after >= 0].tolist()) <= set(before[before >= 0].tolist())
        previous = positions


def test_restore_puts_tokens_back(family):
    model = make_model(family, retention_ratio=0.4, retention_first_gated_layer=1)
    inputs = family.inputs([20, 13, 6], seq_len=20)
    with torch.no_grad():
        compact = model(**inputs, output_hidden_states=True)
        restored = model(**inputs, restore_dropped_tokens=True).last_hidden_state
    assert restored.shape == (3, 20, 32)
    final = compact.kept_positions[-1]
    for row in range(3):
        for slot, position in enumerate(final[row].tolist()):
            if position >= 0:  # every kept token is back at its original position
                torch.testing.assert_close(restored[row, position], compact.last_hidden_state[row, slot])
    # a token dropped before layer l carries the representation it had entering layer l
    for layer in range(1, 4):
        before, after = compact.kept_positions[layer - 1], compact.kept_positions[layer]
        states = compact.hidden_states[layer]  # output of layer l-1, slots aligned with `before`
        for row in range(3):
            survivors = set(after[row].tolist())
            for slot, position in enumerate(before[row].tolist()):
                if position >= 0 and position not in survivors:
                    torch.testing.assert_close(restored[row, position], states[row, slot])


@pytest.mark.parametrize("schedule", ["uniform", "decay"])
@pytest.mark.parametrize("task", ["sequence", "token", "qa"])
def test_per_example_budgets_give_each_row_its_output_alone(family, task, schedule):
    model = make_model(family, task, retention_ratio=0.5, retention_schedule=schedule)
    lengths, budgets = [23, 9, 16, 3, 20], [0.3, 1.0, 0.5, 0.7, 0.3]
    batch = family.inputs(lengths, seq_len=23, seed=4)
    with torch.no_grad():
        mixed = model(**batch, retention_ratio=torch.tensor(budgets))
        for row, (length, budget) in enumerate(zip(lengths, budgets, strict=True)):
            alone = model(**{k: v[row : row + 1, :length] for k, v in batch.items()}, retention_ratio=budget)
            assert mixed.kept_counts[row].tolist() == alone.kept_counts[0].tolist()
            for layer, positions in enumerate(alone.kept_positions):
                kept = mixed.kept_positions[layer][row]
                assert kept[kept >= 0].tolist() == positions[0][positions[0] >= 0].tolist()
            output = mixed.logits[row] if task == "sequence" else primary_output(mixed)[row, :length]
            torch.testing.assert_close(output, primary_output(alone)[0], atol=1e-5, rtol=0)
    # each row spends its own budget: the 20-token row at 0.3, the 9-token one at 1 (every token, every layer)
    assert mixed.kept_counts[1].tolist() == [9] * 4
    assert mixed.keep_ratio[4].item() == pytest.approx(0.3, abs=0.5 / 20)
    # the same budget for every row is the scalar call
    with torch.no_grad():
        same = model(**batch, retention_ratio=[0.3] * 5)
        scalar = model(**batch, retention_ratio=0.3)
    torch.testing.assert_close(primary_output(same), primary_output(scalar), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (torch.tensor([0.5, 0.3]), r"retention_ratio has 2 values, expected one per example \(3\)"),
        ([0.5, 0.0, 0.3], r"retention_ratio must be a number in \(0, 1\], got 0.0"),
        (torch.tensor([0.5, 1.2, 0.3]), r"retention_ratio must be a number in \(0, 1\], got 1.2"),
        (torch.full((3, 2), 0.5), r"one number per example, got a tensor of shape \(3, 2\)"),
        (0.0, r"retention_ratio must be a number in \(0, 1\], got 0.0"),
    ],
)
def test_bad_per_call_budgets_are_rejected(family, budget, message):
    model = make_model(family, "sequence", retention_ratio=0.5)
    with pytest.raises(ValueError, match=message):
        model(**family.inputs([5, 4, 3]), retention_ratio=budget)


def test_a_per_call_budget_where_no_budget_selects_is_an_error(family):
    inputs = family.inputs([5, 4, 3])
    threshold = make_model(family, "sequence", retention_ratio=0.5, retention_inference_selection="threshold")
    with pytest.raises(ValueError, match=r"retention_ratio=0.3 was given, but threshold selection does not select"):
        threshold(**inputs, retention_ratio=0.3)
    soft = make_model(family, "sequence", retention_ratio=0.5).train()  # Hard-Concrete gates
    with pytest.raises(ValueError, match=r"retention_ratio=\[0.3, 0.5, 0.7\] was given, but Hard-Concrete training"):
        soft(**inputs, retention_ratio=[0.3, 0.5, 0.7])
    dense = make_model(family, "sequence", retention_ratio=0.5, retention_enabled=False)
    assert dense(**inputs, retention_ratio=0.3).keep_ratio.tolist() == [1.0, 1.0, 1.0]  # retention off runs dense


@pytest.mark.parametrize("task", ["sequence", "token", "qa"])
def test_batch_invariance(family, task):
    model = make_model(family, task, retention_ratio=0.4)
    lengths = [23, 9, 16, 3]
    batch = family.inputs(lengths, seq_len=23, seed=3)
    with torch.no_grad():
        batched = model(**batch)
        for row, length in enumerate(lengths):
            alone = model(**{k: v[row : row + 1, :length] for k, v in batch.items()})
            for layer, positions in enumerate(alone.kept_positions):
                kept_alone = positions[0][positions[0] >= 0].tolist()
                kept_batch = batched.kept_positions[layer][row]
                assert kept_alone == kept_batch[kept_batch >= 0].tolist()
            if task == "sequence":
                torch.testing.assert_close(batched.logits[row], alone.logits[0], atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(
                    primary_output(batched)[row, :length], primary_output(alone)[0], atol=1e-5, rtol=0
                )


def test_protected_tokens_survive(family):
    protected_id = 7
    model = make_model(
        family, retention_ratio=0.3, retention_first_gated_layer=0, retention_protected_token_ids=[protected_id]
    )
    inputs = family.inputs([30, 20], seq_len=30)
    inputs["input_ids"][0, [5, 17, 29]] = protected_id
    inputs["input_ids"][1, 11] = protected_id
    protected_mask = torch.zeros(2, 30, dtype=torch.bool)
    protected_mask[1, 2:8] = True  # e.g. a question segment
    outputs = model(**inputs, protected_mask=protected_mask)
    for positions in outputs.kept_positions:
        assert {0, 5, 17, 29} <= set(positions[0].tolist())
        assert {0, 2, 3, 4, 5, 6, 7, 11} == set(positions[1].tolist()) - {-1}
    # row 0 keeps 0.3 * 30 = 9 (4 of them protected); row 1 has 8 protected tokens, more than
    # 0.3 * 20 = 6: protection wins over the budget
    assert outputs.kept_counts[:, 1].tolist() == [9, 8]


def test_protect_first_segment_keeps_the_question(family):
    separator = 7
    model = make_model(
        family,
        "qa",
        retention_ratio=0.3,
        retention_first_gated_layer=0,
        retention_protected_token_ids=[separator],
        retention_protect_first_segment=True,
    )
    inputs = family.inputs([40, 30, 20], seq_len=40)
    inputs["input_ids"][inputs["input_ids"] == separator] = separator + 1  # separators only where placed below
    inputs["input_ids"][0, [6, 39]] = separator  # [CLS] q1..q5 [SEP] context [SEP]
    inputs["input_ids"][1, [9, 10, 29]] = separator  # RoBERTa style: <s> q </s></s> context </s>
    outputs = model(**inputs)  # row 2 has no separator: only its first position is protected
    for positions in outputs.kept_positions:
        assert set(range(7)) | {39} <= set(positions[0].tolist())
        assert set(range(11)) | {29} <= set(positions[1].tolist())
        assert 0 in positions[2].tolist()
    # the question counts towards the budget: 0.3 * 40 = 12 slots, 8 of them protected
    assert outputs.kept_counts[:, -1].tolist() == [12, 12, 6]
    assert outputs.start_logits.shape == (3, 40)


def test_protect_first_segment_needs_input_ids(family):
    model = make_model(family, retention_protected_token_ids=[7], retention_protect_first_segment=True)
    with pytest.raises(ValueError, match="retention_protect_first_segment finds the first segment in input_ids"):
        model(inputs_embeds=torch.randn(1, 5, 32))


def test_min_tokens_and_short_rows(family):
    model = make_model(family, retention_ratio=0.3, retention_first_gated_layer=0, retention_min_tokens=4)
    outputs = model(**family.inputs([30, 5, 3, 1], seq_len=30))
    assert outputs.kept_counts[:, -1].tolist() == [9, 4, 3, 1]
    assert torch.isfinite(outputs.last_hidden_state).all()


# ---------------------------------------------------------------------------------------------- train: soft gates
def test_training_outputs_carry_differentiable_budget_terms(family):
    model = make_model(family, "sequence", retention_ratio=0.5, retention_first_gated_layer=1).train()
    outputs = model(**family.inputs([12, 7, 3], seq_len=12), labels=torch.tensor([0, 1, 2]))
    assert outputs.expected_keep_ratio.shape == (3,)
    assert outputs.expected_layer_keep_ratio.shape == (3, 4)
    assert outputs.expected_keep_ratio.requires_grad
    per_layer = outputs.expected_layer_keep_ratio
    assert torch.all(per_layer[:, 0] == 1.0), "layer 0 is ungated"
    assert torch.all(per_layer[:, 1:] <= per_layer[:, :-1] + 1e-6), "keep probabilities multiply along depth"
    assert torch.all((per_layer > 0) & (per_layer <= 1))
    torch.testing.assert_close(outputs.expected_keep_ratio, per_layer.mean(dim=1))
    assert torch.all(outputs.kept_counts[:, 1:] <= outputs.kept_counts[:, :-1])
    (outputs.loss + outputs.expected_keep_ratio.mean()).backward()
    for name, parameter in model.named_parameters():
        if ".gates." in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_expected_ratio_is_normalised_per_example_over_real_tokens(family):
    """The first gate's expected keep ratio of a row does not depend on padding or neighbours."""
    model = make_model(family, retention_ratio=0.5, retention_first_gated_layer=0).train()
    batch = family.inputs([14, 5], seq_len=14, seed=4)
    batched = model(**batch).expected_layer_keep_ratio[:, 0]
    alone = model(**{k: v[1:, :5] for k, v in batch.items()}).expected_layer_keep_ratio[:, 0]
    torch.testing.assert_close(batched[1:], alone, atol=1e-6, rtol=0)


def fixed_gates(dropped: set[int]):
    """A stand-in for the Hard-Concrete sampler: every gate 1, except 0 at the given positions."""

    def sample(log_alpha, *args, **kwargs):
        gates = torch.ones_like(log_alpha)
        for position in dropped:
            if position < gates.shape[1]:
                gates[:, position] = 0.0
        return gates

    return sample


def test_soft_drop_equals_physical_removal(family, monkeypatch):
    """A token whose gate is exactly 0 in training is as good as absent: same outputs as removing it."""
    model = make_model(family, "token", retention_ratio=0.5, retention_first_gated_layer=0).train()
    inputs = family.inputs([10], seq_len=10, seed=5)
    dropped = {3, 4, 8}
    kept = [i for i in range(10) if i not in dropped]
    position_ids = torch.arange(10).unsqueeze(0) + (2 if family.name == "roberta" else 0)

    monkeypatch.setattr(modeling, "hard_concrete_sample", fixed_gates(dropped))
    masked = model(**inputs, position_ids=position_ids).logits[0, kept]
    monkeypatch.setattr(modeling, "hard_concrete_sample", fixed_gates(set()))
    removed = model(
        input_ids=inputs["input_ids"][:, kept],
        attention_mask=inputs["attention_mask"][:, kept],
        position_ids=position_ids[:, kept],
    ).logits[0]
    torch.testing.assert_close(masked, removed, atol=1e-5, rtol=0)


def test_dropped_tokens_stay_dropped_in_training(family, monkeypatch):
    model = make_model(family, retention_ratio=0.5, retention_first_gated_layer=0).train()
    calls = {"n": 0}

    def sample(log_alpha, *args, **kwargs):  # drop token 2 at the first gate, token 5 at the third
        gates = torch.ones_like(log_alpha)
        gates[:, {0: 2, 2: 5}.get(calls["n"], 0)] = 0.0 if calls["n"] in (0, 2) else 1.0
        calls["n"] += 1
        return gates

    monkeypatch.setattr(modeling, "hard_concrete_sample", sample)
    inputs_seen = []
    hooks = [layer.register_forward_hook(lambda m, a, o: inputs_seen.append(a[0][0])) for layer in model.encoder.layer]
    outputs = model(**family.inputs([8], seq_len=8))
    for hook in hooks:
        hook.remove()
    zero_rows = [set(torch.nonzero(x.abs().sum(-1) == 0).flatten().tolist()) for x in inputs_seen]
    assert zero_rows == [{2}, {2}, {2, 5}, {2, 5}]
    assert outputs.kept_counts.tolist() == [[7, 7, 6, 6]]


# ---------------------------------------------------------------------------------------------- attention backends etc.
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_eager_equals_sdpa(family, mode):
    eager = make_model(family, "sequence", "eager", retention_ratio=0.4)
    sdpa = make_model(family, "sequence", "sdpa", retention_ratio=0.4)
    sdpa.load_state_dict(eager.state_dict())
    inputs = family.inputs([16, 10, 4], seq_len=16)
    outputs = []
    for model in (eager, sdpa):
        model.train(mode == "train")
        torch.manual_seed(0)
        outputs.append(model(**inputs))
    torch.testing.assert_close(outputs[0].logits, outputs[1].logits, atol=1e-5, rtol=0)
    assert outputs[0].kept_counts.tolist() == outputs[1].kept_counts.tolist()


def test_gradient_checkpointing_gives_the_same_gradients(family):
    grads = []
    for checkpointing in (False, True):
        model = make_model(family, "sequence", retention_ratio=0.5).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(0)
        outputs = model(**family.inputs([12, 8], seq_len=12), labels=torch.tensor([1, 2]))
        (outputs.loss + outputs.expected_keep_ratio.mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    gate_grads = [name for name in grads[1] if ".gates." in name]
    assert len(gate_grads) == 4 * 5  # four gated layers, five parameters each (W and its bias, U, v, b)
    assert all(grads[1][name].abs().sum() > 0 for name in gate_grads)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_bf16_autocast(family, mode):
    model = make_model(family, "sequence", "sdpa", retention_ratio=0.5).train(mode == "train")
    inputs = family.inputs([14, 6], seq_len=14)
    reference = model(**inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(**inputs)
    assert torch.isfinite(outputs.logits).all()
    assert outputs.kept_counts.shape == reference.kept_counts.shape
    if mode == "eval":
        assert outputs.kept_counts.tolist() == reference.kept_counts.tolist()
        torch.testing.assert_close(outputs.logits.float(), reference.logits, atol=0.1, rtol=0)


def test_torch_compile_runs(family):
    model = make_model(family, "sequence", "sdpa", retention_ratio=0.5)
    inputs = family.inputs([14, 6], seq_len=14)
    with torch.no_grad():
        expected = model(**inputs)
        compiled = torch.compile(model)(**inputs)
    torch.testing.assert_close(compiled.logits, expected.logits, atol=1e-5, rtol=0)
    assert compiled.kept_counts.tolist() == expected.kept_counts.tolist()


def test_hidden_states_and_attentions_follow_the_kept_lengths(family):
    model = make_model(family, retention_ratio=0.5)
    outputs = model(**family.inputs([12, 5], seq_len=12), output_hidden_states=True, output_attentions=True)
    widths = [positions.shape[1] for positions in outputs.kept_positions]
    # hidden_states[0] is what layer 0 receives: with a gate before layer 0, the selected tokens only
    assert [h.shape[1] for h in outputs.hidden_states] == [widths[0]] + widths
    assert widths[0] < 12
    assert [a.shape[-1] for a in outputs.attentions] == widths


# ---------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("seq_len", [1, 2])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_very_short_sequences(family, seq_len, mode):
    model = make_model(family, "sequence", retention_ratio=0.3, retention_first_gated_layer=0).train(mode == "train")
    outputs = model(**family.inputs([seq_len, 1], seq_len=seq_len))
    assert outputs.logits.shape == (2, 3) and torch.isfinite(outputs.logits).all()
    if mode == "eval":
        assert outputs.kept_counts.tolist() == [[1] * 4, [1] * 4]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_all_padding_rows(family, mode):
    model = make_model(family, "token", retention_ratio=0.5).train(mode == "train")
    inputs = family.inputs([9, 0, 4], seq_len=9)
    outputs = model(**inputs)
    assert torch.isfinite(outputs.logits).all()
    assert outputs.kept_counts[1].tolist() == [0, 0, 0, 0]
    assert outputs.keep_ratio[1].item() == 0.0
    if mode == "eval":  # the empty row does not disturb its neighbours
        alone = model(**{k: v[:1] for k, v in inputs.items()})
        torch.testing.assert_close(outputs.logits[0], alone.logits[0], atol=1e-5, rtol=0)


def test_inputs_embeds_equal_input_ids(family):
    model = make_model(family, "sequence", retention_ratio=0.4)
    inputs = family.inputs([12, 7], seq_len=12)
    from_ids = model(**inputs)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    kwargs = {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"]}
    if family.name == "roberta":  # RoBERTa derives positions from the ids; give them explicitly
        mask = inputs["attention_mask"]
        kwargs["position_ids"] = (torch.cumsum(mask, dim=1) * mask + family.pad_token_id).long()
    from_embeds = model(**kwargs)
    torch.testing.assert_close(from_embeds.logits, from_ids.logits, atol=1e-5, rtol=0)
    assert from_embeds.kept_counts.tolist() == from_ids.kept_counts.tolist()


def test_explicit_token_type_and_position_ids(family, tmp_path):
    stock, path = stock_checkpoint(family, "sequence", tmp_path)
    model = family.classes["sequence"][0].from_pretrained(path, retention_enabled=False).eval()
    inputs = family.inputs([10, 6], seq_len=10)
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    if family.name == "bert":
        inputs["token_type_ids"][:, 5:] = 1
    inputs["position_ids"] = torch.arange(10).flip(0).unsqueeze(0).expand(2, 10) + 2
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, stock(**inputs).logits, atol=1e-5, rtol=0)
        model.config.retention_enabled = True
        model.config.retention_ratio = 0.5
        with_ids = model(**inputs)
        inputs["position_ids"] = inputs["position_ids"].flip(1)
        assert not torch.allclose(model(**inputs).logits, with_ids.logits)


def test_invalid_inputs_raise_clear_errors(family):
    model = make_model(family, retention_ratio=0.5)
    inputs = family.inputs([6, 4], seq_len=6)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(input_ids=inputs["input_ids"], inputs_embeds=torch.zeros(2, 6, 32))
    with pytest.raises(ValueError, match=r"2D padding mask of shape \(2, 6\)"):
        model(input_ids=inputs["input_ids"], attention_mask=torch.ones(2, 1, 6, 6))
    with pytest.raises(ValueError, match=r"protected_mask has shape \(2, 5\)"):
        model(**inputs, protected_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(
        StrictDataclassFieldValidationError, match=r"retention_ratio must be a number in \(0, 1\], got 1.5"
    ):
        model.config.retention_ratio = 1.5
    with pytest.raises(StrictDataclassFieldValidationError, match="got -0.2"):
        model.config.retention_ratio = -0.2
    assert model.config.retention_ratio == 0.5  # a rejected value leaves the config untouched


def test_wrong_config_type_is_rejected(family):
    base = family.classes["base"][0]
    with pytest.raises(
        TypeError,
        match=f"{base.__name__} needs a {family.config_class.__name__}, got {family.stock_config_class.__name__}",
    ):
        base(family.stock_config())
    other = [f for f in FAMILIES if f is not family][0]
    with pytest.raises(TypeError, match=f"got {other.config_class.__name__}"):
        family.classes["sequence"][0](other.config())


def test_training_needs_a_maskable_attention(family):
    model = make_model(family, retention_ratio=0.5).train()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="needs attn_implementation 'eager' or 'sdpa'"):
        model(**family.inputs([5], seq_len=5))


@pytest.mark.parametrize("rounding", ["budget", "ceil"])
def test_scheduled_keep_counts_match_exact_arithmetic(rounding):
    lengths = torch.arange(0, 513)
    schedules = ([1, 0.7, 0.5, 0.3], [0.3] * 4, [0.5, 0.5, 0.16, 0.16], [1] * 4, [0.9, 0.45, 0.3, 0.15])
    for schedule in schedules:
        expected = [exact_counts(int(t), schedule, rounding=rounding) for t in lengths]
        counts = scheduled_keep_counts(lengths, torch.ones_like(lengths), [float(r) for r in schedule], 1, rounding)
        assert counts.tolist() == expected, schedule


def test_budget_rounding_spends_the_budget_where_ceil_overspends(family):
    lengths = list(range(6, 16))
    inputs = family.inputs(lengths, seq_len=16)
    realised = {}
    for rounding in ("budget", "ceil"):
        model = make_model(
            family, retention_ratio=0.5, retention_schedule="geometric", retention_count_rounding=rounding
        )
        realised[rounding] = model(**inputs).keep_ratio.mean().item()
    assert abs(realised["budget"] - 0.5) < 0.01
    assert realised["ceil"] > 0.54


# ---------------------------------------------------------------------------------------------- training variants
@pytest.mark.parametrize("task", ["sequence", "token"])
def test_sparse_training_matches_masked_training(family, task):
    """Physically dropping the tokens whose gate is exactly 0 gives the masked path's loss and gradients."""
    results = []
    for sparse in (False, True):
        model = make_model(
            family, task, retention_ratio=0.5, retention_gate_init_bias=0.0, retention_first_gated_layer=0
        ).train()
        model.config.retention_sparse_training = sparse
        with torch.no_grad():  # a scorer that separates tokens, so that many gates are exactly 0
            for gate in model.base_model.encoder.gates.values():
                gate.v.normal_(0, 2.0)
        inputs = family.inputs([24, 17, 9], seq_len=24, seed=7)
        labels = torch.tensor([0, 1, 2]) if task == "sequence" else inputs["input_ids"] % 3
        torch.manual_seed(11)
        seen, outputs = layer_input_lengths(model, {**inputs, "labels": labels}, grad=True)
        (outputs.loss + outputs.expected_keep_ratio.sum()).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((outputs, grads, seen))
    (masked, masked_grads, masked_lengths), (sparse, sparse_grads, sparse_lengths) = results
    assert masked_lengths == [24] * 4
    assert sparse_lengths[-1] < 24, "the sparse path really runs shorter layers"
    torch.testing.assert_close(sparse.loss, masked.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.expected_layer_keep_ratio, masked.expected_layer_keep_ratio, atol=1e-6, rtol=0)
    assert sparse.kept_counts.tolist() == masked.kept_counts.tolist()
    assert set(sparse_grads) == set(masked_grads)
    for name, grad in masked_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, atol=1e-5, rtol=1e-4)


def test_sigmoid_gates_are_deterministic(family):
    model = make_model(family, "sequence", retention_ratio=0.5, retention_gate_sampling="sigmoid").train()
    inputs = family.inputs([12, 7], seq_len=12)
    first, second = model(**inputs), model(**inputs)
    torch.testing.assert_close(first.logits, second.logits)
    # sigmoid gates are never exactly 0: every token is processed, its expected cost is its gate
    assert first.kept_counts.tolist() == [[12] * 4, [7] * 4]
    assert torch.all(first.expected_layer_keep_ratio[:, 1:] < 1)


def test_threshold_selection_keeps_tokens_above_the_threshold(family):
    model = make_model(family, retention_ratio=0.5, retention_inference_selection="threshold")
    with torch.no_grad():
        for gate in model.encoder.gates.values():
            gate.v.normal_(0, 3.0)
            gate.b.fill_(-1.0)
    inputs = family.inputs([20, 11], seq_len=20)
    seen = {}
    hooks = [
        gate.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(int(i), (o, a[1])))
        for i, gate in model.encoder.gates.items()
    ]
    outputs = model(**inputs)
    for hook in hooks:
        hook.remove()
    for layer in range(1, 4):
        logits, real = seen[layer]
        passing = model.encoder._keep_probability(logits) >= 0.5
        passing[:, 0] = True  # the first token is protected
        expected = (passing & real).sum(dim=1).clamp(min=1)
        assert outputs.kept_counts[:, layer].tolist() == expected.tolist()
        previous = outputs.kept_positions[layer - 1]
        kept = outputs.kept_positions[layer]
        for row in range(2):  # exactly the passing tokens survive
            survivors = {p for p, ok in zip(previous[row].tolist(), (passing & real)[row].tolist(), strict=True) if ok}
            assert set(kept[row].tolist()) - {-1} == survivors
    assert outputs.kept_counts[:, -1].tolist() != [20, 11], "the threshold drops tokens"


@pytest.mark.parametrize("scorer", ["context", "mlp"])
def test_question_match_keeps_the_context_around_a_repeated_question_word(family, scorer):
    """Question [CLS] 7 8 [SEP]; the context repeats word 8 at position 14. With the word embeddings scaled up (so
    a repeated word has the same state at any position) and a large match scale, the first gate keeps the window of
    2 around it, which the same model without the match does not."""
    inputs = family.inputs([20] * 2, seed=5)
    inputs["input_ids"][:, 1:4] = torch.tensor([7, 8, 4])
    inputs["input_ids"][:, 4:] = torch.arange(30, 46)
    inputs["input_ids"][0, 14] = 8

    def first_layer_kept(match: bool) -> list[set[int]]:
        model = make_model(
            family,
            "qa",
            retention_ratio=0.5,
            retention_scorer=scorer,
            retention_scorer_question_match=match,
            retention_scorer_match_window=2,
            **QA_PROTECTION,
        )
        with torch.no_grad():
            model.base_model.embeddings.word_embeddings.weight.mul_(100.0)
            for gate in model.base_model.encoder.gates.values():
                if match:
                    assert gate.question_match.threshold.item() == pytest.approx(0.9)
                    gate.question_match.match_scale.fill_(100.0)
            outputs = model(**inputs)
        return model, [set(row.tolist()) - {-1} for row in outputs.kept_positions[0]]

    model, kept = first_layer_kept(match=True)
    assert {0, 1, 2, 3} <= kept[0] and {12, 13, 14, 15, 16} <= kept[0]
    assert not {12, 13, 14, 15, 16} <= kept[1], "row 1 has no repeated question word"
    _, blind = first_layer_kept(match=False)
    assert not {12, 13, 14, 15, 16} <= blind[0]
    model.train()  # both training modes run with the match
    model.config.retention_train_with_topk = True
    assert model(**inputs).start_logits.shape == (2, 20)
    model.config.retention_train_with_topk = False
    assert model(**inputs).expected_keep_ratio.shape == (2,)
    model.config.retention_scorer_question_match = False
    with pytest.raises(
        ValueError, match="retention_scorer_question_match=False, but this model's gates were built with"
    ):
        model(**inputs)


def test_question_match_over_sentences_keeps_the_whole_sentence_at_every_gate(family):
    """As above, with sentence ends (id 5) at positions 9 and 17: the sentence of the repeated word is 10-17, wider
    than the window of 2. Every gate ranks that sentence first while the repeated word is alive, so each layer keeps
    all of it or only it (with the question); the sentence ids follow the tokens through every gather."""
    inputs = family.inputs([20] * 2, seed=5)
    inputs["input_ids"][:, 1:4] = torch.tensor([7, 8, 4])
    inputs["input_ids"][:, 4:] = torch.arange(30, 46)
    inputs["input_ids"][:, [9, 17]] = 5
    inputs["input_ids"][0, 14] = 8
    model = make_model(
        family,
        "qa",
        retention_ratio=0.5,
        retention_schedule="decay",
        retention_scorer_question_match=True,
        retention_scorer_match_window=2,
        retention_scorer_match_sentence_end_ids=[5],
        **QA_PROTECTION,
    )
    assert sentence_ids(model.config, inputs["input_ids"])[0].tolist() == [0] * 10 + [1] * 8 + [2] * 2
    with torch.no_grad():
        model.base_model.embeddings.word_embeddings.weight.mul_(100.0)
        for gate in model.base_model.encoder.gates.values():
            gate.question_match.match_scale.fill_(100.0)
        outputs = model(**inputs)
    question, sentence = {0, 1, 2, 3}, set(range(10, 18))
    counts = outputs.kept_counts[0].tolist()
    assert counts[0] > 12 > counts[-1], "the schedule keeps more than question and sentence first, fewer last"
    for layer_positions in outputs.kept_positions:
        kept = set(layer_positions[0].tolist()) - {-1}
        if 14 not in kept:
            break
        assert sentence <= kept or kept <= question | sentence, sorted(kept)
    model.config.retention_scorer_match_sentence_end_ids = None  # the window again: 10, 11 and 17 lose their lift
    with torch.no_grad():
        windowed = set(model(**inputs).kept_positions[-1][0].tolist())
    assert {12, 13, 14, 15, 16} & windowed and not {10, 11, 17} <= windowed
    model.config.retention_scorer_match_sentence_end_ids = [5]
    with pytest.raises(ValueError, match="retention_scorer_match_sentence_end_ids finds the sentences in input_ids"):
        sentence_ids(model.config, None)  # inputs_embeds only


def test_restore_attention_catches_up_the_dropped_tokens_only(family):
    """retention_restore_attention: each token dropped before the last layer is restored with one pass of the last
    layer's attention sublayer over the tokens that layer kept (checked against the stock sublayer on its old state
    followed by the kept tokens' final states, its own key masked); kept tokens and padding are unchanged."""
    inputs = family.inputs([12, 7], seq_len=12)
    model = make_model(family, retention_ratio=0.3)
    with torch.no_grad():
        plain = model(**inputs, restore_dropped_tokens=True)
        model.config.retention_restore_attention = True
        caught = model(**inputs, restore_dropped_tokens=True)
    last_kept = plain.kept_positions[-1]
    kept = torch.zeros_like(inputs["attention_mask"], dtype=torch.bool)
    for row in range(2):
        kept[row, last_kept[row][last_kept[row] >= 0]] = True
    dropped = inputs["attention_mask"].bool() & ~kept
    assert dropped.sum(dim=1).tolist() == [12 - 3, 7 - 2]  # the last layer keeps 3 and 2 (uniform schedule)
    torch.testing.assert_close(caught.last_hidden_state[~dropped], plain.last_hidden_state[~dropped], rtol=0, atol=0)
    attention = model.encoder.layer[-1].attention
    for row, position in dropped.nonzero().tolist():
        sequence = torch.cat(
            [plain.last_hidden_state[row, position : position + 1], plain.last_hidden_state[row, kept[row]]]
        )
        own_key_masked = torch.zeros(1, 1, 1, sequence.shape[0])
        own_key_masked[..., 0] = torch.finfo(torch.float32).min
        with torch.no_grad():
            expected = attention(sequence.unsqueeze(0), attention_mask=own_key_masked)[0][0, 0]
        torch.testing.assert_close(caught.last_hidden_state[row, position], expected, rtol=0, atol=1e-5)
    qa = make_model(family, "qa", retention_ratio=0.3, retention_restore_attention=True).train()
    qa.config.retention_train_with_topk = True  # top-k training restores the same way
    qa(**inputs).start_logits.sum().backward()
    assert qa.base_model.encoder.layer[-1].attention.self.query.weight.grad.abs().sum() > 0
    qa.config.retention_train_with_topk = False
    with pytest.raises(ValueError, match="retention_restore_attention restores the tokens dropped by top-k selection"):
        qa(**inputs)


def test_forwards_take_transformers_kwargs_like_stock_bert(family):
    for model_class, *_ in family.classes.values():
        kwargs = inspect.signature(model_class.forward).parameters["kwargs"]
        assert kwargs.annotation == "Unpack[TransformersKwargs]", model_class.__name__


@pytest.mark.parametrize("scorer", ["context", "mlp"])
def test_query_aware_gates_rank_context_by_the_question(family, scorer):
    inputs = family.inputs([20] * 8, seed=5)
    inputs["input_ids"][:, 4] = 4  # a 3-token question, then its separator, then 15 context tokens
    inputs["input_ids"][:, 5:] = inputs["input_ids"][0, 5:]  # every row has the same context

    def first_gate_rankings(query: bool):
        model = make_model(
            family,
            "qa",
            retention_ratio=0.4,
            retention_scorer=scorer,
            retention_scorer_query=query,
            **QA_PROTECTION,
        )
        torch.manual_seed(1)
        for gate in model.base_model.encoder.gates.values():
            torch.nn.init.normal_(gate.v, std=1.0)
            if query:
                torch.nn.init.normal_(gate.query.query_proj.weight, std=0.1)
        scores = []
        model.base_model.encoder.gates["0"].register_forward_hook(lambda module, args, output: scores.append(output))
        with torch.no_grad():
            outputs = model(**inputs)  # the first gate scores the embeddings
        assert all({0, 1, 2, 3, 4} <= set(outputs.kept_positions[-1][row].tolist()) for row in range(8))
        return model, {tuple(row.tolist()) for row in scores[0][:, 5:].argsort(dim=1, descending=True)}

    _, blind = first_gate_rankings(query=False)
    model, aware = first_gate_rankings(query=True)
    if scorer == "mlp":  # token-wise: without the question in view, the same context is ranked the same way ...
        assert len(blind) == 1
    assert len(aware) > 1  # ... with it, another question reorders the context
    model.train()  # both training modes run with the query term
    model.config.retention_train_with_topk = True
    assert model(**inputs).start_logits.shape == (8, 20)
    model.config.retention_train_with_topk = False
    assert model(**inputs).expected_keep_ratio.shape == (8,)
