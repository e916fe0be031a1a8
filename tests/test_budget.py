"""The Lagrangian budget arithmetic against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from retention_hf import BudgetController


def test_penalty_mean_and_normalised_sum():
    budget = BudgetController(target=0.5, dual_step_size=0.1, initial_lambda=2.0)
    keep = torch.tensor([0.8, 0.6])
    assert budget.penalty(keep).item() == pytest.approx(2.0 * (0.3 + 0.1) / 2)

    # two micro-batches of an accumulated batch of 4 examples add up to the mean over the 4
    def quarter_sum(values):
        return values.sum() / 4

    assert budget.penalty(keep, reduce=quarter_sum).item() == pytest.approx(2.0 * 0.4 / 4)
    both = budget.penalty(keep, reduce=quarter_sum) + budget.penalty(torch.tensor([0.5, 0.3]), reduce=quarter_sum)
    assert both.item() == pytest.approx(budget.penalty(torch.tensor([0.8, 0.6, 0.5, 0.3])).item())


def test_penalty_is_differentiable():
    budget = BudgetController(target=0.3, dual_step_size=1.0, initial_lambda=1.5)
    keep = torch.tensor([0.9, 0.4], requires_grad=True)
    budget.penalty(keep).backward()
    assert keep.grad.tolist() == pytest.approx([0.75, 0.75])


def test_projected_dual_step():
    budget = BudgetController(target=0.5, dual_step_size=0.1, initial_lambda=0.5)
    assert budget.dual_update(0.3) == pytest.approx(0.53)
    assert budget.dual_update(-0.2) == pytest.approx(0.51)
    assert budget.dual_update(-10.0) == 0.0  # projected onto lambda >= 0
    assert budget.dual_update(-1.0) == 0.0


def test_fixed_lambda_never_moves():
    budget = BudgetController(target=0.5, dual_step_size=0.1, initial_lambda=0.7, fixed_lambda=True)
    assert budget.dual_update(0.9) == 0.7
    assert budget.dual_update(-0.9) == 0.7


def test_warmup_anneals_the_target():
    budget = BudgetController(target=0.3, dual_step_size=1.0, warmup_steps=10)
    targets = []
    for _ in range(12):
        targets.append(budget.current_target())
        budget.accumulate(torch.tensor([1.0]), torch.ones(1, 2))
        budget.step()
    assert targets[0] == 1.0
    assert targets[5] == pytest.approx(0.65)
    assert targets[10] == pytest.approx(0.3) and targets[11] == pytest.approx(0.3)


def test_step_averages_over_accumulated_micro_batches():
    budget = BudgetController(target=0.5, dual_step_size=0.5, initial_lambda=0.0, schedule_decay=0.5)
    budget.accumulate(torch.tensor([0.9, 0.7]), torch.tensor([[1.0, 0.8], [1.0, 0.6]]))
    budget.accumulate(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[1.0, 0.4], [1.0, 0.2], [1.0, 0.0]]))
    statistics = budget.step()
    violation = (0.9 + 0.7 + 0.5 + 0.3 + 0.2) / 5 - 0.5
    assert violation == pytest.approx(0.02)
    assert statistics["violation"] == pytest.approx(violation, abs=1e-6)
    assert statistics["lambda"] == pytest.approx(0.5 * violation, abs=1e-6)
    assert statistics["layers"] == pytest.approx([1.0, 0.4])
    assert budget.learned_schedule() == pytest.approx([1.0, 0.4])
    budget.accumulate(torch.tensor([0.5]), torch.tensor([[1.0, 0.8]]))
    budget.step()
    assert budget.learned_schedule() == pytest.approx([1.0, 0.5 * 0.4 + 0.5 * 0.8])
    assert budget.step() == {}  # nothing accumulated: no dual step


def test_step_all_reduce_sums_across_processes():
    budget = BudgetController(target=0.5, dual_step_size=1.0)
    budget.accumulate(torch.tensor([0.9]), torch.tensor([[1.0, 0.9]]))

    def fake_all_reduce(totals):  # another process had one example with keep 0.1 (violation, examples, targets, layers)
        return totals + torch.tensor([0.1 - 0.5, 1.0, 0.5, 1.0, 0.1])

    statistics = budget.step(all_reduce=fake_all_reduce)
    assert statistics["violation"] == pytest.approx((0.4 - 0.4) / 2, abs=1e-6)
    assert statistics["layers"] == pytest.approx([1.0, 0.5])
    assert statistics["target"] == pytest.approx(0.5)


def test_per_example_targets_and_their_annealing():
    budget = BudgetController(target=0.5, dual_step_size=0.0, warmup_steps=4)
    budget.state.steps = 1  # a quarter of the warm-up: every budget a quarter of the way from 1.0
    assert budget.anneal(torch.tensor([0.2, 0.6, 1.0])).tolist() == pytest.approx([0.8, 0.9, 1.0])
    assert budget.current_target() == pytest.approx(0.875)
    # examples that drew their own budgets are measured against them
    budget.accumulate(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 0.3], [1.0, 0.7]]), target=torch.tensor([0.2, 0.6]))
    statistics = budget.step(record_only=True)
    assert statistics["violation"] == pytest.approx(0.1) and statistics["target"] == pytest.approx(0.4)


def test_save_and_load_round_trip(tmp_path):
    budget = BudgetController(target=0.4, dual_step_size=0.3, initial_lambda=0.2)
    budget.accumulate(torch.tensor([0.9]), torch.tensor([[1.0, 0.7]]))
    budget.step()
    budget.save(tmp_path, extra={"lambda_by_rank": [budget.lagrange_multiplier]})
    restored = BudgetController(target=0.4, dual_step_size=0.3)
    assert restored.load(tmp_path)
    assert restored.state == budget.state
    assert not BudgetController(target=0.4, dual_step_size=0.3).load(tmp_path / "missing")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": 0.0, "dual_step_size": 1.0}, r"target must be in \(0, 1\], got 0.0"),
        ({"target": 1.5, "dual_step_size": 1.0}, r"got 1.5"),
        ({"target": 0.5, "dual_step_size": -0.1}, r"dual step size \(eta\) must be >= 0, got -0.1"),
        ({"target": 0.5, "dual_step_size": 1.0, "initial_lambda": -1.0}, r"initial lambda must be >= 0, got -1.0"),
        ({"target": 0.5, "dual_step_size": 1.0, "warmup_steps": -3}, r"warm-up must be >= 0 steps, got -3"),
    ],
)
def test_invalid_budget(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BudgetController(**kwargs)


def test_log_means_count_only_the_steps_that_recorded_a_value():
    """A log window that spans the switch to the top-k phase: the budget statistics of the soft steps are
    averaged over those steps, not diluted by the top-k steps that have none."""
    budget = BudgetController(target=0.5, dual_step_size=0.1)
    budget.record_for_log({"task_loss": 1.0, "keep_ratio": 0.6})
    budget.record_for_log({"task_loss": 3.0, "keep_ratio": 0.4})
    budget.record_for_log({"task_loss": 2.0})
    assert budget.pop_log() == pytest.approx({"task_loss": 2.0, "keep_ratio": 0.5})
    assert budget.pop_log() == {}
