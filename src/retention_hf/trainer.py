"""``RetentionTrainer``: a ``transformers.Trainer`` that holds a retention model to its budget.

By default (``selection_training="topk"``) every step trains with the inference-time top-k at the annealed
budget target, so the budget holds by construction. With ``selection_training="hard_concrete"`` the loss per
micro-batch is ``task loss + lambda * (expected keep ratio - target)``, and per optimizer step (after gradient
accumulation, with the violation all-reduced across processes) lambda takes a projected dual-ascent step. The
arithmetic lives in :mod:`retention_hf.budget`; this module wires it into the Trainer's loss, optimizer step,
logging and checkpoints.
"""

from __future__ import annotations

import copy
import math
import os

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, has_length
from transformers.utils import logging

from .budget import BudgetController
from .configuration_retention import RetentionConfig
from .distillation import (
    answer_importance,
    attention_rollout,
    distillation_loss,
    every_position,
    hidden_state_distillation_loss,
    ranking_distillation_loss,
    tagged_importance,
)
from .model_card import RetentionModelCardData, write_model_card
from .training_args import DEFAULT_DISTILLATION_WEIGHT, RetentionTrainingArguments


logger = logging.get_logger(__name__)

GATE_PARAMETER_MARKER = ".gates."


def is_gate_parameter(name: str) -> bool:
    """Whether a parameter (by its ``named_parameters`` name) belongs to a retention gate / scorer."""
    return GATE_PARAMETER_MARKER in f".{name}"


