"""RetentionTrainer and RetentionTrainingArguments on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertForSequenceClassification, HfArgumentParser, TrainerCallback

from retention_hf import RetentionTrainer, RetentionTrainingArguments
from retention_hf.model_card import card_data_from_checkpoint

from families import BERT, ROBERTA


def random_dataset(size=32, seed=0, token_labels=False, max_len=18):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(size):
        length = int(torch.randint(4, max_len, (1,), generator=generator))
        ids = torch.randint(3, 99, (length,), generator=generator).tolist()
        ids[0] = 2
        if token_labels:
            labels = [i % 3 for i in ids]
            labels[0] = -100
        else:
            labels = ids[1] % 3
        rows.append({"input_ids": ids, "labels": labels})
    return Dataset.from_list(rows)


def collate(features, pad_token_id=0):
    length = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), length), pad_token_id)
    attention_mask = torch.zeros(len(features), length, dtype=torch.long)
    for row, feature in enumerate(features):
        input_ids[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
        attention_mask[row, : len(feature["input_ids"])] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "labels" not in features[0]:
        return batch
    if isinstance(features[0]["labels"], list):  # token labels, padded with -100
        batch["labels"] = torch.full((len(features), length), -100)
        for row, feature in enumerate(features):
            batch["labels"][row, : len(feature["labels"])] = torch.tensor(feature["labels"])
    else:
        batch["labels"] = torch.tensor([feature["labels"] for feature in features])
    return batch


def make_args(tmp_path, **overrides):
    defaults = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "num_train_epochs": 1,
        "learning_rate": 1e-3,
        "gate_learning_rate": 1e-2,
        "gate_bias_learning_rate": 1e-2,
        "budget_warmup_steps": 0,
        # the Hard-Concrete recipe (the tests of top-k training ask for it), without its final top-k phase (the
        # tests that need that phase ask for it)
        "selection_training": "hard_concrete",
        "topk_finetune_steps": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        "data_seed": 0,
    }
    defaults.update(overrides)
    return RetentionTrainingArguments(**defaults)


def make_trainer(tmp_path, family=BERT, task="sequence", dataset=None, model_config=None, **arg_overrides):
    torch.manual_seed(0)
    model = family.classes[task][0](family.config(**(model_config or {})))
    dataset = dataset if dataset is not None else random_dataset(token_labels=task == "token")
    return RetentionTrainer(
        model=model,
        args=make_args(tmp_path, **arg_overrides),
        train_dataset=dataset,
        data_collator=lambda features: collate(features, family.pad_token_id),
    )


def train_logs(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


# ---------------------------------------------------------------------------------------------- arguments
def test_arguments_from_the_command_line():
    parser = HfArgumentParser(RetentionTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        args=[
            "--output_dir=x",
            "--retention_ratio=0.3",
            "--dual_step_size=0.5",
            "--initial_lambda=0.1",
            "--budget_warmup_steps=20",
            "--gate_learning_rate=1e-2",
            "--selection_training=hard_concrete",
            "--fixed_lambda",
            "--gate_sampling=sigmoid",
            "--inference_selection=threshold",
            "--use_cpu",
        ]
    )
    assert (args.retention_ratio, args.dual_step_size, args.initial_lambda) == (0.3, 0.5, 0.1)
    assert (args.budget_warmup_steps, args.gate_learning_rate, args.fixed_lambda) == (20, 1e-2, True)
    assert (args.selection_training, args.gate_sampling, args.inference_selection) == (
        "hard_concrete",
        "sigmoid",
        "threshold",
    )
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(args=["--output_dir=x", "--gate_sampling=gumbel"])


# a range of budgets with the sandwich rule
SANDWICH = {"selection_training": "topk", "retention_ratio_range": [0.2, 1.0], "retention_ratio_sampling": "sandwich"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"retention_ratio": 0.0}, r"retention_ratio must be in \(0, 1\], got 0.0"),
        ({"retention_ratio": 1.5}, r"retention_ratio must be in \(0, 1\], got 1.5"),
        ({"dual_step_size": -1.0}, r"dual_step_size \(eta\) must be >= 0, got -1.0"),
        ({"initial_lambda": -0.5}, r"initial_lambda must be >= 0, got -0.5"),
        ({"budget_warmup_steps": -1}, r"budget_warmup_steps must be a step count >= 0 or a ratio in \[0, 1\), got -1"),
        ({"budget_warmup_steps": 2.5}, r"got 2.5"),
        ({"gate_learning_rate": 0.0}, r"gate_learning_rate must be > 0, got 0.0"),
        ({"gate_bias_learning_rate": -1.0}, r"gate_bias_learning_rate must be > 0, got -1.0"),
        ({"exact_sparse_training": True, "gate_sampling": "sigmoid"}, r"exact_sparse_training needs gate_sampling"),
        ({"retention_ratio_range": [0.5]}, r"retention_ratio_range must be two numbers \(low, high\), got \[0.5\]"),
        ({"retention_ratio_range": [0.6, 0.3]}, r"must satisfy 0 < low <= high <= 1, got \(0.6, 0.3\)"),
        ({"retention_ratio_range": [0.0, 1.0]}, r"must satisfy 0 < low <= high <= 1, got \(0.0, 1.0\)"),
        ({"retention_ratio_range": [0.2, 1.0]}, r"retention_ratio_range samples the budget of the top-k selection"),
        ({"retention_ratio_sampling": "min-max"}, r"retention_ratio_sampling must be one of \('uniform', 'sandwich'\)"),
        ({"retention_ratio_groups": 0}, r"retention_ratio_groups must be a whole number >= 1, got 0"),
        (
            {"retention_ratio_groups": 2},
            r"retention_ratio_groups=2 groups the budgets drawn with retention_ratio_range; one budget needs no groups",
        ),
        (
            {"retention_ratio_distribution": "geometric"},
            r"retention_ratio_distribution must be one of \('uniform', 'log_uniform'\), got 'geometric'",
        ),
        (
            {
                "selection_training": "topk",
                "topk_finetune_steps": 0,
                "retention_ratio_range": [0.3, 1.0],
                "retention_ratio_sampling": "sandwich",
                "per_device_train_batch_size": 2,
            },
            r"with per_device_train_batch_size=2 no example would draw a budget in between",
        ),
        (
            {
                "selection_training": "topk",
                "retention_ratio_range": [0.2, 1.0],
                "retention_ratio_sandwich_shares": [0.1, 0.2],
            },
            r"retention_ratio_sandwich_shares=\[0.1, 0.2\] sizes the ends of the sandwich rule: set "
            r"retention_ratio_sampling='sandwich'",
        ),
        (
            {**SANDWICH, "retention_ratio_sandwich_shares": [0.25]},
            r"retention_ratio_sandwich_shares must be two shares in \[0, 1\), got \[0.25\]",
        ),
        (
            {**SANDWICH, "retention_ratio_sandwich_shares": [-0.1, 0.25]},
            r"retention_ratio_sandwich_shares must be two shares in \[0, 1\), got \[-0.1, 0.25\]",
        ),
        (
            {**SANDWICH, "retention_ratio_sandwich_shares": [False, 0.25]},
            r"retention_ratio_sandwich_shares must be two shares in \[0, 1\), got \[False, 0.25\]",
        ),
        (
            {**SANDWICH, "retention_ratio_sandwich_shares": [0.5, 0.5]},
            r"sandwich_shares \[0.5, 0.5\] leave no example to draw a budget in between",
        ),
        (
            {"retention_ratio_sampling": "sandwich", "retention_ratio_sandwich_shares": [0.1, 0.2]},
            r"retention_ratio_sandwich_shares=\[0.1, 0.2\] sizes the ends of the sandwich rule of "
            r"retention_ratio_range: set it or drop them",
        ),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **overrides)


def test_trainer_needs_a_retention_model(tmp_path):
    stock = BertForSequenceClassification(BERT.stock_config())
    with pytest.raises(TypeError, match="needs a retention model .* got BertForSequenceClassification"):
        RetentionTrainer(model=stock, args=make_args(tmp_path))
    model = BERT.classes["sequence"][0](BERT.config())
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="needs RetentionTrainingArguments, got TrainingArguments"):
        RetentionTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path)))


def test_arguments_reach_the_model_config(tmp_path):
    trainer = make_trainer(
        tmp_path, retention_ratio=0.3, gate_sampling="sigmoid", inference_selection="threshold", max_steps=1
    )
    config = trainer.model.config
    assert (config.retention_ratio, config.retention_gate_sampling, config.retention_inference_selection) == (
        0.3,
        "sigmoid",
        "threshold",
    )
    assert trainer.budget.target == 0.3


def test_gate_parameters_get_their_own_learning_rates(tmp_path):
    trainer = make_trainer(
        tmp_path, learning_rate=1e-4, gate_learning_rate=3e-3, gate_bias_learning_rate=5e-2, max_steps=1
    )
    trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    expected = {name: 5e-2 if name.endswith(".b") else 3e-3 if ".gates." in name else 1e-4 for name in names.values()}
    seen = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            seen[names[id(p)]] = group["lr"]
    assert seen == expected
    assert sum(name.endswith(".b") for name in seen) == 4  # one output bias per gated layer


def test_backbone_and_gates_are_clipped_separately(tmp_path):
    trainer = make_trainer(tmp_path, max_grad_norm=1.0, max_steps=1)
    model = trainer.model
    for name, p in model.named_parameters():
        p.grad = torch.full_like(p, 100.0 if ".gates." in name else 1e-4)
    backbone_before = {n: p.grad.clone() for n, p in model.named_parameters() if ".gates." not in n}
    trainer._clip_grad_norm(model)
    for name, grad in backbone_before.items():  # tiny backbone gradients are untouched by the huge gate ones
        torch.testing.assert_close(model.get_parameter(name).grad, grad)
    gate_norm = torch.norm(torch.stack([p.grad.norm() for n, p in model.named_parameters() if ".gates." in n]))
    assert gate_norm.item() == pytest.approx(1.0, rel=1e-4)


# ---------------------------------------------------------------------------------------------- dual ascent
def test_lambda_rises_when_the_model_keeps_too_much(tmp_path):
    trainer = make_trainer(tmp_path, retention_ratio=0.3, dual_step_size=0.5, max_steps=4)
    trainer.train()
    logs = train_logs(trainer)
    lambdas = [entry["lambda"] for entry in logs]
    assert all(later > earlier for earlier, later in zip(lambdas, lambdas[1:], strict=False))
    # the first step: lambda = eta * (expected keep - target) with the gates starting near keep-all
    assert lambdas[0] == pytest.approx(0.5 * (logs[0]["expected_keep_ratio"] - 0.3), rel=1e-4)
    for entry in logs:
        assert {"task_loss", "budget_penalty", "keep_ratio", "budget_target"} <= set(entry)
        assert [f"keep_ratio_layer_{i}" in entry for i in range(4)] == [True] * 4
        assert entry["loss"] == pytest.approx(entry["task_loss"] + entry["budget_penalty"], rel=1e-4)


def test_lambda_falls_to_zero_under_budget(tmp_path):
    trainer = make_trainer(
        tmp_path,
        model_config={"retention_gate_init_bias": -12.0},  # gates start closed: far under budget
        retention_ratio=0.9,
        initial_lambda=0.6,
        dual_step_size=0.5,
        max_steps=4,
    )
    trainer.train()
    lambdas = [entry["lambda"] for entry in train_logs(trainer)]
    assert lambdas[0] < 0.6 and lambdas[-1] == 0.0
    assert all(entry["expected_keep_ratio"] < 0.9 for entry in train_logs(trainer))


@pytest.mark.parametrize("warmup", [2, 0.5])  # two steps, or half of the four steps
def test_budget_warmup_anneals_the_logged_target(tmp_path, warmup):
    trainer = make_trainer(tmp_path, retention_ratio=0.5, budget_warmup_steps=warmup, max_steps=4)
    trainer.train()
    assert [entry["budget_target"] for entry in train_logs(trainer)] == pytest.approx([1.0, 0.75, 0.5, 0.5])


# ---------------------------------------------------------------------------------------------- accumulation
class GradientRecorder(TrainerCallback):
    def __init__(self, model):
        self.model, self.gradients = model, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.gradients.append({n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None})


def accumulation_runs(tmp_path, task: str, log_key: str, **recipe) -> list[tuple[list[dict], list[float]]]:
    """Three optimizer steps at batch 8 x 1 and at 4 x 2: each run's gradients before every step, and its logged
    ``log_key``."""
    runs = []
    for batch_size, accumulation in [(8, 1), (4, 2)]:
        trainer = make_trainer(
            tmp_path,
            task=task,
            retention_ratio=0.4,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=3,
            max_grad_norm=0.0,
            **recipe,
        )
        recorder = GradientRecorder(trainer.model)
        trainer.add_callback(recorder)
        trainer.train()
        runs.append((recorder.gradients, [entry[log_key] for entry in train_logs(trainer)]))
    return runs


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_accumulation_matches_one_big_batch(tmp_path, task):
    # deterministic gates: the two runs see identical gates
    (grads_big, lambdas_big), (grads_acc, lambdas_acc) = accumulation_runs(
        tmp_path, task, "lambda", gate_sampling="sigmoid", initial_lambda=0.5
    )
    assert lambdas_acc == pytest.approx(lambdas_big, rel=1e-5, abs=1e-7)
    assert len(grads_big) == len(grads_acc) == 3
    for big, accumulated in zip(grads_big, grads_acc, strict=True):
        assert any(".gates." in name for name in big)
        for name, grad in big.items():
            torch.testing.assert_close(accumulated[name], grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_topk_accumulation_matches_one_big_batch(tmp_path, task):
    """The default recipe: top-k selection is per example, so 4 x 2 and 8 x 1 give the same gradients and keeps."""
    (grads_big, keeps_big), (grads_acc, keeps_acc) = accumulation_runs(
        tmp_path, task, "keep_ratio", selection_training="topk"
    )
    assert keeps_acc == pytest.approx(keeps_big, rel=1e-6) and max(keeps_big) < 0.5  # the budget binds
    assert len(grads_big) == len(grads_acc) == 3
    for big, accumulated in zip(grads_big, grads_acc, strict=True):
        assert any(".gates." in name and grad.abs().sum() > 0 for name, grad in big.items())  # scores learn
        for name, grad in big.items():
            torch.testing.assert_close(accumulated[name], grad, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- checkpoints
def test_resume_restores_the_budget_exactly(tmp_path):
    common = {"retention_ratio": 0.3, "dual_step_size": 0.5, "max_steps": 6, "save_strategy": "steps", "save_steps": 3}
    full = make_trainer(tmp_path / "full", **common)
    full.train()
    state = json.loads((tmp_path / "full/out/checkpoint-3/budget_state.json").read_text())
    assert state["steps"] == 3 and state["lambda_by_rank"] == [state["lagrange_multiplier"]]
    assert state["lagrange_multiplier"] == pytest.approx(train_logs(full)[2]["lambda"])

    resumed = make_trainer(tmp_path / "full", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full/out/checkpoint-3"))
    keys = ["loss", "lambda", "expected_keep_ratio", "keep_ratio", "task_loss", "budget_penalty"]
    expected_logs = [{k: e[k] for k in keys} for e in train_logs(full)[3:]]
    resumed_logs = [{k: e[k] for k in keys} for e in train_logs(resumed)[3:]]  # [:3] came from the checkpoint
    assert len(resumed_logs) == 3
    for got, want in zip(resumed_logs, expected_logs, strict=True):
        assert got == pytest.approx(want, rel=1e-5)
    assert resumed.budget.state == full.budget.state


def recorded_training_calls(trainer, read) -> list:
    """``read(kwargs)`` of every training forward pass of ``trainer``'s model, appended as training runs."""
    seen = []

    def record(module, args, kwargs):
        if module.training:
            seen.append(read(kwargs))

    trainer.model.register_forward_pre_hook(record, with_kwargs=True)
    return seen


