"""Pipelines that take the budget per call: ``pipe(texts, retention_ratio=0.3)``.

A served model often has clients with different latency needs; the budget is a call argument of the model
(``model(**batch, retention_ratio=0.3)``), and these pipelines pass it through. ``import retention_hf`` makes
the ``text-classification`` and ``token-classification`` tasks build the subclasses below, which behave exactly
like the stock pipelines unless ``retention_ratio`` is given; ``extractive-question-answering`` (ours) takes it
too (through :func:`budget_forward_params`). Without the keyword the model's ``config.retention_ratio`` applies.
"""

from __future__ import annotations

from transformers import TextClassificationPipeline, TokenClassificationPipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_retention import _check_ratio


def budget_forward_params(model, retention_ratio: float | None) -> dict[str, float]:
    """The forward parameters that carry a call's ``retention_ratio`` to ``model`` (none without one); checks that
    the value is a budget and that the model is a retention model."""
    if retention_ratio is None:
        return {}
    if not hasattr(model.config, "retention_ratio"):
        raise ValueError(
            f"retention_ratio={retention_ratio!r} was given, but {type(model).__name__} is not a retention model"
        )
    _check_ratio(retention_ratio)
    return {"retention_ratio": float(retention_ratio)}


class RetentionBudgetPipelineMixin:
    """Accept ``retention_ratio`` (a number in (0, 1]) at construction or per call and hand it to the model."""

    def _sanitize_parameters(self, retention_ratio: float | None = None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)  # type: ignore[misc]
        forward = {**forward, **budget_forward_params(self.model, retention_ratio)}  # type: ignore[attr-defined]
        return preprocess, forward, postprocess

    def _forward(self, model_inputs: dict, retention_ratio: float | None = None, **forward_params):
        if retention_ratio is not None:
            model_inputs = {**model_inputs, "retention_ratio": retention_ratio}
        return super()._forward(model_inputs, **forward_params)  # type: ignore[misc]


class RetentionTextClassificationPipeline(RetentionBudgetPipelineMixin, TextClassificationPipeline):
    """transformers' ``TextClassificationPipeline`` plus the per-call ``retention_ratio``."""


class RetentionTokenClassificationPipeline(RetentionBudgetPipelineMixin, TokenClassificationPipeline):
    """transformers' ``TokenClassificationPipeline`` plus the per-call ``retention_ratio``."""

    def _forward(self, model_inputs: dict, retention_ratio: float | None = None, **forward_params):
        outputs = super()._forward(model_inputs, retention_ratio, **forward_params)
        outputs.pop("retention_ratio", None)  # the stock _forward hands its inputs on to postprocess
        return outputs


STOCK_TASKS = {
    "text-classification": RetentionTextClassificationPipeline,
    "token-classification": RetentionTokenClassificationPipeline,
}


def register_pipelines() -> None:
    """Register ``extractive-question-answering`` and give the two stock tasks the per-call budget (done on
    ``import retention_hf``). Only the stock tasks' implementation class changes, to a subclass; their models
    and defaults stay."""
    from transformers import AutoModelForQuestionAnswering

    from .question_answering import TASK, ExtractiveQuestionAnsweringPipeline

    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=ExtractiveQuestionAnsweringPipeline, pt_model=AutoModelForQuestionAnswering, type="text"
    )
    for task, pipeline_class in STOCK_TASKS.items():
        PIPELINE_REGISTRY.supported_tasks[task]["impl"] = pipeline_class


__all__ = [
    "RetentionBudgetPipelineMixin",
    "RetentionTextClassificationPipeline",
    "RetentionTokenClassificationPipeline",
    "budget_forward_params",
    "register_pipelines",
]
