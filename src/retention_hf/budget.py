"""The Lagrangian budget as plain code: target schedule, penalty, projected dual ascent, running statistics.

The trainer owns *when* things happen (micro-batch, optimizer step, log, checkpoint); this module owns
*what* happens, so every piece can be checked against hand-computed values without a Trainer.

    penalty   = lambda * (expected_keep_ratio - target)
    lambda   <- max(0, lambda + eta * violation)        once per optimizer step

The violation is the mean of ``expected_keep_ratio - target`` over every example of the optimizer
step (all accumulated micro-batches, all processes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


BUDGET_STATE_NAME = "budget_state.json"


@dataclass
class BudgetState:
    """Everything the budget needs to resume exactly; saved next to every checkpoint."""

    lagrange_multiplier: float
    steps: int = 0
    # exponential moving average of the realised per-layer keep ratios: the learned schedule
    layer_keep_ema: list[float] | None = None


@dataclass
class BudgetController:
    """Budget arithmetic for one training run.

    Args:
        target: The budget rho in (0, 1].
        dual_step_size: eta, the step of the projected dual ascent.
        initial_lambda: The Lagrange multiplier at step 0.
        warmup_steps: Anneal the target linearly from 1.0 (keep all) to ``target`` over this many
            optimizer steps; 0 applies the budget from the first step.
        fixed_lambda: Keep lambda at ``initial_lambda`` (the paper's fixed-penalty ablation).
        schedule_decay: Decay of the moving average that records the learned per-layer schedule.
    """

    target: float
    dual_step_size: float
    initial_lambda: float = 0.0
    warmup_steps: int = 0
    fixed_lambda: bool = False
    schedule_decay: float = 0.98
    state: BudgetState = field(init=False)
    _step_violation: torch.Tensor | None = field(init=False, default=None)
    _step_examples: torch.Tensor | None = field(init=False, default=None)
    _step_layers: torch.Tensor | None = field(init=False, default=None)
    _log: dict[str, float] = field(init=False, default_factory=dict)
    _log_count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"the budget target must be in (0, 1], got {self.target}")
        if self.dual_step_size < 0:
            raise ValueError(f"the dual step size (eta) must be >= 0, got {self.dual_step_size}")
        if self.initial_lambda < 0:
            raise ValueError(f"the initial lambda must be >= 0, got {self.initial_lambda}")
        if self.warmup_steps < 0:
            raise ValueError(f"the budget warm-up must be >= 0 steps, got {self.warmup_steps}")
        self.state = BudgetState(lagrange_multiplier=float(self.initial_lambda))

    # ------------------------------------------------------------------ arithmetic
    @property
    def lagrange_multiplier(self) -> float:
        return self.state.lagrange_multiplier

    def current_target(self) -> float:
        """The target of the current step: annealed from 1.0 to ``target`` during the warm-up."""
        if self.warmup_steps == 0 or self.state.steps >= self.warmup_steps:
            return self.target
        return 1.0 - (1.0 - self.target) * self.state.steps / self.warmup_steps

    def penalty(self, expected_keep_ratio: torch.Tensor, reduce=torch.mean) -> torch.Tensor:
        """``lambda * reduce(keep - target)`` for a micro-batch of per-example expected keep ratios.

        ``reduce`` is the micro-batch mean by default; a trainer passes the reduction of its task loss
        (for example a sum over the micro-batch divided by the examples of the whole accumulated batch),
        so that micro-batches add up to the mean over the optimizer step.
        """
        return self.lagrange_multiplier * reduce(expected_keep_ratio - self.current_target())

    def dual_update(self, violation: float) -> float:
        """Projected ascent ``lambda <- max(0, lambda + eta * violation)``; returns the new lambda."""
        if not self.fixed_lambda:
            self.state.lagrange_multiplier = max(0.0, self.lagrange_multiplier + self.dual_step_size * violation)
        return self.lagrange_multiplier

    # ------------------------------------------------------------------ per-step accumulation
    def accumulate(self, expected_keep_ratio: torch.Tensor, layer_keep_ratio: torch.Tensor) -> None:
        """Record a micro-batch: the summed violation and per-layer ratios, and its example count."""
        violation = (expected_keep_ratio.detach().float() - self.current_target()).sum()
        examples = torch.tensor(float(expected_keep_ratio.shape[0]), device=violation.device)
        layers = layer_keep_ratio.detach().float().sum(dim=0)
        if self._step_violation is None:
            self._step_violation, self._step_examples, self._step_layers = violation, examples, layers
        else:
            self._step_violation = self._step_violation + violation
            self._step_examples = self._step_examples + examples
            self._step_layers = self._step_layers + layers

    def step(self, all_reduce=None) -> dict[str, float]:
        """Close an optimizer step: average over its examples (summed across processes by ``all_reduce``),
        take the dual step and update the learned schedule. Returns the step's statistics."""
        if self._step_violation is None:
            return {}
        totals = torch.cat([self._step_violation.reshape(1), self._step_examples.reshape(1), self._step_layers])
        if all_reduce is not None:
            totals = all_reduce(totals)
        totals = totals.tolist()
        examples = max(totals[1], 1.0)
        violation, layers = totals[0] / examples, [value / examples for value in totals[2:]]
        self._step_violation = self._step_examples = self._step_layers = None
        target = self.current_target()
        lagrange_multiplier = self.dual_update(violation)
        self.state.steps += 1
        ema = self.state.layer_keep_ema
        decay = self.schedule_decay
        self.state.layer_keep_ema = (
            layers if ema is None else [decay * e + (1 - decay) * x for e, x in zip(ema, layers, strict=True)]
        )
        return {"violation": violation, "target": target, "lambda": lagrange_multiplier, "layers": layers}

    def learned_schedule(self) -> list[float] | None:
        """The per-layer keep ratios measured in training (moving average), capped at 1."""
        if self.state.layer_keep_ema is None:
            return None
        return [min(1.0, max(1e-6, value)) for value in self.state.layer_keep_ema]

    # ------------------------------------------------------------------ logging
    def record_for_log(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self._log[name] = self._log.get(name, 0.0) + value
        self._log_count += 1

    def pop_log(self) -> dict[str, float]:
        """Means of the recorded values since the last call."""
        if self._log_count == 0:
            return {}
        means = {name: total / self._log_count for name, total in self._log.items()}
        self._log, self._log_count = {}, 0
        return means

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        payload = {**asdict(self.state), **(extra or {})}
        Path(directory, BUDGET_STATE_NAME).write_text(json.dumps(payload, indent=2))

    def load(self, directory: str | Path) -> bool:
        path = Path(directory, BUDGET_STATE_NAME)
        if not path.is_file():
            return False
        payload = json.loads(path.read_text())
        self.state = BudgetState(
            lagrange_multiplier=payload["lagrange_multiplier"],
            steps=payload["steps"],
            layer_keep_ema=payload["layer_keep_ema"],
        )
        return True