def recorded_budgets(trainer) -> list[list[float] | float | None]:
    """The ``retention_ratio`` of every training forward pass of ``trainer``'s model (a micro-batch's draws whole
    where the trainer runs it in one pass, ``retention_ratio_groups=1``)."""

    def budget(kwargs):
        value = kwargs.get("retention_ratio")
        return value.tolist() if isinstance(value, torch.Tensor) else value

    return recorded_training_calls(trainer, budget)


@pytest.mark.parametrize(
    ("sampling", "distribution"), [("uniform", "uniform"), ("sandwich", "uniform"), ("sandwich", "log_uniform")]
)
def test_budget_sampling_draws_each_example_in_the_range(tmp_path, sampling, distribution):
    trainer = make_trainer(
        tmp_path,
        selection_training="topk",
        retention_ratio=0.5,
        retention_ratio_range=[0.3, 0.9],
        retention_ratio_sampling=sampling,
        retention_ratio_distribution=distribution,
        retention_ratio_groups=1,
        budget_warmup_steps=2,
        max_steps=4,
        distillation_weight=0,
    )
    seen = recorded_budgets(trainer)
    trainer.train()
    assert len(seen) == 4 and all(len(budgets) == 8 for budgets in seen)
    assert seen[0] == [1.0] * 8  # the warm-up starts every draw at 1.0 ...
    for budgets in seen[2:]:  # ... and from step 2 on the draws are the budgets themselves
        assert all(0.3 <= value <= 0.9 for value in budgets) and len(set(budgets)) >= 6
        if sampling == "sandwich":
            assert budgets[:2] == pytest.approx([0.3, 0.9])
    # half-way through the warm-up every draw is half-way from 1.0
    assert all(0.65 - 1e-6 <= value <= 0.95 + 1e-6 for value in seen[1])
    logs = train_logs(trainer)
    for entry, budgets in zip(logs, seen, strict=True):  # each example spends its own budget
        assert entry["budget_target"] == pytest.approx(sum(budgets) / 8, rel=1e-5)
        assert entry["keep_ratio"] == pytest.approx(entry["budget_target"], abs=0.06)


