"""Model cards for retention checkpoints: card data plus a Jinja template, never ad-hoc strings.

:class:`RetentionModelCardData` holds what a card states beyond the config (base model, datasets, eval
metrics, measured speed-up). :func:`render_model_card` combines it with the model's config (budget,
per-layer schedule, auto classes) and ``model_cards/retention_model_card.md`` into a
``huggingface_hub.ModelCard`` whose metadata carries the metrics as ``model-index`` entries
(``EvalResult``), so the Hub shows them and ``ModelCard.load`` reads them back.

``save_pretrained`` of every retention model writes the card as ``README.md`` (from
``model.model_card_data``); ``RetentionTrainer`` fills that data with its eval metrics.
"""

from __future__ import annotations

import copy
import html
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData


TEMPLATE_PATH = Path(__file__).parent / "model_cards" / "retention_model_card.md"
CARD_NAME = "README.md"
CURVE_IMAGE = "budget_curve.svg"  # written next to the card when it has a budget curve
PAPER_URL = "https://arxiv.org/abs/2510.08798"
# model-index needs a name; until the card names the model this one stands in, and is not read back.
PLACEHOLDER_NAME = "retention-model"
# Card facts with no standard metadata field, kept under this metadata key so a re-rendered card keeps them.
EXTRA_KEY = "retention_hf"
_EXTRA_FIELDS = (
    "local_datasets",
    "eval_dataset",
    "eval_split",
    "keep_ratio",
    "speedup",
    "speedup_setup",
    "budget_curve",
)
_DEFAULT_TAGS = ("retention-hf", "adaptive-retention", "token-pruning")

# Trainer metrics that describe the run rather than the model's quality.
_NOT_QUALITY = ("runtime", "per_second", "loss", "epoch", "keep_ratio", "speedup", "preparation_time", "_retention_off")

# What an architecture suffix means on the Hub: (auto class, pipeline tag / model-index task type).
_HEADS = {
    "ForSequenceClassification": ("AutoModelForSequenceClassification", "text-classification"),
    "ForQuestionAnswering": ("AutoModelForQuestionAnswering", "question-answering"),
    "ForTokenClassification": ("AutoModelForTokenClassification", "token-classification"),
    "ForSentenceScoring": (None, "summarization"),  # no transformers Auto class: load the class itself
}


@dataclass
class RetentionModelCardData:
    """What a retention model's card states besides its config.

    Args:
        model_name: The model's name on the card and in ``model-index`` (for example the repo id).
        base_model: The Hub id of the checkpoint it was fine-tuned from. A local directory is not an id
            and is left out of the metadata.
        datasets: Hub ids or names of the training data.
        local_datasets: Local data files it was trained on (``folder/file``): named on the card as local
            files, kept out of the Hub ``datasets`` metadata, which holds dataset ids.
        eval_dataset: The name of the evaluation data in ``model-index``; defaults to the first dataset.
        eval_split: The split the metrics were measured on (for example ``"validation"``).
        metrics: Quality metrics, ``{"accuracy": 0.83}``; written as ``model-index`` entries.
        keep_ratio: The realised share of the dense token-layer work on the eval data.
        speedup: Measured inference speed-up over the same weights run dense.
        speedup_setup: How the speed-up was measured (hardware, batch, length), shown next to it.
        language, license, tags: Hub metadata.
        budget_curve: The same checkpoint measured at several budgets, one row per budget, highest first:
            ``{"budget": 0.3, "keep_ratio": 0.301, "metrics": {"accuracy": 0.84}}`` (``RetentionTrainer.
            evaluate_budgets`` fills it), optionally with a measured ``"speedup"``; the card shows it as a table.
    """

    model_name: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    local_datasets: list[str] = field(default_factory=list)
    eval_dataset: str | None = None
    eval_split: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    keep_ratio: float | None = None
    speedup: float | None = None
    speedup_setup: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    budget_curve: list[dict[str, Any]] = field(default_factory=list)

    def update_from_metrics(
        self, metrics: dict[str, Any], prefix: str = "eval_", quality: tuple[str, ...] | None = None
    ) -> RetentionModelCardData:
        """Take quality metrics, keep ratio and speed-up from a Trainer metrics dict (``eval_accuracy`` ...).

        ``quality`` names the quality metrics to take (``("accuracy",)``); by default every metric that
        is not a run statistic (runtime, throughput, loss, a ``_retention_off`` reference, ...).
        """
        for key, value in metrics.items():
            if not key.startswith(prefix) or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name = key[len(prefix) :]
            if name == "keep_ratio":
                self.keep_ratio = float(value)
            elif name == "speedup":
                self.speedup = float(value)
            elif name in quality if quality is not None else not any(marker in name for marker in _NOT_QUALITY):
                self.metrics[name] = float(value)
        return self

    def set_budget_curve(self, curve: dict[float, dict[str, Any]], prefix: str = "eval_") -> RetentionModelCardData:
        """Take ``{budget: Trainer metrics}`` as the card's budget curve (quality metrics and keep ratio)."""
        rows = []
        for budget in sorted(curve, reverse=True):
            row = RetentionModelCardData().update_from_metrics(curve[budget], prefix)
            rows.append({"budget": float(budget), "keep_ratio": row.keep_ratio, "metrics": row.metrics})
        self.budget_curve = rows
        return self


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and not os.path.isabs(name) and not os.path.exists(name) and name.count("/") <= 1


