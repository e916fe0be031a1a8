"""The budgeted training candidates: top-k training with straight-through scores, the L0 cost, the
bidirectional scorer, the geometric schedule, per-call budgets and the PI-damped dual variable."""

from __future__ import annotations

import math

import pytest
import torch

from retention_hf import BudgetController, RetentionTrainer, RetentionTrainingArguments
from retention_hf.gates import BidirectionalContextScorer, ContextScorer, hard_concrete_sample

from families import BERT, FAMILIES
from test_modeling import exact_counts, layer_input_lengths, make_model, primary_output
from test_trainer import collate, make_args, random_dataset, train_logs


@pytest.fixture(params=FAMILIES, ids=lambda family: family.name)
def family(request):
    return request.param


# ---------------------------------------------------------------------------------------------- scorers
def test_bidirectional_scorer_adds_a_right_to_left_summary():
    """s_t = v^T tanh(W h_t + U m_{t-1} + U' m'_{t+1}) + b, both summaries written as literal loops."""
    torch.manual_seed(0)
    scorer = BidirectionalContextScorer(hidden_size=12, scorer_size=6, decay=0.6)
    torch.nn.init.normal_(scorer.v)
    hidden = torch.randn(2, 7, 12)
    g = scorer.decay
    forward, backward = [torch.zeros(2, 12)], [torch.zeros(2, 12)]
    for t in range(7):  # forward[t] = m_{t-1}; backward[t] = m'_{t+1}
        forward.append(g * forward[-1] + (1 - g) * hidden[:, t])
        backward.append(g * backward[-1] + (1 - g) * hidden[:, 6 - t])
    expected = []
    for t in range(7):
        pre = scorer.token_proj(hidden[:, t]) + scorer.context_proj(forward[t])
        pre = pre + scorer.backward_context_proj(backward[6 - t])
        expected.append(torch.tanh(pre) @ scorer.v + scorer.b)
    with torch.no_grad():
        scores = scorer(hidden, torch.ones(2, 7, dtype=torch.bool))
    torch.testing.assert_close(scores, torch.stack(expected, dim=1), atol=1e-5, rtol=0)


def test_bidirectional_scorer_gives_the_first_token_context():
    """Eq. 3 scores the first token from itself alone; the bidirectional scorer sees what follows."""
    torch.manual_seed(0)
    causal, both = ContextScorer(8, 4, 0.9), BidirectionalContextScorer(8, 4, 0.9)
    for scorer in (causal, both):
        torch.nn.init.normal_(scorer.v)
    hidden = torch.randn(1, 6, 8)
    changed = hidden.clone()
    changed[:, 3:] = torch.randn(1, 3, 8)
    alive = torch.ones(1, 6, dtype=torch.bool)
    with torch.no_grad():
        assert causal(hidden, alive)[0, 0] == causal(changed, alive)[0, 0]
        assert both(hidden, alive)[0, 0] != both(changed, alive)[0, 0]