@pytest.mark.parametrize(
    ("overrides", "warmup"),
    [
        ({}, 0.3),  # one budget: anneal over the first 30 % of the run
        ({"selection_training": "topk", "retention_ratio_range": [0.2, 1.0]}, 0.0),  # a range: the draws from step 0
        ({"selection_training": "topk", "retention_ratio_range": [0.2, 1.0], "budget_warmup_steps": 0.1}, 0.1),
    ],
)
def test_the_budget_warmup_default_depends_on_the_range(tmp_path, overrides, warmup):
    args = make_args(tmp_path, **{"budget_warmup_steps": None, **overrides})  # None: the default
    assert args.budget_warmup_steps == warmup
    # and so do the sub-batches: 4 for a range (``retention_ratio_groups``), none for one budget
    assert args.retention_ratio_groups == (1 if "retention_ratio_range" not in overrides else 4)
    explicit = make_args(tmp_path, **{**overrides, "retention_ratio_groups": 1})
    assert explicit.retention_ratio_groups == 1


def test_a_range_of_budgets_trains_at_its_draws_from_the_first_step(tmp_path):
    trainer = make_trainer(
        tmp_path,
        selection_training="topk",
        retention_ratio=0.5,
        retention_ratio_range=[0.3, 0.9],
        retention_ratio_groups=1,
        budget_warmup_steps=None,  # the default
        max_steps=2,
        distillation_weight=0,
    )
    seen = recorded_budgets(trainer)
    trainer.train()
    assert trainer.budget.warmup_steps == 0
    for budgets in seen:  # no step anneals the draws from 1.0
        assert all(0.3 <= value <= 0.9 for value in budgets) and len(set(budgets)) >= 6


@pytest.mark.parametrize(
    ("distribution", "median", "below_half"), [("uniform", 0.6, 0.375), ("log_uniform", 0.4472, 0.5693)]
)
def test_budget_distribution_spreads_the_draws(tmp_path, distribution, median, below_half):
    """'log_uniform' gives every halving of the budget the same share of the draws: over [0.2, 1.0] the median
    is sqrt(0.2) and log(0.5 / 0.2) / log(5) of the draws fall below 0.5 (uniform: 0.6 and 0.375)."""
    trainer = make_trainer(
        tmp_path,
        selection_training="topk",
        retention_ratio=0.5,
        retention_ratio_range=[0.2, 1.0],
        retention_ratio_distribution=distribution,
        budget_warmup_steps=0,
        distillation_weight=0,
    )
    trainer._micro_batch = 0
    budgets = trainer._sampled_budgets({"input_ids": torch.zeros(20_000, 1, dtype=torch.long)})
    assert budgets.dtype == torch.float64 and budgets.min() >= 0.2 and budgets.max() <= 1.0
    assert budgets.median().item() == pytest.approx(median, abs=0.01)
    assert (budgets < 0.5).double().mean().item() == pytest.approx(below_half, abs=0.01)


