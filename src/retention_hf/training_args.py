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

# With selection_training='hard_concrete', the share of the run trained with the inference-time top-k selection
# after the Hard-Concrete phase, chosen on a validation split carved out of SST-2 train when that was the default
# recipe: a soft phase that teaches the scorers a ranking over every token, then half the run on exactly the
# tokens inference keeps.
DEFAULT_TOPK_FINETUNE_STEPS = 0.5

# The budget warm-up (a share of the run over which the budget target falls from 1.0). One budget: 0.3, chosen on
# the SST-2 train carve-out (a longer warm-up cost 1.4 to 2.3 points at full scale). A range of budgets
# (retention_ratio_range): 0, chosen on the full-scale carve-out over two seeds (results/grid-any): the draws hold
# the high end already, and annealing them from 1.0 cost 2.5 and 3.6 points at rho 0.3 (one per seed) and 4.8 at
# 0.2 (the mean); at the 8k scale it cost 0.15 to 3.05 points at 0.5 and 0.3 over three seeds (results/ablation-any).
DEFAULT_BUDGET_WARMUP_STEPS = 0.3
DEFAULT_RANGE_BUDGET_WARMUP_STEPS = 0.0

# Sub-batches per micro-batch with retention_ratio_range (the same gradients, a narrower pass for the low budgets):
# 20 steps of IMDb at 512 tokens, batch 16, took 119 s in one pass, 76 s in 2, 60 s in 4 and 65 s in 8 (one budget,
# rho 0.5: 73 s); 60 steps of SST-2, batch 32, 29.9 s in one pass and 30.9 s in 4 (docs/training.md).
DEFAULT_RANGE_GROUPS = 4

# alpha of the distillation from a dense teacher when the model starts from a fine-tuned task head (README,
# "Training recipe": on the full-scale carve-out of SST-2 train it gained over the same recipe without it).
DEFAULT_DISTILLATION_WEIGHT = 0.5