def _head(model_class_name: str) -> tuple[str | None, str | None]:
    for suffix, (auto_class, task) in _HEADS.items():
        if model_class_name.endswith(suffix):
            return auto_class, task
    return "AutoModel", "feature-extraction"


def _version() -> str:
    from . import __version__  # the package is fully imported by the time a card is rendered

    return __version__


def _hub_metadata(card_data: RetentionModelCardData, model_name: str | None, task: str | None) -> ModelCardData:
    eval_results = None
    named = [*card_data.datasets, *card_data.local_datasets]
    dataset = card_data.eval_dataset or (named[0] if named else None)
    if card_data.metrics and dataset is not None and task is not None:
        eval_results = [
            EvalResult(
                task_type=task,
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=card_data.eval_split,
                metric_type=name,
                metric_value=value,
            )
            for name, value in card_data.metrics.items()
        ]
    extra = {name: getattr(card_data, name) for name in _EXTRA_FIELDS if getattr(card_data, name) not in (None, [])}
    return ModelCardData(
        model_name=model_name or (PLACEHOLDER_NAME if eval_results else None),
        base_model=card_data.base_model if _is_hub_id(card_data.base_model) else None,
        datasets=card_data.datasets or None,
        language=card_data.language,
        license=card_data.license,
        library_name="transformers",
        pipeline_tag=task,
        tags=sorted({*_DEFAULT_TAGS, *card_data.tags}),
        eval_results=eval_results,
        **({EXTRA_KEY: extra} if extra else {}),
    )


def render_model_card(
    model,
    card_data: RetentionModelCardData | None = None,
    model_name: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
) -> ModelCard:
    """The card of a retention model, from ``card_data`` (default: ``model.model_card_data``) and its config.

    ``model_name`` (for example the repo id being pushed to) is used when the card data names no model;
    ``tags`` are added to the card's tags.
    """
    card_data = card_data or getattr(model, "model_card_data", None)
    return render_model_card_for_config(model.config, type(model).__name__, card_data, model_name, tags)


def render_model_card_for_config(
    config,
    architecture: str,
    card_data: RetentionModelCardData | None = None,
    model_name: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
) -> ModelCard:
    """The card of a model of class ``architecture`` (``"RetentionBertForSequenceClassification"``) with this
    config, without its weights: what re-renders the reference cards in ``model_cards/`` from ``results/``."""
    card_data = copy.deepcopy(card_data or RetentionModelCardData())
    card_data.tags = sorted({*card_data.tags, *tags})
    auto_class, task = _head(architecture)
    model_name = card_data.model_name or model_name
    learned = config.retention_learned_schedule
    layers = [
        {"index": index, "scheduled": scheduled, "learned": None if learned is None else learned[index]}
        for index, scheduled in enumerate(config.retention_layer_ratios())
    ]
    return ModelCard.from_template(
        _hub_metadata(card_data, model_name, task),
        template_path=str(TEMPLATE_PATH),
        card=card_data,
        title=model_name or architecture,
        load_name=model_name or "path/to/this/model",
        base_model=card_data.base_model if _is_hub_id(card_data.base_model) else None,
        architecture=architecture,
        auto_class=auto_class,
        remote_auto_class=auto_class or "AutoModel",
        remote_code=bool(getattr(config, "auto_map", None)),
        budget=config.retention_ratio,
        schedule=config.retention_schedule if isinstance(config.retention_schedule, str) else "explicit",
        layers=layers,
        protected_token_ids=list(config.retention_protected_token_ids),
        protect_first_segment=config.retention_protect_first_segment,
        trained_range=getattr(config, "retention_trained_ratio_range", None),
        version=_version(),
        paper_url=PAPER_URL,
    )