def test_sandwich_shares_from_the_command_line():
    (args,) = HfArgumentParser(RetentionTrainingArguments).parse_args_into_dataclasses(
        args=[
            "--output_dir=x",
            "--retention_ratio_range", "0.2", "1.0",
            "--retention_ratio_sampling=sandwich",
            "--retention_ratio_sandwich_shares", "0", "0.25",
            "--use_cpu",
        ]
    )  # fmt: skip
    assert args.retention_ratio_range == [0.2, 1.0] and args.retention_ratio_sandwich_shares == [0.0, 0.25]


@pytest.mark.parametrize(
    ("shares", "batch_size", "at_low", "at_high"),
    [
        (None, 32, 1, 1),  # the default: one example at each end
        ([0, 0.25], 32, 1, 8),
        ([0.25, 0.25], 32, 8, 8),
        ([0.05, 0.25], 8, 1, 2),  # at least one example at each end
        ([0.25, 0.5], 3, 1, 1),  # a short last batch keeps one example to draw in between
    ],
)
def test_sandwich_shares_set_that_many_examples_to_each_end(tmp_path, shares, batch_size, at_low, at_high):
    trainer = make_trainer(
        tmp_path,
        selection_training="topk",
        retention_ratio=0.5,
        retention_ratio_range=[0.2, 0.9],
        retention_ratio_sampling="sandwich",
        retention_ratio_sandwich_shares=shares,
        distillation_weight=0,
    )
    trainer._micro_batch = 0
    budgets = trainer._sampled_budgets({"input_ids": torch.zeros(batch_size, 1, dtype=torch.long)}).tolist()
    assert budgets[:at_low] == [0.2] * at_low
    assert budgets[at_low : at_low + at_high] == [pytest.approx(0.9)] * at_high
    between = budgets[at_low + at_high :]
    assert len(between) == batch_size - at_low - at_high >= 1
    assert all(0.2 < value < 0.9 for value in between)


def test_an_unreachable_low_end_fails_before_training(tmp_path):
    # 4 layers, the first ungated: no budget at or below 1/4 is reachable
    with pytest.raises(ValueError, match=r"retention_ratio=0.2 is unreachable: the 1 ungated layer\(s\) alone cost"):
        make_trainer(
            tmp_path,
            model_config={"retention_first_gated_layer": 1},
            selection_training="topk",
            retention_ratio_range=[0.2, 1.0],
            distillation_weight=0,
        )


def test_an_any_budget_checkpoint_states_its_range_and_curve(tmp_path):
    trainer = make_trainer(
        tmp_path,
        selection_training="topk",
        retention_ratio=0.5,
        retention_ratio_range=[0.3, 1.0],
        max_steps=2,
        distillation_weight=0,
    )
    trainer.train()
    trainer.compute_metrics = lambda output: {
        "accuracy": float((output.predictions.argmax(-1) == output.label_ids).mean())
    }
    evaluation = random_dataset(16, seed=1)
    with pytest.raises(ValueError, match=r"retention_ratio must be a number in \(0, 1\], got 1.5"):
        trainer.evaluate_budgets([0.5, 1.5], eval_dataset=evaluation)
    curve = trainer.evaluate_budgets([0.3, 1.0, 0.5], eval_dataset=evaluation)
    assert list(curve) == [1.0, 0.5, 0.3] and trainer.model.config.retention_ratio == 0.5
    keeps = [curve[budget]["eval_keep_ratio"] for budget in curve]
    assert keeps[0] == 1.0 and keeps[1] == pytest.approx(0.5, abs=0.05) and keeps[2] == pytest.approx(0.3, abs=0.05)
    trainer.save_model(str(tmp_path / "saved"))
    config = json.loads((tmp_path / "saved/config.json").read_text())
    assert config["retention_trained_ratio_range"] == [0.3, 1.0]
    card = (tmp_path / "saved/README.md").read_text()
    assert "Trained for every budget from **0.3** to **1.0**" in card
    assert "## At every budget" in card
    assert f"| 0.3 | {keeps[2]:.3f} | {curve[0.3]['eval_accuracy']:.4f} |" in card
    assert "![accuracy at every budget](budget_curve.svg)" in card
    svg = (tmp_path / "saved/budget_curve.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "accuracy at every budget" in svg
    restored = card_data_from_checkpoint(tmp_path / "saved")
    assert [row["budget"] for row in restored.budget_curve] == [1.0, 0.5, 0.3]
    # every budget logged under its own prefix, so no figure overwrites another
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"eval_rho1_accuracy", "eval_rho0.5_accuracy", "eval_rho0.3_accuracy"} <= logged
    # fine-tuned again at one budget, the model no longer claims a range
    again = RetentionTrainer(
        model=trainer.model,
        args=make_args(tmp_path / "again", selection_training="topk", max_steps=1, distillation_weight=0),
        train_dataset=random_dataset(),
        data_collator=lambda features: collate(features, BERT.pad_token_id),
    )
    again.train()
    assert trainer.model.config.retention_trained_ratio_range is None


def test_budget_curves_of_a_model_with_an_explicit_schedule(tmp_path):
    trainer = make_trainer(
        tmp_path,
        model_config={"retention_schedule": [1.0, 0.6, 0.3, 0.1], "retention_ratio": 0.5},
        selection_training="topk",
        retention_ratio_range=[0.3, 1.0],
        max_steps=1,
        distillation_weight=0,
    )
    trainer.train()
    curve = trainer.evaluate_budgets([1.0, 0.3], eval_dataset=random_dataset(16, seed=1))
    assert curve[1.0]["eval_keep_ratio"] == 1.0 and curve[0.3]["eval_keep_ratio"] == pytest.approx(0.3, abs=0.05)
    assert trainer.model.config.retention_schedule == [1.0, 0.6, 0.3, 0.1]  # the config is left as it was
    trainer.model.config.set_retention_budget(0.3)  # the list is rescaled to the new budget
    assert sum(trainer.model.config.retention_schedule) / 4 == pytest.approx(0.3)