def _frozen_dense_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The default teacher: the model as it is now (typically a fine-tuned dense model), retention off."""
    teacher = copy.deepcopy(model)  # the copy's modules share one copied config
    teacher.config.retention_enabled = False
    return teacher


# the heads whose outputs ``distillation_loss`` compares (logits, or start and end logits)
DISTILLABLE_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


def _head(model: torch.nn.Module) -> str | None:
    name = type(model).__name__
    return name[name.index("For") :] if "For" in name else None


def _outside_label(model: torch.nn.Module) -> int | None:
    """What ``distillation_ranking_target='answer'`` ranks by, checked before training: ``None`` for a question-
    answering head (the teacher's start and end probabilities), the id of the ``"O"`` label for a tagger (the
    teacher's probability of any other label). Any other head has no answer to keep."""
    head = _head(model)
    if head == "ForQuestionAnswering":
        return None
    if head == "ForTokenClassification":
        label2id = model.config.label2id
        if "O" not in label2id:
            raise ValueError(
                f"distillation_ranking_target='answer' on a token-classification head ranks by the teacher's "
                f"probability of any label but the outside label 'O', and the labels have no 'O': {sorted(label2id)}"
            )
        return int(label2id["O"])
    raise ValueError(
        "distillation_ranking_target='answer' ranks by the tokens the head answers with: the teacher's start and end "
        f"logits (question answering) or its tagged tokens (token classification); {type(model).__name__} has "
        "neither: use 'attention_rollout'"
    )


def _has_fine_tuned_head(model: torch.nn.Module) -> bool:
    """Whether the checkpoint the model was loaded from carried this task head (``config.architectures`` names
    ``...For<Task>``), so that a dense copy of it is a teacher: a model built from a pretrained encoder alone
    (``BertModel``) has a fresh head, and distilling from that would teach noise."""
    head = _head(model)
    return head is not None and any(arch.endswith(head) for arch in model.config.architectures or ())


def _resolve_steps(value: float, max_steps: int) -> int:
    """A step count, or (a float in (0, 1)) a share of ``max_steps``, like ``TrainingArguments.warmup_steps``."""
    return math.ceil(value * max_steps) if 0 < value < 1 else int(value)


class _BudgetCallback(TrainerCallback):
    """Closes every optimizer step of the budget (dual step), resolves the budget warm-up and switches to
    top-k training for the final steps."""

    def __init__(self, trainer: RetentionTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.budget.warmup_steps = _resolve_steps(args.budget_warmup_steps, state.max_steps)
        self.topk_from = state.max_steps - _resolve_steps(args.topk_finetune_steps, state.max_steps)
        if args.selection_training == "topk":
            self.trainer.accelerator.unwrap_model(self.trainer.model).config.retention_train_with_topk = True

    def on_step_begin(self, args, state, control, **kwargs):
        config = self.trainer.accelerator.unwrap_model(self.trainer.model).config
        if args.topk_finetune_steps and state.global_step >= self.topk_from and not config.retention_train_with_topk:
            self.trainer._write_learned_schedule()  # the top-k phase runs the schedule learned so far
            config.retention_train_with_topk = True

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._close_budget_step()

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.accelerator.unwrap_model(self.trainer.model).config.retention_train_with_topk = False


class RetentionTrainer(Trainer):
    """Trainer for retention models: budget penalty, dual ascent, budget logs, budget state in checkpoints.

    Use it exactly like ``Trainer``, with :class:`RetentionTrainingArguments`. What it adds:

    * by default, training with the inference-time selection (the scheduled top-k at the budget target,
      annealed over the warm-up; straight-through scores) and distillation from the dense start model;
    * with ``selection_training="hard_concrete"``, the penalty ``lambda * (expected_keep_ratio - target)``,
      normalised like the task loss so that gradient accumulation gives the gradients of one big batch, and
      ``lambda <- max(0, lambda + eta * violation)`` once per optimizer step, on the violation averaged over
      the step's examples and all-reduced across processes, so every rank holds the same lambda;
    * logs ``lambda``, ``budget_target``, ``expected_keep_ratio``, ``keep_ratio``, ``keep_ratio_layer_{i}``,
      ``task_loss`` and (Hard-Concrete steps) ``budget_penalty`` through the normal Trainer logging;
    * ``budget_state.json`` in every checkpoint, restored by ``resume_from_checkpoint``;
    * with Hard-Concrete training, the learned per-layer schedule written to
      ``model.config.retention_learned_schedule`` whenever the model is saved and when training ends;
    * a separate learning rate for the gate parameters (``gate_learning_rate``).
    """

    def __init__(
        self,
        model=None,
        args: RetentionTrainingArguments | None = None,
        *trainer_args,
        teacher_model: torch.nn.Module | None = None,
        **kwargs,
    ):
        if model is None:
            raise ValueError("RetentionTrainer needs a retention model (model_init is not supported)")
        config = getattr(model, "config", None)
        if not isinstance(config, RetentionConfig):
            raise TypeError(
                f"RetentionTrainer needs a retention model (RetentionBert* / RetentionRoberta*), got "
                f"{type(model).__name__} with config {type(config).__name__}"
            )
        if args is None:
            args = RetentionTrainingArguments(output_dir="retention_trainer_output")
        if not isinstance(args, RetentionTrainingArguments):
            raise TypeError(f"RetentionTrainer needs RetentionTrainingArguments, got {type(args).__name__}")
        if args.retention_ratio is not None:
            config.retention_ratio = args.retention_ratio
        config.retention_gate_sampling = args.gate_sampling
        config.retention_inference_selection = args.inference_selection
        config.retention_sparse_training = args.exact_sparse_training
        config.retention_budget_cost = args.budget_cost
        # The training-mode flag is set when training (or its top-k phase) begins, so that a checkpoint saved
        # mid-run never imposes its mode on a new run.
        self.selects_by_topk = args.selection_training == "topk"
        if self.selects_by_topk and config.retention_schedule == "learned" and not config.retention_learned_schedule:
            raise ValueError(
                "retention_schedule='learned' needs config.retention_learned_schedule, which only Hard-Concrete "
                "training measures, and the model has none: top-k training would run the uniform fallback. Use "
                "retention_schedule='decay' (or another schedule), or selection_training='hard_concrete'"
            )
        if config.retention_scorer_attention_prior and not self.selects_by_topk:
            raise ValueError(
                "retention_scorer_attention_prior needs selection_training='topk': Hard-Concrete gates read the score "
                "as a keep probability, which the attention prior would shift"
            )
        config.retention_train_with_topk = False
        config.retention_topk_straight_through = args.topk_straight_through
        config.retention_topk_noise = args.topk_noise
        config.validate_retention()
        if args.retention_ratio_range is not None:  # an unreachable low end fails now, not at its first draw
            config.retention_layer_ratios(args.retention_ratio_range[0])
        self.budget = BudgetController(
            target=config.retention_ratio,
            dual_step_size=args.dual_step_size,
            initial_lambda=args.initial_lambda,
            warmup_steps=_resolve_steps(args.budget_warmup_steps, 0),
            fixed_lambda=args.fixed_lambda or self.selects_by_topk,  # top-k meets the budget by construction
            damping=args.dual_damping,
        )
        self._examples_in_batch: torch.Tensor | None = None
        self._micro_batch = 0  # micro-batches drawn in this optimizer step (retention_ratio_range)
        self._step_losses: dict[str, torch.Tensor | float] = {}
        self._eval_keep: list[torch.Tensor] = []
        super().__init__(model, args, *trainer_args, **kwargs)
        self.add_callback(_BudgetCallback(self))
        if getattr(model, "model_card_data", None) is None:  # what the saved card is rendered from
            model.model_card_data = RetentionModelCardData(base_model=config.name_or_path or None)
        self.distillation_weight = args.distillation_weight
        distillable = _head(model) in DISTILLABLE_HEADS
        if self.distillation_weight and not distillable:
            raise ValueError(
                f"distillation_weight={self.distillation_weight}: {type(model).__name__} has no logits to distil; "
                f"distillation covers the heads {', '.join(DISTILLABLE_HEADS)}"
            )
        if self.distillation_weight is None:
            teacher = distillable and (
                teacher_model is not None or (config.retention_enabled and _has_fine_tuned_head(model))
            )
            self.distillation_weight = DEFAULT_DISTILLATION_WEIGHT if teacher else 0.0
            if teacher:
                reason = "distilling from the dense teacher"
            elif not distillable:
                reason = f"{type(model).__name__} has no logits to distil"
            elif not config.retention_enabled:
                reason = "retention is off (a dense run)"
            else:
                reason = f"no teacher, {type(model).__name__}'s head is not fine-tuned ({config.architectures})"
            logger.info(f"distillation_weight={self.distillation_weight}: {reason}")
        self.teacher_model = None
        if self.distillation_weight > 0 or args.distillation_hidden_weight > 0 or args.distillation_ranking_weight > 0:
            self.teacher_model = teacher_model if teacher_model is not None else _frozen_dense_copy(model)
            self.teacher_model.to(self.args.device).eval().requires_grad_(False)
        self._ranks_by_rollout = args.distillation_ranking_target == "attention_rollout"
        self._outside_label = None
        if args.distillation_ranking_weight > 0 and not self._ranks_by_rollout:
            self._outside_label = _outside_label(model)
        if (
            args.distillation_ranking_weight > 0
            and self._ranks_by_rollout
            and self.teacher_model.config._attn_implementation != "eager"
        ):
            # the rollout reads attention probabilities, which only eager attention returns
            logger.info("ranking distillation: the teacher runs with eager attention to return its attention")
            self.teacher_model.set_attn_implementation("eager")
        self._rollout_reads = "first" if _head(model) == "ForSequenceClassification" else "all"

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None):
        """The default optimizer, with the gate parameters in their own groups at ``gate_learning_rate``
        (and the scorers' output biases, which set how many tokens pass, at ``gate_bias_learning_rate``)."""
        optimizer = super().create_optimizer(model)
        if self.optimizer_cls_and_kwargs is not None or (
            self.args.gate_learning_rate is None and self.args.gate_bias_learning_rate is None
        ):
            return optimizer
        gate_lr = self.args.gate_learning_rate or self.args.learning_rate
        bias_lr = self.args.gate_bias_learning_rate or gate_lr
        opt_model = self.model if model is None else model
        learning_rates = {
            id(p): bias_lr if name.endswith(".b") else gate_lr
            for name, p in opt_model.named_parameters()
            if is_gate_parameter(name)
        }
        groups = []
        for group in optimizer.param_groups:
            by_rate: dict[float | None, list] = {}
            for p in group["params"]:
                by_rate.setdefault(learning_rates.get(id(p)), []).append(p)
            for rate, params in by_rate.items():
                groups.append(
                    {**group, "params": params}
                    if rate is None
                    else {**group, "params": params, "lr": rate, "initial_lr": rate}
                )
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer

    def _clip_grad_norm(self, model):
        """Clip the backbone and the gates separately, so that a large budget gradient on the gates never
        shrinks the task gradient of the backbone. Returns the backbone's pre-clip norm."""
        named = list(model.named_parameters())
        gates = [p for name, p in named if is_gate_parameter(name)]
        if not gates or self._has_mixed_mesh_grads(model):
            return super()._clip_grad_norm(model)
        backbone = [p for name, p in named if not is_gate_parameter(name)]
        self.accelerator.clip_grad_norm_(gates, self.args.max_grad_norm)
        return self.accelerator.clip_grad_norm_(backbone, self.args.max_grad_norm)

    # ------------------------------------------------------------------ loss
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also count the examples of the accumulated batch: the penalty is normalised by them."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        examples = sum(len(next(iter(batch.values()))) for batch in batch_samples)
        examples = torch.tensor(examples, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            examples = self.accelerator.gather(examples).sum()
        self._examples_in_batch = examples
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        config = self.accelerator.unwrap_model(model).config
        topk_training = model.training and config.retention_enabled and config.retention_train_with_topk
        budgets = self._sampled_budgets(inputs) if topk_training else None
        groups = None if budgets is None or return_outputs else self._budget_groups(budgets, inputs)
        if groups is None:
            return self._budgeted_loss(model, inputs, budgets, topk_training, return_outputs, num_items_in_batch)
        # Sub-batches of neighbouring kept widths: a batch runs every layer at its widest row's width, so a low
        # budget next to a high one would pay for the high one's tokens. Each row's output is its own, so the
        # summed loss (every term weighted by its share of the micro-batch) is the micro-batch's loss.
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        batch_size = budgets.shape[0]
        loss = 0.0
        for rows in groups:
            part = {
                key: value[rows.to(value.device)]
                if isinstance(value, torch.Tensor) and value.shape[:1] == (batch_size,)
                else value
                for key, value in inputs.items()
            }
            share = 1.0 if scaled else len(rows) / batch_size
            loss = loss + self._budgeted_loss(
                model, part, budgets[rows], topk_training, False, num_items_in_batch, share=share
            )
        return loss

    def _budget_groups(self, budgets: torch.Tensor, inputs) -> list[torch.Tensor] | None:
        """``retention_ratio_groups`` sub-batches of the micro-batch's rows, ordered by their kept token count
        (budget times real length), so that each sub-batch's rows keep similar widths; None for one group."""
        groups = min(self.args.retention_ratio_groups, budgets.shape[0])
        if groups <= 1:
            return None
        mask = inputs.get("attention_mask")
        lengths = mask.sum(dim=1).double().cpu() if mask is not None else torch.ones_like(budgets)
        order = torch.argsort(budgets * lengths, stable=True)
        return list(order.tensor_split(groups))

    def _budgeted_loss(
        self, model, inputs, budgets, topk_training, return_outputs, num_items_in_batch, share: float = 1.0
    ):
        """The loss of ``inputs``, which are a ``share`` of the micro-batch: the task loss, the distillation terms
        and the budget penalty, each recorded for the logs."""
        if topk_training:  # top-k at the budget target of this step (annealed during the warm-up)
            inputs = {
                **inputs,
                "retention_ratio": self.budget.current_target() if budgets is None else budgets.tolist(),
            }
        distil_hidden = topk_training and self.args.distillation_hidden_weight > 0
        if distil_hidden:  # the kept tokens' layer outputs, matched to the teacher's
            inputs = {**inputs, "output_hidden_states": True}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return (loss, outputs) if return_outputs else loss
        # Per-example terms are normalised exactly like the task loss: either a sum over the accumulated
        # batch (the model used num_items_in_batch and the Trainer will not divide by the accumulation
        # steps) or a micro-batch mean (the Trainer divides by the accumulation steps).
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        divisor = (1 if scaled else self.current_gradient_accumulation_steps) / share
        self._record("task_loss", loss, divisor)
        weight = self.distillation_weight
        # no gate scores where the step ran dense (retention off, or a budget target of 1)
        ranking_weight = self.args.distillation_ranking_weight if outputs.get("gate_scores") is not None else 0.0
        if weight > 0 or distil_hidden or ranking_weight > 0:
            teacher_outputs = self._teacher_outputs(
                inputs, output_attentions=ranking_weight > 0 and self._ranks_by_rollout
            )
            if weight > 0:
                distillation = self._normalise(self._distillation(outputs, teacher_outputs, inputs), scaled)
                self._record("distillation_loss", distillation, divisor)
                loss = (1 - weight) * loss + weight * distillation
            if distil_hidden:
                positions = outputs.get("kept_positions")
                if positions is None:  # a dense step (budget 1): every real token
                    positions = every_position(inputs["attention_mask"], len(outputs["hidden_states"]) - 1)
                hidden = hidden_state_distillation_loss(
                    outputs["hidden_states"], positions, teacher_outputs["hidden_states"]
                )
                hidden = self._normalise(hidden, scaled)
                self._record("hidden_distillation_loss", hidden, divisor)
                loss = loss + self.args.distillation_hidden_weight * hidden
            if ranking_weight > 0:
                importance = self._ranking_importance(teacher_outputs, inputs, len(outputs["gate_scores"]))
                ranking = ranking_distillation_loss(outputs["gate_scores"], outputs["gate_positions"], importance)
                ranking = self._normalise(ranking, scaled)
                self._record("ranking_distillation_loss", ranking, divisor)
                loss = loss + ranking_weight * ranking
        expected = outputs.get("expected_keep_ratio")
        if expected is not None:  # retention enabled: the budget penalty
            penalty = self.budget.penalty(expected, reduce=lambda values: self._normalise(values, scaled))
            self.budget.accumulate(expected, outputs["layer_keep_ratio"])
            self._record("budget_penalty", penalty, divisor)
            loss = loss + penalty
        elif topk_training:  # exact selection, no penalty: log the realised keep ratio
            self.budget.accumulate(outputs["keep_ratio"], outputs["layer_keep_ratio"], target=budgets)
        loss = loss * share
        return (loss, outputs) if return_outputs else loss

    def _sampled_budgets(self, inputs) -> torch.Tensor | None:  # (batch,) float64
        """With ``retention_ratio_range``, this micro-batch's per-example budgets (annealed like a fixed budget).

        The draws depend only on the seed, the optimizer step, the micro-batch within it and the process, so a
        run resumed from a checkpoint draws exactly what the uninterrupted run drew."""
        bounds = self.args.retention_ratio_range
        if bounds is None:
            return None
        batch_size = next(value for value in inputs.values() if isinstance(value, torch.Tensor)).shape[0]
        key = ((self.args.seed * 1_000_003 + self.state.global_step) * 1_009 + self._micro_batch) * 127
        generator = torch.Generator().manual_seed((key + self.args.process_index) % 2**63)
        self._micro_batch += 1
        low, high = bounds
        draws = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        if self.args.retention_ratio_distribution == "log_uniform":
            budgets = low * (high / low) ** draws
        else:
            budgets = low + (high - low) * draws
        if self.args.retention_ratio_sampling == "sandwich":  # batches of >= 3 (checked by the arguments)
            at_low, at_high = self._sandwich_rows(batch_size)
            budgets[:at_low] = low
            budgets[at_low : at_low + at_high] = high
        return self.budget.anneal(budgets)

    def _sandwich_rows(self, batch_size: int) -> tuple[int, int]:
        """How many examples of a micro-batch the sandwich rule sets to the low and the high end (at least one each,
        and at least one left to draw in between)."""
        shares = self.args.retention_ratio_sandwich_shares
        if shares is None:
            return 1, 1
        at_low, at_high = (max(1, round(share * batch_size)) for share in shares)
        at_low = min(at_low, batch_size - 2)  # a short last batch: one row for the high end, one in between
        return at_low, min(at_high, batch_size - 1 - at_low)

    def _normalise(self, per_example: torch.Tensor, scaled: bool) -> torch.Tensor:
        """Reduce a per-example term over the micro-batch the way the task loss is reduced."""
        if not scaled:
            return per_example.mean()
        reduced = per_example.sum() / self._examples_in_batch
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            reduced = reduced * self.accelerator.num_processes  # DDP averages gradients over processes
        return reduced

    def _record(self, name: str, value: torch.Tensor, divisor: int) -> None:
        self._step_losses[name] = self._step_losses.get(name, 0.0) + value.detach() / divisor

    def _teacher_outputs(self, inputs, output_attentions: bool = False):
        student_only = ("labels", "start_positions", "end_positions", "retention_ratio")
        teacher_inputs = {k: v for k, v in inputs.items() if k not in student_only}
        if output_attentions:
            teacher_inputs["output_attentions"] = True
        with torch.no_grad():
            return self.teacher_model(**teacher_inputs)

    def _ranking_importance(self, teacher_outputs, inputs, num_layers: int) -> tuple[torch.Tensor, ...]:
        """Every layer's ranking target (``distillation_ranking_target``): the teacher's attention rollout, or what
        its head answers with (start and end distribution, or tagged tokens)."""
        if self._ranks_by_rollout:
            attentions = teacher_outputs["attentions"]
            return attention_rollout(
                attentions, self._padding_mask(inputs, attentions[0].shape[-1]), self._rollout_reads
            )
        if self._outside_label is not None:
            logits = teacher_outputs["logits"]
            return tagged_importance(
                logits, self._outside_label, self._padding_mask(inputs, logits.shape[1]), num_layers
            )
        start = teacher_outputs["start_logits"]
        return answer_importance(
            start, teacher_outputs["end_logits"], self._padding_mask(inputs, start.shape[1]), num_layers
        )

    def _padding_mask(self, inputs, seq_len: int) -> torch.Tensor:
        mask = inputs.get("attention_mask")
        if mask is None:
            batch_size = len(next(iter(inputs.values())))
            mask = torch.ones(batch_size, seq_len, dtype=torch.long)
        return mask.to(self.args.device)

    def _distillation(self, outputs, teacher_outputs, inputs) -> torch.Tensor:
        seq_len = outputs["logits" if "logits" in outputs else "start_logits"].shape[1]
        return distillation_loss(
            outputs, teacher_outputs, self._padding_mask(inputs, seq_len), self.args.distillation_temperature
        )

    def _close_budget_step(self) -> None:
        """End of an optimizer step (called by the budget callback): dual step and step statistics."""
        self._micro_batch = 0
        reduce = None
        if self.args.world_size > 1:
            reduce = lambda totals: self.accelerator.reduce(totals, reduction="sum")  # noqa: E731
        record = {name: float(value) for name, value in self._step_losses.items()}
        self._step_losses = {}
        config = self.accelerator.unwrap_model(self.model).config
        # the final top-k phase of Hard-Concrete training reports its keep ratio but leaves the budget state alone
        record_only = config.retention_train_with_topk and not self.selects_by_topk
        statistics = self.budget.step(all_reduce=reduce, record_only=record_only)
        if statistics:
            record.update(
                {
                    "lambda": statistics["lambda"],
                    "budget_target": statistics["target"],
                    "expected_keep_ratio": statistics["violation"] + statistics["target"],
                    "keep_ratio": sum(statistics["layers"]) / len(statistics["layers"]),
                    **{f"keep_ratio_layer_{i}": value for i, value in enumerate(statistics["layers"])},
                }
            )
        if record:
            self.budget.record_for_log(record)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the budget statistics since the last one
            logs.update(self.budget.pop_log())
        super().log(logs, start_time)

    # ------------------------------------------------------------------ schedule, checkpoints
    def _write_learned_schedule(self) -> None:
        """Store the per-layer keep ratios measured in Hard-Concrete training as the model's learned schedule.

        Top-k training runs the configured schedule itself, so there is nothing to learn: the model keeps
        exactly the schedule it trained with."""
        if self.selects_by_topk:
            return
        schedule = self.budget.learned_schedule()
        model = self.accelerator.unwrap_model(self.model)
        if schedule is not None and model.config.retention_enabled:
            model.config.retention_learned_schedule = schedule

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Save as usual; the model's ``README.md`` card then states the learned schedule and the latest
        eval metrics with retention on (``self.model_card_data``)."""
        self._write_learned_schedule()
        super().save_model(output_dir, _internal_call=_internal_call)

    # ------------------------------------------------------------------ model card, Hub
    @property
    def model_card_data(self) -> RetentionModelCardData:
        """The card data saved with the model: set ``datasets``, ``speedup`` ... on it before saving.

        ``evaluate`` with retention on records its metrics here; an evaluation with retention off (a dense
        reference on the same weights) does not describe the model and is left out.
        """
        return self.accelerator.unwrap_model(self.model).model_card_data

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        **kwargs,
    ) -> None:
        """Write the retention model card to ``output_dir/README.md`` (``push_to_hub`` calls this; the
        transformers default card is never written). The arguments mirror ``Trainer.create_model_card``."""
        if not self.is_world_process_zero():
            return
        card_data = self.model_card_data
        for name, value in (("language", language), ("license", license), ("base_model", finetuned_from)):
            if value is not None:
                setattr(card_data, name, value)
        for value in (dataset_tags, dataset):
            for name in [value] if isinstance(value, str) else value or []:
                if name not in card_data.datasets:
                    card_data.datasets.append(name)
        card_data.tags = sorted({*card_data.tags, *([tags] if isinstance(tags, str) else tags or [])})
        model = self.accelerator.unwrap_model(self.model)
        write_model_card(model, self.args.output_dir, card_data, model_name=self.hub_model_id or model_name)

    def push_to_hub(self, *args, **kwargs):
        """As ``Trainer.push_to_hub``; the model is first registered for its Auto class so that the upload
        also carries ``auto_map`` and the code files for ``trust_remote_code=True``."""
        with self.accelerator.unwrap_model(self.model).remote_code_files():
            return super().push_to_hub(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        lambdas = torch.tensor([self.budget.lagrange_multiplier], dtype=torch.float64, device=self.args.device)
        if self.args.world_size > 1:
            lambdas = self.accelerator.gather(lambdas)
        if self.args.should_save:
            checkpoint = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            self.budget.save(checkpoint, extra={"lambda_by_rank": lambdas.tolist()})

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if not self.budget.load(resume_from_checkpoint):
            logger.warning(
                f"{resume_from_checkpoint} has no budget state: lambda restarts at {self.budget.lagrange_multiplier}"
            )

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The usual evaluation, plus ``<prefix>_keep_ratio``: the realised share of the dense work.

        The keep ratios are read by a forward hook, so they are collected whether or not the eval data has
        labels (``predict`` on unlabelled data included).
        """
        self._eval_keep = []

        def collect_keep_ratio(module, args, outputs):
            if isinstance(outputs, dict) and outputs.get("keep_ratio") is not None:
                self._eval_keep.append(outputs["keep_ratio"].detach())

        hook = self.model.register_forward_hook(collect_keep_ratio)
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        finally:
            hook.remove()
        if self._eval_keep:
            keep = torch.cat(self._eval_keep)
            totals = torch.stack([keep.sum(), torch.tensor(float(keep.numel()), device=keep.device)])
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            output.metrics[f"{metric_key_prefix}_keep_ratio"] = (totals[0] / totals[1]).item()
            self._eval_keep = []
        return output

    def _get_eval_sampler(self, eval_dataset):
        """Evaluate and predict in dataset order, whatever ``train_sampling_strategy`` says.

        transformers also groups eval batches by length under ``train_sampling_strategy="group_by_length"``,
        which returns ``predict`` outputs in a shuffled order; QA and tagging post-processing match
        predictions to their windows by position, so they would silently score the wrong windows.
        """
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def evaluate(self, *args, **kwargs):
        self._write_learned_schedule()  # evaluate with the schedule learned so far
        metrics = super().evaluate(*args, **kwargs)
        if self.accelerator.unwrap_model(self.model).config.retention_enabled:
            self.model_card_data.update_from_metrics(metrics, prefix=f"{kwargs.get('metric_key_prefix', 'eval')}_")
        return metrics

    def evaluate_budgets(self, budgets, eval_dataset=None, metric_key_prefix: str = "eval") -> dict[float, dict]:
        """Evaluate the model at every budget in ``budgets`` (the same weights, the budget set per run) and put
        the curve on the model card. Returns ``{budget: metrics}``; the model's own budget is restored after.

        What a checkpoint trained with ``retention_ratio_range`` is for: one model, any budget per call."""
        model = self.accelerator.unwrap_model(self.model)
        if not model.config.retention_enabled or model.config.retention_inference_selection != "topk":
            raise ValueError(
                "evaluate_budgets needs retention on with top-k selection: with retention off or threshold "
                "selection the budget changes nothing"
            )
        budgets = sorted({float(value) for value in budgets}, reverse=True)
        for budget in budgets:
            model.config.retention_layer_ratios(budget)  # a bad budget fails before any evaluation
        self._write_learned_schedule()
        curve: dict[float, dict] = {}
        for budget in budgets:  # the budget of every forward pass, per call: the config stays as it is
            handle = model.register_forward_pre_hook(
                lambda module, args, kwargs, budget=budget: (args, {**kwargs, "retention_ratio": budget}),
                with_kwargs=True,
            )
            try:  # one prefix per budget, so logged metrics of different budgets never overwrite each other
                prefix = f"{metric_key_prefix}_rho{budget:g}"
                metrics = super().evaluate(eval_dataset, metric_key_prefix=prefix)
            finally:
                handle.remove()
            curve[budget] = {f"{metric_key_prefix}_{key[len(prefix) + 1 :]}": value for key, value in metrics.items()}
        self.model_card_data.set_budget_curve(curve, prefix=f"{metric_key_prefix}_")
        return curve

    def predict(self, *args, **kwargs):
        self._write_learned_schedule()  # predict with the schedule learned so far
        return super().predict(*args, **kwargs)

    def train(self, *args, **kwargs):
        # the range this training teaches, or none: a model fine-tuned again at one budget no longer claims one
        model = self.accelerator.unwrap_model(self.model)
        bounds = self.args.retention_ratio_range
        model.config.retention_trained_ratio_range = list(bounds) if bounds and model.config.retention_enabled else None
        output = super().train(*args, **kwargs)
        self._write_learned_schedule()
        return output