def budget_curve_svg(rows: list[dict[str, Any]], metric: str, width: int = 420, height: int = 260) -> str:
    """A self-contained SVG line chart of ``metric`` against the budget, from a card's ``budget_curve`` rows.

    Plain SVG text, so that writing a card needs no plotting library; the Hub shows it in the card."""
    points = sorted((row["budget"], row["metrics"][metric]) for row in rows if metric in row["metrics"])
    title = html.escape(f"{metric} at every budget (one checkpoint)")
    left, right, top, bottom = 56, 16, 28, 40
    low, high = min(value for _, value in points), max(value for _, value in points)
    pad = max((high - low) * 0.1, 0.005)
    low, high = low - pad, high + pad

    def x(budget: float) -> float:
        return left + budget * (width - left - right)

    def y(value: float) -> float:
        return top + (high - value) / (high - low) * (height - top - bottom)

    axis = f"{left},{top} {left},{height - bottom} {width - right},{height - bottom}"
    line = " ".join(f"{x(budget):.1f},{y(value):.1f}" for budget, value in points)
    ticks = [
        f'<text x="{x(tick):.1f}" y="{height - bottom + 16}" text-anchor="middle">{tick:.1f}</text>'
        for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    ] + [
        f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.3f}</text>'
        for value in sorted({min(value for _, value in points), max(value for _, value in points)})
    ]
    dots = [f'<circle cx="{x(budget):.1f}" cy="{y(value):.1f}" r="3"/>' for budget, value in points]
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            'font-size="11">',
            '<rect width="100%" height="100%" fill="white"/>',
            f'<text x="{width / 2}" y="16" text-anchor="middle">{title}</text>',
            f'<polyline points="{axis}" fill="none" stroke="black"/>',
            f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>',
            f'<g fill="#1f77b4">{"".join(dots)}</g>',
            *ticks,
            f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">budget rho</text>',
            "</svg>",
            "",
        ]
    )


def write_model_card(
    model,
    save_directory: str | os.PathLike,
    card_data: RetentionModelCardData | None = None,
    model_name: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
) -> ModelCard:
    """Render the card and save it as ``<save_directory>/README.md``, with ``budget_curve.svg`` beside it when
    the card has a budget curve."""
    card = render_model_card(model, card_data, model_name, tags)
    card.save(os.path.join(save_directory, CARD_NAME))
    curve = (card_data or getattr(model, "model_card_data", None) or RetentionModelCardData()).budget_curve
    if curve and curve[0]["metrics"]:
        svg = budget_curve_svg(curve, next(iter(curve[0]["metrics"])))
        Path(save_directory, CURVE_IMAGE).write_text(svg, encoding="utf-8")
    return card


def card_data_from_checkpoint(path: str | os.PathLike, **overrides: Any) -> RetentionModelCardData:
    """Card data recovered from a checkpoint directory, so that a re-rendered or pushed card keeps what the
    saved one stated: the metrics of ``eval_results.json`` (the examples write it), then, taking
    precedence as the latest statement, its ``README.md`` metadata (name, base model, datasets, license,
    tags, ``model-index`` metrics and the ``retention_hf`` facts: keep ratio, speed-up), then
    ``overrides`` (``base_model=...``, ``datasets=[...]``; ``None`` is ignored).
    """
    card_data = RetentionModelCardData()
    results = Path(path, "eval_results.json")
    if results.is_file():
        card_data.update_from_metrics(json.loads(results.read_text()))
    readme = Path(path, CARD_NAME)
    if readme.is_file():
        metadata = ModelCard.load(readme).data
        if metadata.model_name != PLACEHOLDER_NAME:
            card_data.model_name = metadata.model_name
        card_data.base_model = metadata.base_model
        card_data.datasets = list(metadata.datasets or [])
        card_data.license, card_data.language = metadata.license, metadata.language
        card_data.tags = sorted(set(metadata.tags or []) - set(_DEFAULT_TAGS))
        for result in metadata.eval_results or []:
            card_data.metrics[result.metric_type] = result.metric_value
        for name, value in (metadata.to_dict().get(EXTRA_KEY) or {}).items():
            if name in _EXTRA_FIELDS:
                setattr(card_data, name, value)
    known = asdict(card_data)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(f"unknown card fields {unknown}: use {sorted(known)}")
    for name, value in overrides.items():
        if value is not None:
            setattr(card_data, name, value)
    return card_data