def recorded_passes(trainer) -> list[tuple[list[float], torch.Tensor]]:
    """The budgets and real lengths of the rows of every training forward pass of ``trainer``'s model."""
    return recorded_training_calls(
        trainer, lambda kwargs: (kwargs["retention_ratio"], kwargs["attention_mask"].sum(dim=1))
    )


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_budget_groups_give_the_gradients_of_the_whole_micro_batch(tmp_path, task):
    """Sub-batches of similar kept counts change what each forward pass holds, not the loss or the gradients."""
    runs = []
    for groups in (1, 3):
        trainer = make_trainer(
            tmp_path / str(groups),
            task=task,
            selection_training="topk",
            retention_ratio=0.5,
            retention_ratio_range=[0.2, 1.0],
            retention_ratio_sampling="sandwich",
            retention_ratio_groups=groups,
            gradient_accumulation_steps=2,
            max_steps=3,
            max_grad_norm=0.0,
            distillation_weight=0.5,
        )
        passes = recorded_passes(trainer)
        recorder = GradientRecorder(trainer.model)
        trainer.add_callback(recorder)
        trainer.train()
        runs.append((recorder.gradients, train_logs(trainer), passes))
    (grads_one, logs_one, passes_one), (grads_three, logs_three, passes_three) = runs
    # every micro-batch of 8 runs as 3 passes of 3, 3 and 2 rows: the same rows, in order of budget x length
    assert len(passes_one) == 6 and len(passes_three) == 18
    for whole, parts in zip(passes_one, zip(*[iter(passes_three)] * 3, strict=True), strict=True):
        assert [len(budgets) for budgets, _ in parts] == [3, 3, 2]
        assert sorted(b for budgets, _ in parts for b in budgets) == sorted(whole[0])
        kept = [[b * n for b, n in zip(budgets, lengths.tolist(), strict=True)] for budgets, lengths in parts]
        assert max(kept[0]) <= min(kept[1]) and max(kept[1]) <= min(kept[2])
    assert len(grads_one) == len(grads_three) == 3
    for whole, grouped in zip(grads_one, grads_three, strict=True):
        assert any(".gates." in name and grad.abs().sum() > 0 for name, grad in whole.items())
        for name, grad in whole.items():
            torch.testing.assert_close(grouped[name], grad, atol=1e-6, rtol=1e-4)
    for key in ("loss", "task_loss", "distillation_loss", "keep_ratio", "budget_target"):
        grouped, whole = [entry[key] for entry in logs_three], [entry[key] for entry in logs_one]
        assert grouped == pytest.approx(whole, rel=1e-5, abs=1e-6)


def test_budget_sampling_is_seeded_and_survives_resume(tmp_path):
    common = {
        "selection_training": "topk",
        "retention_ratio_range": [0.3, 1.0],
        "retention_ratio_groups": 1,
        "max_steps": 4,
        "save_strategy": "steps",
        "save_steps": 2,
        "distillation_weight": 0,
    }
    full = make_trainer(tmp_path / "full", **common)
    drawn = recorded_budgets(full)
    full.train()
    again = make_trainer(tmp_path / "again", **common)
    redrawn = recorded_budgets(again)
    again.train()
    assert redrawn == drawn and len(drawn) == 4 and drawn[0] != drawn[1]
    resumed = make_trainer(tmp_path / "full", **common)
    resumed_draws = recorded_budgets(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full/out/checkpoint-2"))
    assert resumed_draws == drawn[2:]
    other_seed = make_trainer(tmp_path / "seed", **common, seed=1)
    other_draws = recorded_budgets(other_seed)
    other_seed.train()
    assert other_draws != drawn


def test_learned_schedule_survives_save_and_load(tmp_path):
    trainer = make_trainer(tmp_path, retention_ratio=0.5, dual_step_size=2.0, max_steps=4)
    trainer.train()
    schedule = trainer.model.config.retention_learned_schedule
    assert schedule is not None and len(schedule) == 4
    assert schedule == pytest.approx(trainer.budget.learned_schedule())
    trainer.save_model(str(tmp_path / "saved"))
    loaded = BERT.classes["sequence"][0].from_pretrained(tmp_path / "saved")
    assert loaded.config.retention_learned_schedule == schedule
    assert loaded.config.retention_layer_ratios() == pytest.approx(trainer.model.config.retention_layer_ratios())


def test_evaluation_reports_the_keep_ratio(tmp_path):
    trainer = make_trainer(tmp_path, retention_ratio=0.5, max_steps=1)
    metrics = trainer.evaluate(eval_dataset=random_dataset(16, seed=1))
    assert 0.5 <= metrics["eval_keep_ratio"] < 0.75
    trainer.model.config.retention_enabled = False
    assert trainer.evaluate(eval_dataset=random_dataset(16, seed=1))["eval_keep_ratio"] == 1.0


def test_predict_on_unlabelled_data_reports_the_keep_ratio(tmp_path):
    trainer = make_trainer(tmp_path, retention_ratio=0.5, max_steps=1)
    labelled = random_dataset(16, seed=1)
    expected = trainer.evaluate(eval_dataset=labelled)["eval_keep_ratio"]
    output = trainer.predict(labelled.remove_columns("labels"), metric_key_prefix="eval")
    assert output.metrics["eval_keep_ratio"] == pytest.approx(expected, rel=1e-6)
    assert output.predictions.shape == (16, 3)


def test_predictions_follow_dataset_order_under_length_grouping(tmp_path):
    """transformers would group eval batches by length too, returning predictions out of order."""
    trainer = make_trainer(
        tmp_path,
        retention_ratio=0.5,
        max_steps=1,
        train_sampling_strategy="group_by_length",
        per_device_eval_batch_size=4,
    )
    data = random_dataset(16, seed=3)
    grouped = trainer.predict(data).predictions
    model = trainer.model.eval()
    with torch.no_grad():
        one_by_one = [model(**collate([row])).logits[0].numpy() for row in data.remove_columns("labels")]
    np.testing.assert_allclose(grouped, np.stack(one_by_one), atol=1e-5)


def test_dense_training_through_the_same_trainer(tmp_path):
    trainer = make_trainer(tmp_path, model_config={"retention_enabled": False}, max_steps=2)
    trainer.train()
    logs = train_logs(trainer)
    assert "lambda" not in logs[0] and logs[0]["loss"] > 0


def test_roberta_trains(tmp_path):
    trainer = make_trainer(tmp_path, family=ROBERTA, task="token", retention_ratio=0.5, max_steps=2)
    trainer.train()
    assert train_logs(trainer)[-1]["lambda"] > 0


# ---------------------------------------------------------------------------------------------- distillation
def test_distillation_loss_values():
    from types import SimpleNamespace

    from retention_hf.distillation import distillation_loss

    student = SimpleNamespace(logits=torch.tensor([[0.0, 0.0], [2.0, 0.0]]), start_logits=None)
    teacher = SimpleNamespace(logits=torch.tensor([[0.0, 0.0], [0.0, 2.0]]))
    mask = torch.ones(2, 1)
    loss = distillation_loss(student, teacher, mask, temperature=1.0)
    p = torch.softmax(torch.tensor([0.0, 2.0]), 0)
    expected = (p * (p.log() - torch.log_softmax(torch.tensor([2.0, 0.0]), 0))).sum()
    assert loss.tolist() == pytest.approx([0.0, expected.item()], abs=1e-6)
    # temperature T scales the divergence of the softened distributions by T^2
    assert distillation_loss(student, teacher, mask, temperature=2.0)[1].item() > 0
    # token logits: padding positions do not count
    token_student = SimpleNamespace(logits=torch.tensor([[[2.0, 0.0], [9.0, 0.0]]]), start_logits=None)
    token_teacher = SimpleNamespace(logits=torch.tensor([[[0.0, 2.0], [0.0, 0.0]]]))
    masked = distillation_loss(token_student, token_teacher, torch.tensor([[1, 0]]), temperature=1.0)
    assert masked.item() == pytest.approx(expected.item(), abs=1e-6)


def test_distillation_from_a_frozen_dense_copy(tmp_path):
    trainer = make_trainer(tmp_path, retention_ratio=0.5, distillation_weight=0.5, max_steps=3)
    teacher, model = trainer.teacher_model, trainer.model
    assert teacher is not model and teacher.config is not model.config
    assert teacher.config.retention_enabled is False and model.config.retention_enabled is True
    assert all(not p.requires_grad for p in teacher.parameters())
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters()), "the teacher stays frozen"
    for entry in train_logs(trainer):
        combined = 0.5 * entry["task_loss"] + 0.5 * entry["distillation_loss"] + entry["budget_penalty"]
        assert entry["loss"] == pytest.approx(combined, rel=1e-4)


