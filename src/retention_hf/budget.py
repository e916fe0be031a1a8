"""The Lagrangian budget as plain code: target schedule, penalty, projected dual ascent, running statistics.

The trainer owns *when* things happen (micro-batch, optimizer step, log, checkpoint); this module owns
*what* happens, so every piece can be checked against hand-computed values without a Trainer.

    penalty   = lambda * (expected_keep_ratio - target)
    I        <- max(0, I + eta * violation)             once per optimizer step
    lambda    = max(0, I + k_p * violation)

With ``k_p = 0`` (the default) this is the paper's projected dual ascent. A proportional gain ``k_p > 0``
makes lambda a PI controller of the violation (Stooke et al., 2020, "Responsive Safety in RL by PID
Lagrangian Methods"): lambda drops as soon as the keep ratio crosses the target instead of waiting for
the integral to unwind, which damps the overshoot of pure dual ascent.

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
    # the integral term I of the PI controller (equal to lambda when k_p = 0)
    integral: float | None = None
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
        damping: ``k_p``, the proportional gain of the PI-controlled lambda (0: projected dual ascent).
        schedule_decay: Decay of the moving average that records the learned per-layer schedule.
    """

    target: float
    dual_step_size: float
    initial_lambda: float = 0.0
    warmup_steps: int = 0
    fixed_lambda: bool = False
    damping: float = 0.0
    schedule_decay: float = 0.98
    state: BudgetState = field(init=False)
    _step_totals: torch.Tensor | None = field(init=False, default=None)  # violation, examples, targets (sums)
    _step_layers: torch.Tensor | None = field(init=False, default=None)
    _log: dict[str, float] = field(init=False, default_factory=dict)
    _log_counts: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"the budget target must be in (0, 1], got {self.target}")
        if self.dual_step_size < 0:
            raise ValueError(f"the dual step size (eta) must be >= 0, got {self.dual_step_size}")
        if self.initial_lambda < 0:
            raise ValueError(f"the initial lambda must be >= 0, got {self.initial_lambda}")
        if self.damping < 0:
            raise ValueError(f"the dual damping (k_p) must be >= 0, got {self.damping}")
        if self.warmup_steps < 0:
            raise ValueError(f"the budget warm-up must be >= 0 steps, got {self.warmup_steps}")
        self.state = BudgetState(lagrange_multiplier=float(self.initial_lambda), integral=float(self.initial_lambda))

    # ------------------------------------------------------------------ arithmetic
    @property
    def lagrange_multiplier(self) -> float:
        return self.state.lagrange_multiplier

    def current_target(self) -> float:
        """The target of the current step: annealed from 1.0 to ``target`` during the warm-up."""
        return self.anneal(self.target)

    def anneal(self, budget):
        """``budget`` (a number or a tensor of per-example budgets) as the current step's target: moved linearly
        from 1.0 to ``budget`` over the warm-up."""
        if self.warmup_steps == 0 or self.state.steps >= self.warmup_steps:
            return budget
        return 1.0 - (1.0 - budget) * self.state.steps / self.warmup_steps

    def penalty(self, expected_keep_ratio: torch.Tensor, reduce=torch.mean) -> torch.Tensor:
        """``lambda * reduce(keep - target)`` for a micro-batch of per-example expected keep ratios.

        ``reduce`` is the micro-batch mean by default; a trainer passes the reduction of its task loss
        (for example a sum over the micro-batch divided by the examples of the whole accumulated batch),
        so that micro-batches add up to the mean over the optimizer step.
        """
        return self.lagrange_multiplier * reduce(expected_keep_ratio - self.current_target())

    def dual_update(self, violation: float) -> float:
        """``I <- max(0, I + eta * violation)``, ``lambda = max(0, I + k_p * violation)``; returns the new lambda.

        With ``k_p = 0`` this is the projected ascent ``lambda <- max(0, lambda + eta * violation)``."""
        if not self.fixed_lambda:
            integral = self.lagrange_multiplier if self.state.integral is None else self.state.integral
            integral = max(0.0, integral + self.dual_step_size * violation)
            self.state.integral = integral
            self.state.lagrange_multiplier = max(0.0, integral + self.damping * violation)
        return self.lagrange_multiplier

    # ------------------------------------------------------------------ per-step accumulation
    def accumulate(
        self, expected_keep_ratio: torch.Tensor, layer_keep_ratio: torch.Tensor, target: torch.Tensor | None = None
    ) -> None:
        """Record a micro-batch: the summed violation, targets and per-layer ratios, and its example count.

        ``target`` holds per-example targets where the examples drew their own budgets (default: the current
        target for every example)."""
        keep = expected_keep_ratio.detach().float()
        targets = torch.full_like(keep, self.current_target()) if target is None else target.to(keep).reshape(-1)
        violation = (keep - targets).sum()
        examples = torch.tensor(float(keep.shape[0]), device=violation.device)
        totals = torch.cat([violation.reshape(1), examples.reshape(1), targets.sum().reshape(1)])
        layers = layer_keep_ratio.detach().float().sum(dim=0)
        if self._step_totals is None:
            self._step_totals, self._step_layers = totals, layers
        else:
            self._step_totals = self._step_totals + totals
            self._step_layers = self._step_layers + layers

    def step(self, all_reduce=None, record_only: bool = False) -> dict[str, float]:
        """Close an optimizer step: average over its examples (summed across processes by ``all_reduce``),
        take the dual step and update the learned schedule. Returns the step's statistics.

        ``record_only`` returns the statistics and changes no state (lambda, step count, learned schedule):
        the final top-k phase of Hard-Concrete training reports its realised keep ratio this way."""
        if self._step_totals is None:
            return {}
        totals = torch.cat([self._step_totals, self._step_layers])
        if all_reduce is not None:
            totals = all_reduce(totals)
        totals = totals.tolist()
        examples = max(totals[1], 1.0)
        violation, target = totals[0] / examples, totals[2] / examples
        layers = [value / examples for value in totals[3:]]
        self._step_totals = self._step_layers = None
        if record_only:
            return {"violation": violation, "target": target, "lambda": self.lagrange_multiplier, "layers": layers}
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
            self._log_counts[name] = self._log_counts.get(name, 0) + 1

    def pop_log(self) -> dict[str, float]:
        """Means of the recorded values since the last call, each over the steps that recorded it (a window
        that spans the switch to the top-k phase has budget statistics for only some of its steps)."""
        means = {name: total / self._log_counts[name] for name, total in self._log.items()}
        self._log, self._log_counts = {}, {}
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
            integral=payload.get("integral", payload["lagrange_multiplier"]),
        )
        return True