def test_bidirectional_scorer_skips_dead_tokens():
    torch.manual_seed(0)
    scorer = BidirectionalContextScorer(hidden_size=8, scorer_size=4, decay=0.5)
    torch.nn.init.normal_(scorer.v)
    hidden = torch.randn(1, 9, 8)
    alive = torch.tensor([[1, 0, 1, 1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        masked = scorer(hidden, alive)[alive]
        compact = scorer(hidden[:, alive[0]], torch.ones(1, int(alive.sum()), dtype=torch.bool))[0]
    torch.testing.assert_close(masked, compact, atol=1e-6, rtol=0)


def test_bidirectional_scorer_saves_and_reloads(family, tmp_path):
    model = make_model(family, "sequence", retention_scorer="bidirectional", retention_ratio=0.5)
    assert "encoder.gates.0.backward_context_proj.weight" in dict(model.base_model.named_parameters())
    inputs = family.inputs([9, 5], seq_len=9)
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(tmp_path / "m")
    reloaded = type(model).from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        after = reloaded(**inputs)
    torch.testing.assert_close(after.logits, before.logits, atol=1e-6, rtol=0)
    assert after.kept_counts.tolist() == before.kept_counts.tolist()


# ---------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_geometric_schedule(ratio):
    config = BERT.config(num_hidden_layers=6, retention_ratio=ratio, retention_schedule="geometric")
    schedule = config.retention_layer_ratios()
    q = schedule[0]
    assert schedule == pytest.approx([q**power for power in range(1, 7)], abs=1e-9)
    assert sum(schedule) / 6 == pytest.approx(ratio, abs=1e-9)
    config.retention_first_gated_layer = 1
    schedule = config.retention_layer_ratios()
    assert schedule[0] == 1.0
    assert schedule[2] == pytest.approx(schedule[1] ** 2)
    assert sum(schedule) / 6 == pytest.approx(ratio, abs=1e-9)


def test_decay_schedule_keeps_its_shape_at_every_budget():
    config = BERT.config(num_hidden_layers=6, retention_ratio=0.3, retention_schedule="decay")
    assert config.retention_schedule_decay == 0.8
    schedule = config.retention_layer_ratios()
    assert sum(schedule) / 6 == pytest.approx(0.3, abs=1e-9)
    assert [b / a for a, b in zip(schedule[:-1], schedule[1:], strict=True)] == pytest.approx([0.8] * 5, abs=1e-9)
    assert schedule[0] == pytest.approx(1.8 / sum(0.8**power for power in range(6)), abs=1e-9)  # 0.4882
    # at a high budget the first layers are capped at 1 and the rest still decay by 0.8
    high = config.retention_layer_ratios(0.9)
    assert high[:3] == [1.0, 1.0, 1.0]
    assert [high[4] / high[3], high[5] / high[4]] == pytest.approx([0.8, 0.8], abs=1e-9)
    assert sum(high) / 6 == pytest.approx(0.9, abs=1e-9)
    config.retention_schedule_decay = 1.0  # decay 1 is the uniform schedule
    assert config.retention_layer_ratios() == pytest.approx([0.3] * 6, abs=1e-9)
    config.retention_first_gated_layer = 1
    config.retention_schedule_decay = 0.5
    schedule = config.retention_layer_ratios()
    assert schedule[0] == 1.0 and schedule[2] == pytest.approx(schedule[1] * 0.5, abs=1e-9)
    assert sum(schedule) / 6 == pytest.approx(0.3, abs=1e-9)


def test_per_call_budget_rescales_the_schedule(family):
    model = make_model(family, "sequence", retention_ratio=0.625, retention_schedule=[1.0, 0.8, 0.4, 0.3])
    ratios = model.config.retention_layer_ratios(0.5)
    assert sum(ratios) / 4 == pytest.approx(0.5, abs=1e-6)
    scale = ratios[0] / 1.0  # the shape is kept: every layer is scaled alike
    assert ratios == pytest.approx([scale * r for r in [1.0, 0.8, 0.4, 0.3]], abs=1e-6)
    lengths = [20, 11, 3]
    inputs = family.inputs(lengths, seq_len=20)
    with torch.no_grad():
        outputs = model(**inputs, retention_ratio=0.5)
        default = model(**inputs)
    expected = [exact_counts(t, ratios) for t in lengths]
    assert outputs.kept_counts.tolist() == expected
    assert default.kept_counts.tolist() == [exact_counts(t, [1.0, 0.8, 0.4, 0.3]) for t in lengths]
    with pytest.raises(ValueError, match="retention_ratio must be a number in \\(0, 1\\], got 1.5"):
        model(**inputs, retention_ratio=1.5)


# ---------------------------------------------------------------------------------------------- top-k training
def topk_training_model(family, task="sequence", **config):
    settings = {
        "retention_ratio": 0.5,
        "retention_schedule": "geometric",
        "retention_train_with_topk": True,
        "retention_topk_straight_through": True,
        **config,
    }
    return make_model(family, task, **settings).train()


@pytest.mark.parametrize(
    ("task", "attention", "atol"), [("sequence", "eager", 0.0), ("qa", "eager", 0.0), ("sequence", "sdpa", 1e-5)]
)
def test_topk_training_forward_is_the_inference_selection(family, task, attention, atol):
    """Straight-through changes gradients, not values: the training pass equals the eval pass (exactly with
    eager attention; sdpa takes another kernel path for a float mask, equal up to rounding)."""
    model = topk_training_model(family, task, attn_implementation=attention)
    inputs = family.inputs([16, 9, 4], seq_len=16)
    seen, train_outputs = layer_input_lengths(model, inputs, grad=True)
    model.eval()
    eval_seen, eval_outputs = layer_input_lengths(model, inputs)
    assert seen == eval_seen and seen[0] < 16, "tokens are physically removed in training"
    assert train_outputs.kept_counts.tolist() == eval_outputs.kept_counts.tolist()
    torch.testing.assert_close(primary_output(train_outputs), primary_output(eval_outputs), atol=atol, rtol=0)


@pytest.mark.parametrize("budgets", [[1.0, 0.3, 0.6], [0.9, 0.2, 1.0]])
def test_per_example_budgets_give_each_row_its_own_gradient(budgets):
    """With per-example budgets a training row's gradients, the scorers' included, are those of the row alone: a
    budget-1 row trains the gates through their straight-through scores whether or not another row drops tokens
    (RetentionTrainer's sub-batches, retention_ratio_groups, rely on it)."""
    model = topk_training_model(BERT, retention_schedule="decay")
    inputs = BERT.inputs([12, 12, 10], seq_len=12, seed=3)

    def gradients(rows: slice, row_budgets: list[float]) -> dict[str, torch.Tensor]:
        model.zero_grad()
        outputs = model(**{key: value[rows] for key, value in inputs.items()}, retention_ratio=row_budgets)
        outputs.logits[0].sum().backward()  # the first row's output only
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    batched, alone = gradients(slice(0, 3), budgets), gradients(slice(0, 1), budgets[:1])
    assert any(".gates." in name and grad.abs().sum() > 0 for name, grad in alone.items()), "the gates learn"
    assert batched.keys() == alone.keys()
    for name, grad in alone.items():
        torch.testing.assert_close(batched[name], grad, atol=1e-6, rtol=1e-4)


def test_straight_through_gradient_is_the_derivative_of_fading_the_kept_tokens():
    """The scores' gradient equals d loss / d c of the explicit relaxation in which every kept token's input
    is scaled by e^c and its attention keys get + c (finite differences, one gate before the last layer)."""
    # the one gate keeps (0.875 * 4 - 3) = half of the tokens
    model = topk_training_model(
        BERT, retention_first_gated_layer=3, retention_ratio=0.875, retention_schedule="uniform"
    ).double()  # float64, so that the finite difference is not rounding noise
    inputs = BERT.inputs([10], seq_len=10)
    labels = torch.tensor([1])
    model(**inputs, labels=labels).loss.backward()
    analytic = model.bert.encoder.gates["3"].b.grad.item()  # sum over the kept tokens of d loss / d s_t
    kept = model.eval()(**inputs).kept_positions[3][0]
    assert len(kept) == 5

    @torch.no_grad()
    def relaxed_loss(c: float) -> float:
        hidden = model.bert.embeddings(input_ids=inputs["input_ids"])
        for layer in model.bert.encoder.layer[:3]:
            hidden = layer(hidden, None)
        log_gate = torch.where(kept == 0, 0.0, c).double()  # [CLS] is protected: no gate
        hidden = model.bert.encoder.layer[3](
            hidden[:, kept] * log_gate.exp()[None, :, None], log_gate[None, None, None, :]
        )
        logits = model.classifier(model.bert.pooler(hidden))
        return torch.nn.functional.cross_entropy(logits, labels).item()

    numeric = (relaxed_loss(1e-4) - relaxed_loss(-1e-4)) / 2e-4
    assert analytic == pytest.approx(numeric, rel=1e-4)
    assert abs(analytic) > 1e-6


def test_topk_training_sends_the_task_gradient_to_every_dropping_scorer(family):
    model = topk_training_model(family)
    inputs = family.inputs([16, 9, 4], seq_len=16)
    outputs = model(**inputs, labels=torch.tensor([0, 1, 2]))
    outputs.loss.backward()
    for index, gate in model.base_model.encoder.gates.items():
        assert gate.token_proj.weight.grad is not None and gate.token_proj.weight.grad.abs().sum() > 0, index
    backbone = model.base_model.encoder.layer[0].attention.self.query.weight.grad
    assert backbone.abs().sum() > 0
    # without straight-through the scores are only used to sort: no gradient reaches them
    model.zero_grad(set_to_none=True)
    model.config.retention_topk_straight_through = False
    model(**inputs, labels=torch.tensor([0, 1, 2])).loss.backward()
    assert all(gate.token_proj.weight.grad is None for gate in model.base_model.encoder.gates.values())


def test_topk_noise_perturbs_the_choice_not_the_counts(family):
    model = topk_training_model(family, retention_topk_noise=5.0)
    inputs = family.inputs([24, 24], seq_len=24)
    torch.manual_seed(0)
    first = model(**inputs)
    torch.manual_seed(1)
    second = model(**inputs)
    assert first.kept_counts.tolist() == second.kept_counts.tolist()
    chosen = [tuple(positions[0].tolist()) for positions in (first.kept_positions[-1], second.kept_positions[-1])]
    assert chosen[0] != chosen[1]
    model.eval()  # never at inference
    with torch.no_grad():
        assert torch.equal(model(**inputs).kept_positions[-1], model(**inputs).kept_positions[-1])


# ---------------------------------------------------------------------------------------------- L0 cost
def test_l0_cost_is_the_probability_of_a_non_zero_gate(family):
    model = make_model(family, retention_budget_cost="l0").train()
    encoder = model.base_model.encoder
    log_alpha = torch.tensor([-2.0, 0.0, 1.0])
    shift = 0.66 * math.log(0.1 / 1.1)  # beta * log(-gamma / zeta) = -1.58
    torch.testing.assert_close(encoder._budget_cost(log_alpha), torch.sigmoid(log_alpha - shift))
    assert encoder._budget_cost(torch.tensor(0.0)).item() == pytest.approx(0.8296, abs=1e-4)
    torch.manual_seed(0)
    samples = hard_concrete_sample(log_alpha.repeat(200_000, 1), beta=0.66, gamma=-0.1, zeta=1.1)
    empirical = (samples > 0).float().mean(dim=0)
    torch.testing.assert_close(empirical, encoder._budget_cost(log_alpha), atol=4e-3, rtol=0)
    model.config.retention_budget_cost = "probability"
    torch.testing.assert_close(encoder._budget_cost(log_alpha), torch.sigmoid(log_alpha))


def test_l0_cost_reaches_the_expected_keep_ratio(family):
    """With every score at s, a token survives l + 1 gates with probability P(z != 0) ** (l + 1) (no
    protected token but [CLS]); the expected ratio counts exactly that along the sampled trajectory."""
    model = make_model(family, retention_budget_cost="l0", retention_gate_init_bias=0.0).train()
    for gate in model.base_model.encoder.gates.values():
        torch.nn.init.zeros_(gate.v)
    inputs = family.inputs([11], seq_len=11)
    torch.manual_seed(0)
    outputs = model(**inputs)
    alive = outputs.kept_counts[0].float()  # tokens alive after each gate, along this sample
    survive = 0.8296 ** torch.arange(1, 5, dtype=torch.float32)  # P(z != 0) at each gate so far
    before = torch.cat([torch.tensor([11.0]), alive[:-1]])  # alive when entering each gate
    expected = (1 + (before - 1) * survive) / 11
    torch.testing.assert_close(outputs.expected_layer_keep_ratio[0], expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------- dual variable
def test_pi_controller_arithmetic():
    budget = BudgetController(target=0.5, dual_step_size=0.1, damping=2.0)
    assert budget.dual_update(0.3) == pytest.approx(0.03 + 0.6)  # I = 0.03, lambda = I + k_p * 0.3
    assert budget.state.integral == pytest.approx(0.03)
    assert budget.dual_update(-0.1) == pytest.approx(0.0)  # I = 0.02, lambda = max(0, 0.02 - 0.2)
    assert budget.state.integral == pytest.approx(0.02)


def test_budget_state_without_integral_loads(tmp_path):
    """A checkpoint written before the PI controller existed resumes as projected ascent from its lambda."""
    (tmp_path / "budget_state.json").write_text('{"lagrange_multiplier": 1.5, "steps": 7, "layer_keep_ema": null}')
    budget = BudgetController(target=0.5, dual_step_size=0.1)
    assert budget.load(tmp_path)
    assert budget.state.integral == 1.5 and budget.state.steps == 7
    assert budget.dual_update(0.2) == pytest.approx(1.52)


def test_pi_controller_state_survives_save_and_load(tmp_path):
    budget = BudgetController(target=0.5, dual_step_size=0.1, damping=2.0)
    budget.dual_update(0.3)
    budget.save(tmp_path)
    restored = BudgetController(target=0.5, dual_step_size=0.1, damping=2.0)
    assert restored.load(tmp_path)
    assert restored.state == budget.state
    assert restored.dual_update(0.1) == budget.dual_update(0.1)


def synthetic_budget_run(damping: float, steps: int = 300) -> list[float]:
    """A keep ratio sigmoid(x) that the task wants at 1, held to 0.3 by the dual variable; plain SGD on x."""
    x = torch.nn.Parameter(torch.tensor(2.0))
    optimizer = torch.optim.SGD([x], lr=0.5)
    budget = BudgetController(target=0.3, dual_step_size=1.0, damping=damping)
    keeps = []
    for _ in range(steps):
        keep = torch.sigmoid(x).reshape(1)
        loss = -torch.log(keep).sum() + budget.penalty(keep)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        budget.accumulate(keep.detach(), keep.detach().reshape(1, 1))
        budget.step()
        keeps.append(keep.item())
    return keeps


def test_damping_removes_the_overshoot_of_dual_ascent():
    """Pure dual ascent overshoots and rings around the target; the PI-damped lambda settles within 0.03
    of it without ever dropping below it by more than 0.03."""
    plain, damped = synthetic_budget_run(0.0), synthetic_budget_run(10.0)
    assert min(plain) < 0.3 - 0.1  # the failure the damping fixes
    assert min(damped) > 0.3 - 0.03
    assert all(abs(keep - 0.3) < 0.03 for keep in damped[150:])


# ---------------------------------------------------------------------------------------------- trainer
def make_topk_trainer(tmp_path, **overrides):
    torch.manual_seed(0)
    model = BERT.classes["sequence"][0](BERT.config(retention_schedule="geometric"))
    arguments = {"retention_ratio": 0.5, "selection_training": "topk", "max_steps": 4, **overrides}
    return RetentionTrainer(
        model=model,
        args=make_args(tmp_path, **arguments),
        train_dataset=random_dataset(),
        data_collator=lambda features: collate(features, BERT.pad_token_id),
    )


def test_topk_trainer_holds_the_exact_budget(tmp_path):
    trainer = make_topk_trainer(tmp_path)
    config = trainer.model.config
    ratios = config.retention_layer_ratios(0.5)
    lengths = []
    hook = trainer.model.base_model.encoder.layer[-1].register_forward_hook(
        lambda module, args, output: lengths.append(args[0].shape[1])
    )
    batches = []
    collator = trainer.data_collator
    trainer.data_collator = lambda features: batches.append(collator(features)) or batches[-1]
    trainer.train()
    hook.remove()
    logs = train_logs(trainer)
    assert len(logs) == 4
    for entry, batch in zip(logs, batches, strict=True):
        real = batch["attention_mask"].sum(dim=1).tolist()
        expected = sum(sum(exact_counts(t, ratios)) / (len(ratios) * t) for t in real) / len(real)
        assert entry["keep_ratio"] == pytest.approx(expected, abs=1e-5)
        assert entry["lambda"] == 0.0 and "budget_penalty" not in entry
    assert all(length < max(batch["input_ids"].shape[1] for batch in batches) for length in lengths)
    assert config.retention_learned_schedule is None  # the model keeps the schedule it trained with
    assert config.retention_train_with_topk is False  # back to the default after training


def test_the_default_recipe_trains_with_topk(tmp_path):
    args = RetentionTrainingArguments(
        output_dir=str(tmp_path / "out"),
        retention_ratio=0.5,
        budget_warmup_steps=0,
        max_steps=2,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    assert (args.selection_training, args.topk_finetune_steps) == ("topk", 0)
    torch.manual_seed(0)
    trainer = RetentionTrainer(
        model=BERT.classes["sequence"][0](BERT.config()),
        args=args,
        train_dataset=random_dataset(),
        data_collator=lambda features: collate(features, BERT.pad_token_id),
    )
    trainer.train()
    logs = train_logs(trainer)
    assert len(logs) == 2 and all("budget_penalty" not in entry and entry["lambda"] == 0.0 for entry in logs)
    assert all(abs(entry["keep_ratio"] - 0.5) < 0.05 for entry in logs)  # exact budget, up to rounding
    assert trainer.model.config.retention_learned_schedule is None
    paper = RetentionTrainingArguments(output_dir=str(tmp_path), report_to="none", selection_training="hard_concrete")
    assert paper.topk_finetune_steps == 0.5  # Hard-Concrete keeps its final top-k phase by default
    with pytest.raises(ValueError, match="budget_cost configure the Hard-Concrete budget.*'hard_concrete'"):
        RetentionTrainingArguments(output_dir=str(tmp_path), report_to="none", budget_cost="l0")


def test_topk_training_refuses_a_learned_schedule_it_cannot_learn(tmp_path):
    model = BERT.classes["sequence"][0](BERT.config(retention_schedule="learned"))
    with pytest.raises(ValueError, match="retention_schedule='learned' needs config.retention_learned_schedule"):
        RetentionTrainer(model=model, args=make_args(tmp_path, selection_training="topk"))
    model.config.retention_learned_schedule = [1.0, 0.6, 0.4, 0.2]  # measured by an earlier Hard-Concrete run
    assert RetentionTrainer(model=model, args=make_args(tmp_path, selection_training="topk")).selects_by_topk


def test_a_saved_topk_flag_never_switches_a_hard_concrete_run(tmp_path):
    """A checkpoint saved in the middle of a top-k run carries retention_train_with_topk=True; a Hard-Concrete
    trainer on it still trains with gates and the budget penalty."""
    torch.manual_seed(0)
    model = BERT.classes["sequence"][0](BERT.config(retention_train_with_topk=True))
    trainer = RetentionTrainer(
        model=model,
        args=make_args(tmp_path, retention_ratio=0.5, max_steps=2),
        train_dataset=random_dataset(),
        data_collator=lambda features: collate(features, BERT.pad_token_id),
    )
    assert model.config.retention_train_with_topk is False
    trainer.train()
    assert all("budget_penalty" in entry and "expected_keep_ratio" in entry for entry in train_logs(trainer))


def test_topk_trainer_anneals_the_budget(tmp_path):
    trainer = make_topk_trainer(tmp_path, budget_warmup_steps=4, max_steps=4)
    seen = []
    trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("retention_ratio")), with_kwargs=True
    )
    trainer.train()
    assert seen == pytest.approx([1.0, 0.875, 0.75, 0.625])


def test_topk_trainer_trains_the_scorers(tmp_path):
    trainer = make_topk_trainer(tmp_path, max_steps=3)
    before = {n: p.clone() for n, p in trainer.model.named_parameters() if ".gates." in n}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if ".gates." in n and not torch.equal(p, before[n])]
    assert any(name.endswith("token_proj.weight") for name in changed)


def test_topk_resume_restores_the_annealed_target(tmp_path):
    arguments = {"budget_warmup_steps": 4, "max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    full = make_topk_trainer(tmp_path / "a", **arguments)
    full.train()
    resumed = make_topk_trainer(tmp_path / "a", **arguments)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-2"))
    assert resumed.budget.state == full.budget.state
    assert [e["budget_target"] for e in train_logs(resumed)] == [e["budget_target"] for e in train_logs(full)]
    assert [e["keep_ratio"] for e in train_logs(resumed)] == pytest.approx([e["keep_ratio"] for e in train_logs(full)])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"selection_training": "topk", "topk_finetune_steps": 0.3}, "set topk_finetune_steps=0"),
        ({"dual_damping": -1.0}, r"dual_damping \(k_p\) must be >= 0, got -1.0"),
        ({"topk_noise": -0.5}, "topk_noise must be a finite number >= 0, got -0.5"),
        ({"selection_training": "gumbel"}, "selection_training"),
        ({"budget_cost": "tokens"}, "budget_cost"),
        ({"selection_training": "topk", "inference_selection": "threshold"}, "a probability threshold"),
        ({"selection_training": "topk", "budget_cost": "l0"}, "budget_cost configure the Hard-Concrete budget"),
        ({"selection_training": "topk", "exact_sparse_training": True}, "exact_sparse_training configure"),
        ({"selection_training": "topk", "dual_step_size": 2.0}, "dual_step_size configure the Hard-Concrete budget"),
        ({"selection_training": "topk", "initial_lambda": 0.5}, "initial_lambda configure the Hard-Concrete budget"),
        ({"topk_noise": 1.0}, "topk_noise=1.0 applies to selection_training='topk' only"),
        ({"budget_cost": "l0", "gate_sampling": "sigmoid"}, "budget_cost='l0' is the probability"),
    ],
)
def test_bad_selection_arguments(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **overrides)