def test_distillation_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError, match=r"distillation_weight must be in \[0, 1\], got 1.5"):
        make_args(tmp_path, distillation_weight=1.5)
    with pytest.raises(ValueError, match="distillation_temperature must be > 0, got 0.0"):
        make_args(tmp_path, distillation_temperature=0.0)
    with pytest.raises(ValueError, match="distillation_hidden_weight must be a finite number >= 0, got -1.0"):
        make_args(tmp_path, distillation_hidden_weight=-1.0)


@pytest.mark.parametrize(
    ("architectures", "weight"),
    [
        (None, 0.0),
        (["BertModel"], 0.0),
        (["BertForSequenceClassification"], 0.5),
        (["BertForTokenClassification"], 0.0),
    ],
)
def test_distillation_by_default_only_from_a_fine_tuned_head(tmp_path, architectures, weight):
    torch.manual_seed(0)
    model = BERT.classes["sequence"][0](BERT.config(architectures=architectures))
    args = make_args(tmp_path)
    assert args.distillation_weight is None
    trainer = RetentionTrainer(model=model, args=args, train_dataset=random_dataset(), data_collator=collate)
    assert trainer.distillation_weight == weight
    assert (trainer.teacher_model is not None) == (weight > 0)
    # an explicit weight, or a teacher given to the trainer, decides instead
    assert RetentionTrainer(model=model, args=make_args(tmp_path, distillation_weight=0.0)).teacher_model is None
    teacher = BERT.classes["sequence"][0](BERT.config())
    given = RetentionTrainer(model=model, args=args, teacher_model=teacher)
    assert given.distillation_weight == 0.5 and given.teacher_model is teacher
    # a dense run (retention off) distils from nothing by default
    model.config.retention_enabled = False
    assert RetentionTrainer(model=model, args=args).distillation_weight == 0.0


def test_a_head_without_logits_is_not_distilled(tmp_path):
    import retention_hf as rh

    scorer = rh.RetentionBertForSentenceScoring(BERT.config(architectures=["RetentionBertForSentenceScoring"]))
    assert RetentionTrainer(model=scorer, args=make_args(tmp_path)).distillation_weight == 0.0
    with pytest.raises(ValueError, match="distillation_weight=0.5: RetentionBertForSentenceScoring has no logits"):
        RetentionTrainer(model=scorer, args=make_args(tmp_path, distillation_weight=0.5))


def test_hidden_state_distillation_matches_kept_tokens_to_the_teacher_positions():
    from retention_hf.distillation import hidden_state_distillation_loss

    torch.manual_seed(0)
    model = BERT.classes["sequence"][0](BERT.config(retention_ratio=0.5)).eval()
    input_ids = torch.randint(3, 99, (2, 14))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    with torch.no_grad():
        student = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        model.config.retention_enabled = False
        teacher = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    loss = hidden_state_distillation_loss(student.hidden_states, student.kept_positions, teacher.hidden_states)
    assert loss.shape == (2,)
    # the same sum written out: each layer's kept real tokens against the teacher at their positions
    for row in range(2):
        layers = []
        for layer, positions in enumerate(student.kept_positions):
            errors = [
                (student.hidden_states[layer + 1][row, slot] - teacher.hidden_states[layer + 1][row, position])
                .pow(2)
                .mean()
                for slot, position in enumerate(positions[row].tolist())
                if position >= 0
            ]
            layers.append(torch.stack(errors).mean())
        assert loss[row].item() == pytest.approx(torch.stack(layers).mean().item(), rel=1e-5)
    assert (student.kept_counts < attention_mask.sum(1, keepdim=True)).any() and (loss > 0).all()
    # with every token kept the outputs are the teacher's
    with torch.no_grad():
        model.config.retention_enabled = True
        full = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, retention_ratio=1.0)
    same = hidden_state_distillation_loss(full.hidden_states, full.kept_positions, teacher.hidden_states)
    assert same.abs().max().item() < 1e-10
    with pytest.raises(ValueError, match="got 3 student and 5 teacher hidden states, 4 position tensors"):
        hidden_state_distillation_loss(student.hidden_states[:3], student.kept_positions, teacher.hidden_states)


