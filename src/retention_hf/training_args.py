"""``RetentionTrainingArguments``: ``TrainingArguments`` plus the budget knobs, all reachable from the
command line through ``HfArgumentParser``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments


# Default dual step size. The paper's eta = 1e-2 acts on a violation counted in tokens,
# (sum_t p_t - M); our violation is that count divided by the example's length T, so the same pull on
# lambda needs eta ~ 1e-2 * T: 0.25-1 for sentences (T ~ 25-100 tokens), ~5 for 512-token documents.
# Measured on SST-2 with MiniLM (one epoch, 250 steps, target annealed over the first 30 %): with
# eta = 0.05 the budget never bound (lambda ~ 5, expected keep ~ 0.98 at the end); with eta = 0.5 it
# bound by the end of the warm-up and held (expected keep 0.52 for a 0.5 budget).
DEFAULT_DUAL_STEP_SIZE = 0.5


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
        default=0.3,
        metadata={
            "help": "Anneal the budget target linearly from 1.0 to retention_ratio over this many optimizer steps; a "
            "float in [0, 1) is a ratio of the total steps (like warmup_steps)."
        },
    )
    gate_learning_rate: float | None = field(
        default=1e-3,
        metadata={"help": "Learning rate of the gate (scorer) weights; None uses learning_rate (one timescale)."},
    )
    gate_bias_learning_rate: float | None = field(
        default=5e-2,
        metadata={
            "help": "Learning rate of the scorers' output biases, which set how many tokens pass (None: "
            "gate_learning_rate). A fast bias lets the keep ratio follow the annealed budget."
        },
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
    topk_finetune_steps: float = field(
        default=0,
        metadata={
            "help": "Train the last steps with the inference-time top-k selection (learned schedule, scorers "
            "frozen in effect), so the encoder adapts to exactly the tokens it keeps at inference. A count, or a "
            "float in [0, 1) for a share of the run."
        },
    )
    exact_sparse_training: bool = field(
        default=False,
        metadata={
            "help": "Physically drop tokens whose sampled gate is exactly 0 during training (same loss and gradients)."
        },
    )

    distillation_weight: float = field(
        default=0.0,
        metadata={
            "help": "alpha of knowledge distillation from a dense teacher: loss = (1 - alpha) * task + alpha * KD "
            "(+ the budget penalty). The teacher is the trainer's teacher_model, or a frozen dense copy of the "
            "model as it was when training started."
        },
    )
    distillation_temperature: float = field(default=2.0, metadata={"help": "Softmax temperature of the distillation."})

    def __post_init__(self):
        super().__post_init__()
        if self.retention_ratio is not None and not 0.0 < self.retention_ratio <= 1.0:
            raise ValueError(f"retention_ratio must be in (0, 1], got {self.retention_ratio}")
        if self.dual_step_size < 0:
            raise ValueError(f"dual_step_size (eta) must be >= 0, got {self.dual_step_size}")
        if self.initial_lambda < 0:
            raise ValueError(f"initial_lambda must be >= 0, got {self.initial_lambda}")
        for name in ("gate_learning_rate", "gate_bias_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in ("budget_warmup_steps", "topk_finetune_steps"):
            value = getattr(self, name)
            if value < 0 or (value >= 1 and value != int(value)):
                raise ValueError(f"{name} must be a step count >= 0 or a ratio in [0, 1), got {value}")
        if not 0.0 <= self.distillation_weight <= 1.0:
            raise ValueError(f"distillation_weight must be in [0, 1], got {self.distillation_weight}")
        if not self.distillation_temperature > 0:
            raise ValueError(f"distillation_temperature must be > 0, got {self.distillation_temperature}")
        if self.exact_sparse_training and self.gate_sampling != "hard_concrete":
            raise ValueError(
                "exact_sparse_training needs gate_sampling='hard_concrete': sigmoid gates are never exactly 0"
            )