# ---------------------------------------------------------------------------------------------- merged slot
def test_merge_dropped_folds_a_running_mean_of_the_dropped_tokens():
    from retention_hf.modeling_retention import RetentionEncoder

    hidden = torch.arange(10.0).view(1, 5, 2)  # tokens 0..4, values 2t and 2t+1
    real = torch.tensor([[True, True, True, True, False]])
    slots, valid = torch.tensor([[0, 2, 1]]), torch.tensor([[True, True, False]])  # keeps 0 and 2 of 0..3
    merged, mass = RetentionEncoder._merge_dropped(hidden, real, slots, valid, torch.zeros(1, 1, 2), torch.zeros(1))
    assert mass.tolist() == [2.0]  # tokens 1 and 3 (token 4 is padding)
    torch.testing.assert_close(merged, torch.tensor([[[4.0, 5.0]]]))  # mean of (2, 3) and (6, 7)
    # the next gate sees the compacted slots (tokens 0 and 2, then the filler) and keeps token 2 only: token 0
    # joins the merged slot, which weighs its earlier mean by its two tokens
    compact, compact_real = hidden[:, [0, 2, 1]], torch.tensor([[True, True, False]])
    again, mass = RetentionEncoder._merge_dropped(
        compact, compact_real, torch.tensor([[1]]), torch.tensor([[True]]), merged, mass
    )
    assert mass.tolist() == [3.0]
    torch.testing.assert_close(again, torch.tensor([[[(2 + 6 + 0) / 3, (3 + 7 + 1) / 3]]]))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_merged_slot_takes_one_kept_slot_and_changes_the_outputs(family, attention):
    inputs = family.inputs([16, 9, 4], seq_len=16)
    plain = make_model(family, "sequence", attn_implementation=attention, retention_ratio=0.5)
    merging = make_model(family, "sequence", attn_implementation=attention, retention_ratio=0.5)
    merging.config.retention_merge_dropped = True
    with torch.no_grad():
        expected, outputs = plain(**inputs), merging(**inputs)
    # the same number of slots per layer (one of them the merged slot), one real token fewer where it exists
    assert outputs.kept_counts.tolist() == expected.kept_counts.tolist()
    real = torch.stack([(positions >= 0).sum(dim=1) for positions in outputs.kept_positions], dim=1)
    dropped = expected.kept_counts < inputs["attention_mask"].sum(dim=1, keepdim=True)
    has_slot = dropped.long().cummax(dim=1).values.bool()
    assert (real == outputs.kept_counts - has_slot.long()).all() and has_slot.any()
    assert not torch.allclose(outputs.logits, expected.logits)
    # nothing dropped, nothing merged: the plain model's outputs
    with torch.no_grad():
        full, plain_full = merging(**inputs, retention_ratio=1.0), plain(**inputs, retention_ratio=1.0)
    torch.testing.assert_close(full.logits, plain_full.logits, atol=1e-5, rtol=0)


def test_merged_slot_trains_the_dropped_tokens_and_is_not_exported(family):
    model = topk_training_model(family, "sequence")
    model.config.retention_merge_dropped = True
    inputs = family.inputs([16, 9, 4], seq_len=16)
    embeddings = model.base_model.embeddings.word_embeddings.weight
    model(**inputs, labels=torch.tensor([0, 1, 2])).loss.backward()
    ids = inputs["input_ids"]
    model.eval()
    with torch.no_grad():
        kept = set(model(**inputs).kept_positions[-1][0].tolist())
    dropped_ids = {int(ids[0, t]) for t in range(16) if t not in kept} - {int(ids[0, t]) for t in kept}
    assert dropped_ids and all(embeddings.grad[i].abs().sum() > 0 for i in dropped_ids)
    with pytest.raises(NotImplementedError, match="retention_merge_dropped cannot be traced"):
        torch.export.export(model, (), {"input_ids": ids, "attention_mask": inputs["attention_mask"]}, strict=False)
    pytest.importorskip("onnx")
    from retention_hf.export import to_onnx

    with pytest.raises(NotImplementedError, match="retention_merge_dropped=True is not exportable to ONNX yet"):
        to_onnx(model, "unused")