def test_hidden_state_distillation_in_topk_steps(tmp_path):
    trainer = make_trainer(
        tmp_path, retention_ratio=0.5, selection_training="topk", distillation_hidden_weight=2.0, max_steps=3
    )
    assert trainer.teacher_model is not None and trainer.teacher_model.config.retention_enabled is False
    trainer.train()
    for entry in train_logs(trainer):
        assert entry["hidden_distillation_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["task_loss"] + 2.0 * entry["hidden_distillation_loss"], rel=1e-4)
    # the soft (Hard-Concrete) steps have no kept positions: logits distillation only
    soft = make_trainer(tmp_path, retention_ratio=0.5, distillation_hidden_weight=2.0, max_steps=2)
    soft.train()
    assert all("hidden_distillation_loss" not in entry for entry in train_logs(soft))


def test_every_position_marks_padding():
    from retention_hf.distillation import every_position

    attention_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    positions = every_position(attention_mask, num_layers=2)
    assert len(positions) == 2
    assert positions[1].tolist() == [[0, 1, 2], [0, 1, -1]]


def test_topk_finetune_trains_the_final_steps_with_inference_selection(tmp_path):
    trainer = make_trainer(tmp_path, retention_ratio=0.5, topk_finetune_steps=0.5, max_steps=4)
    encoder = trainer.model.base_model.encoder
    lengths = []
    hook = encoder.layer[-1].register_forward_hook(lambda m, a, o: lengths.append(a[0].shape[1]))
    gate_before = {n: p.clone() for n, p in trainer.model.named_parameters() if ".gates." in n}
    trainer.train()
    hook.remove()
    logs = train_logs(trainer)
    assert ["budget_penalty" in entry for entry in logs] == [True, True, False, False]
    assert logs[2]["lambda"] == logs[3]["lambda"] == logs[1]["lambda"], "the dual variable rests in the top-k phase"
    expected_keep = [entry["keep_ratio"] for entry in logs[2:]]
    assert all(0.5 <= keep < 0.75 for keep in expected_keep), "the top-k phase logs its realised keep ratio"
    assert all(lengths[i] < lengths[0] for i in (2, 3)), "the top-k steps run on the kept tokens only"
    assert trainer.model.config.retention_train_with_topk is False
    assert trainer.model.config.retention_learned_schedule == pytest.approx(trainer.budget.learned_schedule())
    changed = [n for n, p in trainer.model.named_parameters() if ".gates." in n and not torch.equal(p, gate_before[n])]
    assert changed, "the gates trained in the first, soft phase"


# ---------------------------------------------------------------------------------------------- ranking distillation
def test_attention_rollout_by_hand():
    from retention_hf.distillation import attention_rollout

    # two layers, one head, three tokens of which the last is padding in the second row
    first = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.0, 1.0, 0.0]])
    second = torch.tensor([[0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [1.0, 0.0, 0.0]])
    attentions = (first.expand(2, 1, 3, 3), second.expand(2, 1, 3, 3))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    eye = torch.eye(3)
    mixed = [(first + eye) / 2, (second + eye) / 2]
    full = mixed[1] @ mixed[0]  # output <- layer 1 <- layer 0
    importance = attention_rollout(attentions, mask, "first")
    assert len(importance) == 2
    torch.testing.assert_close(importance[0][0], full[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(importance[1][0], mixed[1][0], rtol=0, atol=1e-6)
    assert importance[0][1, 2].item() == 0.0, "padding has no importance"
    everything = attention_rollout(attentions, mask, "all")
    torch.testing.assert_close(everything[0][0], full.mean(dim=0), rtol=0, atol=1e-6)
    torch.testing.assert_close(everything[0][1, :2], full[:2, :2].mean(dim=0), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="read_positions must be 'first' or 'all', got 'cls'"):
        attention_rollout(attentions, mask, "cls")


def test_ranking_distillation_loss_teaches_the_order_of_the_candidates():
    from retention_hf.distillation import ranking_distillation_loss

    importance = (torch.tensor([[0.4, 0.1, 0.2, 0.3], [0.5, 0.3, 0.2, 0.0]]),) * 2
    positions = torch.tensor([[-1, 1, 2, 3], [-1, 1, 2, -1]])  # position 0 protected, row 1 padded
    matching = importance[0].log() + 7.0  # the teacher's log-importance, shifted: the same ranking
    loss = ranking_distillation_loss((matching, None), (positions, None), importance)
    assert loss.shape == (2,) and loss.abs().max().item() < 1e-6
    reversed_scores = -importance[0].log()
    worse = ranking_distillation_loss((reversed_scores, None), (positions, None), importance)
    assert (worse > 0.05).all()
    # a slot the gate cannot drop changes nothing
    moved = reversed_scores.clone()
    moved[:, 0] = 100.0
    moved[1, 3] = -100.0
    torch.testing.assert_close(ranking_distillation_loss((moved, None), (positions, None), importance), worse)
    # by hand for row 0: KL(teacher || student) over positions 1-3
    teacher = importance[0][0, 1:] / importance[0][0, 1:].sum()
    student = torch.softmax(reversed_scores[0, 1:], dim=0)
    assert worse[0].item() == pytest.approx((teacher * (teacher / student).log()).sum().item(), rel=1e-5)
    # averaged over the gates that scored; fewer than two candidates contribute 0
    two = ranking_distillation_loss((reversed_scores, matching), (positions, positions), importance)
    torch.testing.assert_close(two, worse / 2)
    single = torch.tensor([[-1, 1, -1, -1], [-1, -1, -1, -1]])
    assert ranking_distillation_loss((reversed_scores,), (single,), importance[:1]).abs().max().item() == 0.0
    with pytest.raises(ValueError, match="got 1 score and 2 position entries, 2 importance tensors"):
        ranking_distillation_loss((matching,), (positions, None), importance)


def test_answer_importance_is_the_teachers_start_and_end_distribution():
    from retention_hf.distillation import answer_importance, ranking_distillation_loss

    start = torch.tensor([[0.0, 3.0, 1.0, 0.0, 9.0], [2.0, 0.0, 0.0, 4.0, 0.0]])
    end = torch.tensor([[0.0, 1.0, 3.0, 0.0, 9.0], [0.0, 1.0, 0.0, 2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    importance = answer_importance(start, end, mask, num_layers=3)
    assert len(importance) == 3 and all(layer is importance[0] for layer in importance)
    expected = (torch.softmax(start[0, :4], dim=0) + torch.softmax(end[0, :4], dim=0)) / 2
    torch.testing.assert_close(importance[0][0, :4], expected)
    assert importance[0][0, 4].item() == 0.0, "padding is never a target, however large its logit"
    torch.testing.assert_close(importance[0].sum(dim=1), torch.ones(2))
    # a gate whose scores order the candidates as the teacher's answer distribution does has nothing to learn
    positions = torch.tensor([[-1, 1, 2, 3, -1], [-1, 1, 2, 3, 4]])
    assert ranking_distillation_loss((importance[0].clamp(min=1e-12).log(),), (positions,), importance[:1]).max() < 1e-6
    flat = ranking_distillation_loss((torch.zeros(2, 5),), (positions,), importance[:1])
    assert (flat > 0.05).all(), "a gate that ranks the answer no higher than the rest is taught to"


def qa_dataset(size=32, seed=0, max_len=18):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(size):
        length = int(torch.randint(6, max_len, (1,), generator=generator))
        ids = torch.randint(3, 99, (length,), generator=generator).tolist()
        ids[0] = 2
        start = int(torch.randint(1, length - 1, (1,), generator=generator))
        rows.append({"input_ids": ids, "start_positions": start, "end_positions": start + 1})
    return Dataset.from_list(rows)


def qa_collate(features, pad_token_id=0):
    batch = collate([{"input_ids": feature["input_ids"]} for feature in features], pad_token_id)
    for key in ("start_positions", "end_positions"):
        batch[key] = torch.tensor([feature[key] for feature in features])
    return batch


def make_qa_trainer(tmp_path, family, **arg_overrides):
    """A top-k trainer of a tiny rho 0.5 QA model on ``qa_dataset``."""
    torch.manual_seed(0)
    model = family.classes["qa"][0](family.config(retention_ratio=0.5, num_labels=2))
    return RetentionTrainer(
        model=model,
        args=make_args(tmp_path, selection_training="topk", **arg_overrides),
        train_dataset=qa_dataset(),
        data_collator=lambda features: qa_collate(features, family.pad_token_id),
    )


def assert_ranking_loss_added(trainer, steps, weight):
    """Every logged step of a run with answer ranking and no other extra term: a positive ranking loss, added to the
    task loss at ``weight``."""
    logs = train_logs(trainer)
    assert len(logs) == steps
    for entry in logs:
        assert entry["ranking_distillation_loss"] > 0
        assert entry["loss"] == pytest.approx(
            entry["task_loss"] + weight * entry["ranking_distillation_loss"], rel=1e-4
        )


@pytest.mark.parametrize("family", [BERT, ROBERTA], ids=lambda family: family.name)
def test_answer_ranking_in_question_answering_training(tmp_path, family):
    trainer = make_qa_trainer(
        tmp_path,
        family,
        distillation_weight=0.0,
        distillation_ranking_weight=3.0,
        distillation_ranking_target="answer",
        max_steps=3,
    )
    assert trainer.teacher_model.config._attn_implementation != "eager", "the answer target reads no attention"
    before = {n: p.clone() for n, p in trainer.model.named_parameters() if ".gates." in n}
    trainer.train()
    assert_ranking_loss_added(trainer, steps=3, weight=3.0)
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if ".gates." in n)


def test_hidden_state_distillation_in_a_dense_topk_step(tmp_path):
    """At the start of the budget warm-up a top-k step runs at budget 1, dense, without kept positions: its hidden
    states are distilled at every real token (a QA run crashed on this with a KeyError)."""
    trainer = make_qa_trainer(
        tmp_path, BERT, distillation_weight=0.0, distillation_hidden_weight=2.0, budget_warmup_steps=2, max_steps=3
    )
    trainer.train()
    logs = train_logs(trainer)
    assert [entry["keep_ratio"] == 1.0 for entry in logs] == [True, False, False], "step 1 ran dense"
    # step 1: the student is still the teacher (no dropout in the tiny config), and every token is compared
    assert logs[0]["hidden_distillation_loss"] == 0.0
    assert all(entry["hidden_distillation_loss"] > 0 for entry in logs[1:])
    for entry in logs:
        assert entry["loss"] == pytest.approx(entry["task_loss"] + 2.0 * entry["hidden_distillation_loss"], rel=1e-4)


def test_tagged_importance_is_the_teachers_probability_of_a_label_but_outside():
    from retention_hf.distillation import tagged_importance

    # labels: 0 = B, 1 = O, 2 = I; the outside label need not be 0
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [3.0, 0.0, 1.0], [9.0, 0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 1, 0]])
    importance = tagged_importance(logits, outside_label=1, attention_mask=mask, num_layers=2)
    assert len(importance) == 2 and importance[0] is importance[1]
    tagged = 1 - torch.softmax(logits[0, :3], dim=-1)[:, 1]
    torch.testing.assert_close(importance[0][0, :3], tagged / tagged.sum())
    assert importance[0][0, 3].item() == 0.0, "padding is never a target, however sure the teacher is"
    assert importance[0][0].argmax().item() == 2 and importance[0][0].argmin().item() in (1, 3)
    torch.testing.assert_close(importance[0].sum(dim=1), torch.ones(1))


@pytest.mark.parametrize("family", [BERT, ROBERTA], ids=lambda family: family.name)
def test_answer_ranking_in_token_classification_training(tmp_path, family):
    bio = {"id2label": {0: "B", 1: "O", 2: "I"}, "label2id": {"B": 0, "O": 1, "I": 2}}
    trainer = make_trainer(
        tmp_path,
        family=family,
        task="token",
        model_config={"retention_ratio": 0.5, **bio},
        selection_training="topk",
        distillation_weight=0.0,
        distillation_ranking_weight=2.0,
        distillation_ranking_target="answer",
        max_steps=2,
    )
    assert trainer._outside_label == 1
    trainer.train()
    assert_ranking_loss_added(trainer, steps=2, weight=2.0)


def test_answer_ranking_needs_a_head_that_answers_with_tokens(tmp_path):
    with pytest.raises(ValueError, match="ranks by the tokens the head answers with: .* RetentionBertForSequence"):
        make_trainer(
            tmp_path, retention_ratio=0.5, distillation_ranking_weight=1.0, distillation_ranking_target="answer"
        )
    tagger = BERT.classes["token"][0](BERT.config(retention_ratio=0.5, num_labels=2))  # LABEL_0, LABEL_1
    with pytest.raises(ValueError, match=r"the labels have no 'O': \['LABEL_0', 'LABEL_1'\]"):
        RetentionTrainer(
            model=tagger,
            args=make_args(tmp_path, distillation_ranking_weight=1.0, distillation_ranking_target="answer"),
        )
    with pytest.raises(ValueError, match="distillation_ranking_target must be one of .*, got 'gold'"):
        make_args(tmp_path, distillation_ranking_target="gold")


@pytest.mark.parametrize("family", [BERT, ROBERTA], ids=lambda family: family.name)
@pytest.mark.parametrize("topk", [False, True])
def test_training_reports_every_gates_scores_and_candidates(family, topk):
    torch.manual_seed(0)
    config = family.config(retention_ratio=0.5, retention_first_gated_layer=1)
    model = family.classes["sequence"][0](config).train()
    model.config.retention_train_with_topk = topk
    input_ids = torch.randint(3, 99, (2, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    outputs = model(input_ids=input_ids, attention_mask=attention_mask)
    assert len(outputs.gate_scores) == len(outputs.gate_positions) == 4
    assert outputs.gate_scores[0] is None and outputs.gate_positions[0] is None, "layer 0 has no gate"
    first = outputs.gate_positions[1]
    assert first[:, 0].tolist() == [-1, -1], "the first token is protected"
    assert first[0, 1:].tolist() == list(range(1, 12)) and first[1, 8:].tolist() == [-1] * 4, "padding"
    for scores, positions in zip(outputs.gate_scores[1:], outputs.gate_positions[1:], strict=True):
        assert scores.shape == positions.shape and scores.requires_grad
    # every candidate's score gets a gradient from the ranking term, the ones the gate drops included
    from retention_hf.distillation import ranking_distillation_loss

    importance = (torch.rand(2, 12),) * 4
    loss = ranking_distillation_loss(outputs.gate_scores, outputs.gate_positions, importance).sum()
    scores = outputs.gate_scores[1]
    (gradient,) = torch.autograd.grad(loss, scores)
    candidate = outputs.gate_positions[1] >= 0
    assert (gradient[candidate] != 0).all() and (gradient[~candidate] == 0).all()
    model.eval()
    with torch.no_grad():
        evaluated = model(input_ids=input_ids, attention_mask=attention_mask)
    assert evaluated.gate_scores is None and evaluated.gate_positions is None


@pytest.mark.parametrize("selection", ["hard_concrete", "topk"])
def test_ranking_distillation_in_training(tmp_path, selection):
    trainer = make_trainer(
        tmp_path,
        retention_ratio=0.5,
        selection_training=selection,
        distillation_weight=0.0,
        distillation_ranking_weight=3.0,
        max_steps=3,
    )
    assert trainer.teacher_model.config._attn_implementation == "eager"
    assert trainer.model.config._attn_implementation != "eager", "the student keeps its attention"
    before = {n: p.clone() for n, p in trainer.model.named_parameters() if ".gates." in n}
    trainer.train()
    for entry in train_logs(trainer):
        assert entry["ranking_distillation_loss"] > 0
        penalty = entry.get("budget_penalty", 0.0)
        total = entry["task_loss"] + 3.0 * entry["ranking_distillation_loss"] + penalty
        assert entry["loss"] == pytest.approx(total, rel=1e-4)
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if ".gates." in n)
    with pytest.raises(ValueError, match="distillation_ranking_weight must be a finite number >= 0, got -1"):
        make_args(tmp_path, distillation_ranking_weight=-1.0)