@dataclass
class RetentionTrainingArguments(TrainingArguments):
    """``TrainingArguments`` for budgeted fine-tuning with :class:`~retention_hf.RetentionTrainer`."""

    retention_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Budget rho in (0, 1]: the share of the dense token-layer work to spend. Overrides the model config."
        },
    )
    retention_ratio_range: list[float] | None = field(
        default=None,
        metadata={
            "help": "Train one model for every budget in [low, high] (two numbers, e.g. 0.2 1.0): with top-k training "
            "each example of every step draws its budget uniformly from the range (no budget warm-up by default), so "
            "the checkpoint can serve any budget in it per call. retention_ratio stays the budget it serves by default."
        },
    )
    retention_ratio_sampling: Literal["uniform", "sandwich"] = field(
        default="uniform",
        metadata={
            "help": "With retention_ratio_range: 'uniform' draws every example's budget; 'sandwich' also sets the first "
            "example of every micro-batch to the low end and the second to the high end (the sandwich rule of "
            "slimmable networks), so both ends train in every step."
        },
    )
    retention_ratio_sandwich_shares: list[float] | None = field(
        default=None,
        metadata={
            "help": "With retention_ratio_sampling='sandwich': the shares of every micro-batch's examples set to the "
            "low and the high end of the range (two numbers, e.g. 0 0.25: rounded to whole examples, at least one "
            "each). Default: one example at each end. On the SST-2 carve-out 0 0.25 scored higher at rho 1 to 0.5 "
            "and lower at 0.3 and 0.2 (docs/benchmarks.md)."
        },
    )
    retention_ratio_distribution: Literal["uniform", "log_uniform"] = field(
        default="uniform",
        metadata={
            "help": "With retention_ratio_range: how the drawn budgets spread over it. 'uniform' in rho; 'log_uniform' "
            "uniform in log(rho), so every halving of the budget gets the same share of the draws (more of them at "
            "the low end, and a cheaper epoch). On the SST-2 carve-out it scored below 'uniform' at 0.3 and 0.2 in "
            "each of three seeds (docs/training.md)."
        },
    )
    retention_ratio_groups: int | None = field(
        default=None,
        metadata={
            "help": "With retention_ratio_range: run every micro-batch as this many sub-batches of rows with similar "
            "kept token counts (budget times length). A batch runs each layer at its widest row's width, so one "
            "high-budget row makes every row pay for its tokens; sub-batches cut that cost on long inputs. Each "
            "row's output is its own, so the loss and gradients are those of the whole micro-batch. Default: "
            f"{DEFAULT_RANGE_GROUPS} with retention_ratio_range (half the step time on IMDb at 512 tokens, the same "
            "on SST-2), 1 without."
        },
    )
    dual_step_size: float = field(
        default=DEFAULT_DUAL_STEP_SIZE,
        metadata={"help": "eta of the projected dual ascent lambda <- max(0, lambda + eta * (keep - target))."},
    )
    initial_lambda: float = field(default=0.0, metadata={"help": "Lagrange multiplier at step 0."})
    budget_warmup_steps: float | None = field(
        default=None,
        metadata={
            "help": "Anneal the budget target linearly from 1.0 to retention_ratio (with retention_ratio_range: each "
            "drawn budget from 1.0 to its value) over this many optimizer steps; a float in [0, 1) is a ratio of the "
            f"total steps (like warmup_steps). Default: {DEFAULT_BUDGET_WARMUP_STEPS} for one budget, "
            f"{DEFAULT_RANGE_BUDGET_WARMUP_STEPS:g} with retention_ratio_range, whose draws hold the high end already "
            "(docs/training.md)."
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
    selection_training: Literal["topk", "hard_concrete"] = field(
        default="topk",
        metadata={
            "help": "How training selects tokens. 'topk' (default, chosen on a validation split carved out of SST-2 "
            "train): exactly as at inference (the scheduled top-k by score, tokens physically removed) from the "
            "first step, at the annealed budget target, with a straight-through gradient for the scores: the "
            "training budget is exact and no dual variable is needed. 'hard_concrete': the paper's relaxed gates "
            "(Eq. 6) under the Lagrangian budget (Eq. 5), then top-k for the final topk_finetune_steps."
        },
    )
    topk_noise: float = field(
        default=0.0,
        metadata={"help": "selection_training='topk': scale of the Gumbel noise on the scores (0: deterministic)."},
    )
    topk_straight_through: bool = field(
        default=True,
        metadata={
            "help": "While training with top-k (selection_training='topk', or the final topk_finetune_steps of "
            "Hard-Concrete training), pass the task gradient to the kept tokens' scores (straight-through); false "
            "freezes the ranking in effect."
        },
    )
    budget_cost: Literal["probability", "l0"] = field(
        default="probability",
        metadata={
            "help": "selection_training='hard_concrete': what a gate costs the budget, the paper's p = sigmoid(s) "
            "or 'l0', P(z != 0), the probability that the token is processed at all."
        },
    )
    dual_damping: float = field(
        default=0.0,
        metadata={
            "help": "Proportional gain k_p of a PI-controlled Lagrange multiplier, lambda = max(0, I + k_p * "
            "violation) with I <- max(0, I + eta * violation): lambda falls as soon as the keep ratio crosses the "
            "target, which damps the overshoot of pure dual ascent (0: the paper's projected ascent)."
        },
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
    topk_finetune_steps: float | None = field(
        default=None,
        metadata={
            "help": "selection_training='hard_concrete': train the last steps with the inference-time top-k "
            "selection (tokens physically removed, the model's schedule), so the encoder adapts to exactly the "
            "tokens it keeps at inference. A count, or a float in [0, 1) for a share of the run; 0 trains with "
            f"the gates throughout. Default: {DEFAULT_TOPK_FINETUNE_STEPS} with hard_concrete, 0 with topk."
        },
    )
    exact_sparse_training: bool = field(
        default=False,
        metadata={
            "help": "Physically drop tokens whose sampled gate is exactly 0 during training (same loss and gradients)."
        },
    )

    distillation_weight: float | None = field(
        default=None,
        metadata={
            "help": "alpha of knowledge distillation from a dense teacher: loss = (1 - alpha) * task + alpha * KD "
            "(+ the budget penalty). The teacher is the trainer's teacher_model, or a frozen dense copy of the "
            f"model as it was when training started. Default: {DEFAULT_DISTILLATION_WEIGHT} when there is a "
            "teacher worth learning from (a teacher_model, or a model whose checkpoint was fine-tuned with this "
            "task head), else 0."
        },
    )
    distillation_temperature: float = field(default=2.0, metadata={"help": "Softmax temperature of the distillation."})
    distillation_hidden_weight: float = field(
        default=0.0,
        metadata={
            "help": "beta of hidden-state distillation in top-k steps: loss += beta * the mean squared error between "
            "each layer's output for the kept tokens and the dense teacher's at the same positions. The kept "
            "tokens learn to carry what the dense model had there, with the dropped context gone. A top-k step "
            "that runs dense (budget 1, at the start of the budget warm-up) compares every real token."
        },
    )
    distillation_ranking_weight: float = field(
        default=0.0,
        metadata={
            "help": "gamma of ranking distillation: loss += gamma * the KL divergence, at every gate, from the dense "
            "teacher's attention rollout over the tokens the gate chooses from to the softmax of the gate's scores. "
            "Every candidate token's score learns, dropped ones included (the task gradient reaches kept tokens "
            "only). Needs a teacher: teacher_model, or the frozen dense copy of the start model."
        },
    )
    distillation_ranking_target: str = field(
        default="attention_rollout",
        metadata={
            "help": "what ranking distillation teaches every gate: 'attention_rollout' (how much the teacher's "
            "output draws on each token) or 'answer', the tokens a token-level head answers with, which a gate "
            "must not drop early: for extractive QA the teacher's start and end probabilities, for token "
            "classification its probability of any label but 'O'."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.topk_finetune_steps is None:
            self.topk_finetune_steps = DEFAULT_TOPK_FINETUNE_STEPS if self.selection_training == "hard_concrete" else 0
        if self.retention_ratio is not None and not 0.0 < self.retention_ratio <= 1.0:
            raise ValueError(f"retention_ratio must be in (0, 1], got {self.retention_ratio}")
        if self.dual_step_size < 0:
            raise ValueError(f"dual_step_size (eta) must be >= 0, got {self.dual_step_size}")
        self._check_ratio_range()
        if self.budget_warmup_steps is None:
            self.budget_warmup_steps = (
                DEFAULT_BUDGET_WARMUP_STEPS if self.retention_ratio_range is None else DEFAULT_RANGE_BUDGET_WARMUP_STEPS
            )
        for name, choices in (
            ("selection_training", ("topk", "hard_concrete")),
            ("budget_cost", ("probability", "l0")),
            ("retention_ratio_sampling", ("uniform", "sandwich")),
            ("retention_ratio_distribution", ("uniform", "log_uniform")),
            ("distillation_ranking_target", ("attention_rollout", "answer")),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not self.dual_damping >= 0:
            raise ValueError(f"dual_damping (k_p) must be >= 0, got {self.dual_damping}")
        if not 0 <= self.topk_noise < float("inf"):
            raise ValueError(f"topk_noise must be a finite number >= 0, got {self.topk_noise}")
        if self.selection_training == "topk":
            self._check_topk_combinations()
        elif self.topk_noise:
            raise ValueError(f"topk_noise={self.topk_noise} applies to selection_training='topk' only")
        if self.budget_cost == "l0" and self.gate_sampling != "hard_concrete":
            raise ValueError(
                "budget_cost='l0' is the probability of a non-zero Hard-Concrete gate: it needs "
                "gate_sampling='hard_concrete'"
            )
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
        if self.distillation_weight is not None and not 0.0 <= self.distillation_weight <= 1.0:
            raise ValueError(f"distillation_weight must be in [0, 1], got {self.distillation_weight}")
        if not 0.0 <= self.distillation_hidden_weight < float("inf"):
            raise ValueError(
                f"distillation_hidden_weight must be a finite number >= 0, got {self.distillation_hidden_weight}"
            )
        if not 0.0 <= self.distillation_ranking_weight < float("inf"):
            raise ValueError(
                f"distillation_ranking_weight must be a finite number >= 0, got {self.distillation_ranking_weight}"
            )
        if not self.distillation_temperature > 0:
            raise ValueError(f"distillation_temperature must be > 0, got {self.distillation_temperature}")
        if self.exact_sparse_training and self.gate_sampling != "hard_concrete":
            raise ValueError(
                "exact_sparse_training needs gate_sampling='hard_concrete': sigmoid gates are never exactly 0"
            )

    def _check_ratio_range(self) -> None:
        self._check_sandwich_shares()
        groups = self.retention_ratio_groups
        if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 1):
            raise ValueError(f"retention_ratio_groups must be a whole number >= 1, got {groups!r}")
        if self.retention_ratio_range is None:
            if groups not in (None, 1):
                raise ValueError(
                    f"retention_ratio_groups={groups} groups the budgets drawn with retention_ratio_range; one budget "
                    "needs no groups: set retention_ratio_range or drop it"
                )
            self.retention_ratio_groups = 1
            return
        if groups is None:
            self.retention_ratio_groups = DEFAULT_RANGE_GROUPS
        bounds = list(self.retention_ratio_range)
        if len(bounds) != 2 or not all(isinstance(value, (int, float)) for value in bounds):
            raise ValueError(
                f"retention_ratio_range must be two numbers (low, high), got {self.retention_ratio_range!r}"
            )
        low, high = (float(value) for value in bounds)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"retention_ratio_range must satisfy 0 < low <= high <= 1, got ({low}, {high})")
        if self.selection_training != "topk":
            raise ValueError(
                "retention_ratio_range samples the budget of the top-k selection; the Hard-Concrete recipe trains "
                "one budget through its penalty: use selection_training='topk'"
            )
        self.retention_ratio_range = [low, high]
        if self.retention_ratio_sampling == "sandwich" and self.per_device_train_batch_size < 3:
            raise ValueError(
                f"retention_ratio_sampling='sandwich' sets two examples of every micro-batch to the ends of the range; "
                f"with per_device_train_batch_size={self.per_device_train_batch_size} no example would draw a budget "
                "in between: use 'uniform' or micro-batches of at least 3"
            )

    def _check_sandwich_shares(self) -> None:
        shares = self.retention_ratio_sandwich_shares
        if shares is None:
            return
        if self.retention_ratio_range is None:
            raise ValueError(
                f"retention_ratio_sandwich_shares={shares!r} sizes the ends of the sandwich rule of "
                "retention_ratio_range: set it or drop them"
            )
        if self.retention_ratio_sampling != "sandwich":
            raise ValueError(
                f"retention_ratio_sandwich_shares={shares!r} sizes the ends of the sandwich rule: set "
                "retention_ratio_sampling='sandwich' or drop it"
            )
        values = list(shares)
        if len(values) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0 for v in values
        ):
            raise ValueError(f"retention_ratio_sandwich_shares must be two shares in [0, 1), got {shares!r}")
        if sum(values) >= 1.0:
            raise ValueError(
                f"retention_ratio_sandwich_shares {shares!r} leave no example to draw a budget in between: their "
                "sum must be below 1"
            )
        self.retention_ratio_sandwich_shares = [float(v) for v in values]

    def _check_topk_combinations(self) -> None:
        """Reject the Hard-Concrete settings that top-k training would silently ignore."""
        if self.topk_finetune_steps:
            raise ValueError(
                "topk_finetune_steps switches Hard-Concrete training to top-k for the final steps; with "
                "selection_training='topk' every step already trains with top-k: set topk_finetune_steps=0"
            )
        if self.inference_selection == "threshold":
            raise ValueError(
                "selection_training='topk' learns scores that only rank tokens, so a probability threshold "
                "means nothing for them: use inference_selection='topk' or selection_training='hard_concrete'"
            )
        ignored = {
            "budget_cost": self.budget_cost != "probability",
            "dual_damping": self.dual_damping != 0,
            "exact_sparse_training": self.exact_sparse_training,
            "gate_sampling": self.gate_sampling != "hard_concrete",
            "fixed_lambda": self.fixed_lambda,
            "dual_step_size": self.dual_step_size != DEFAULT_DUAL_STEP_SIZE,
            "initial_lambda": self.initial_lambda != 0,
        }
        if any(ignored.values()):
            names = ", ".join(name for name, set_ in ignored.items() if set_)
            raise ValueError(
                f"{names} configure the Hard-Concrete budget, which selection_training='topk' does not use: "
                f"drop them or use selection_training='hard_concrete'"
            )
        if self.ddp_find_unused_parameters is None:  # a gate that drops nothing in a step runs no scorer
            self.ddp_find_unused_parameters = True
