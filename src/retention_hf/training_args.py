"""``RetentionTrainingArguments``: ``TrainingArguments`` plus the budget knobs, all reachable from the
command line through ``HfArgumentParser``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments


# Default dual step size. The paper's eta = 1e-2 acts on a violation counted in tokens,
# (sum_t p_t - M); our violation is that count divided by the example's length T, so the same pull
# needs eta * T. For sentence-level inputs (T ~ 25-100 tokens) that is 0.25-1; we take 1.0 so that
# a violation of 0.1 raises lambda by 0.1 per step and the budget binds within tens of steps.
DEFAULT_DUAL_STEP_SIZE = 1.0


@dataclass
class RetentionTrainingArguments(TrainingArguments):
    """``TrainingArguments`` for budgeted fine-tuning with :class:`~retention_hf.RetentionTrainer`."""

    retention_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Budget rho in (0, 1]: the share of the dense token-layer work to spend. Overrides the model config."
        },
    )
    dual_step_size: float = field(
        default=DEFAULT_DUAL_STEP_SIZE,
        metadata={"help": "eta of the projected dual ascent lambda <- max(0, lambda + eta * (keep - target))."},
    )
    initial_lambda: float = field(default=0.0, metadata={"help": "Lagrange multiplier at step 0."})
    budget_warmup_steps: float = field(
        default=0,
        metadata={
            "help": "Anneal the budget target linearly from 1.0 to retention_ratio over this many optimizer steps; a "
            "float in [0, 1) is a ratio of the total steps (like warmup_steps)."
        },
    )
    gate_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the gate (scorer) parameters; defaults to learning_rate (one timescale)."},
    )
    fixed_lambda: bool = field(
        default=False, metadata={"help": "Ablation: keep lambda at initial_lambda instead of dual ascent."}
    )
    gate_sampling: Literal["hard_concrete", "sigmoid"] = field(
        default="hard_concrete",
        metadata={"help": "Training gates: Hard-Concrete samples, or deterministic sigmoid gates (ablation)."},
    )
    inference_selection: Literal["topk", "threshold"] = field(
        default="topk",
        metadata={
            "help": "Inference: keep the scheduled top-M tokens per layer, or threshold the keep probability (ablation)."
        },
    )
    exact_sparse_training: bool = field(
        default=False,
        metadata={
            "help": "Physically drop tokens whose sampled gate is exactly 0 during training (same loss and gradients)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.retention_ratio is not None and not 0.0 < self.retention_ratio <= 1.0:
            raise ValueError(f"retention_ratio must be in (0, 1], got {self.retention_ratio}")
        if self.dual_step_size < 0:
            raise ValueError(f"dual_step_size (eta) must be >= 0, got {self.dual_step_size}")
        if self.initial_lambda < 0:
            raise ValueError(f"initial_lambda must be >= 0, got {self.initial_lambda}")
        if self.budget_warmup_steps < 0 or (
            self.budget_warmup_steps >= 1 and self.budget_warmup_steps != int(self.budget_warmup_steps)
        ):
            raise ValueError(
                f"budget_warmup_steps must be a step count >= 0 or a ratio in [0, 1), got {self.budget_warmup_steps}"
            )
        if self.gate_learning_rate is not None and not self.gate_learning_rate > 0:
            raise ValueError(f"gate_learning_rate must be > 0, got {self.gate_learning_rate}")
        if self.exact_sparse_training and self.gate_sampling != "hard_concrete":
            raise ValueError(
                "exact_sparse_training needs gate_sampling='hard_concrete': sigmoid gates are never exactly 0"
            )
