#!/usr/bin/env python
"""Fine-tune and evaluate a dense or retention encoder for extractive QA on SQuAD v1.1.

In the style of transformers' ``run_qa.py``: questions and contexts are encoded into overlapping windows
(``--max_seq_length``, ``--doc_stride``) with offset mappings, the model predicts start and end logits
for every token (retention models restore the dropped tokens before the output layer), and the best
span over all windows of a question is scored with the bundled offline ``squad`` metric (EM / F1).

The data (``retention_hf.recipes.squad_data``): ``--dataset squad`` trains on the SQuAD v1.1 train set and
evaluates on the whole official dev set, ``--dataset squad-val`` holds 10 train articles out for tuning, and
``--dataset squad-tiny`` reads the small subset shipped in ``data/squad``.

``--protect_question`` protects the question and its [SEP] (``retention_protect_first_segment``): only
context tokens then compete for the budget, while the question still counts towards it.

After training it reports EM / F1, the realised keep ratio and the eval throughput, with the same
weights with retention off as the reference, in ``<output_dir>/eval_results.json``.

Examples::

    # dense all-MiniLM-L6-v2, then retention at rho = 0.5 from it
    retention-hf train --task question-answering --retention false --output_dir runs/qa-dense
    retention-hf train --task question-answering --model_name_or_path runs/qa-dense --retention_ratio 0.5 --output_dir runs/qa-r50 \\
        --learning_rate 2e-5 --protect_question
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import AutoTokenizer, DataCollatorWithPadding

from .. import RetentionBertForQuestionAnswering, RetentionRobertaForQuestionAnswering, RetentionTrainer
from ..answer_profile import answer_loss_profile, answer_survival
from ..metrics import load_metric
from ..question_answering import postprocess_predictions, prepare_eval_features, prepare_train_features
from .squad_data import SOURCES, squad_datasets
from .steps import (
    ModelArguments,
    closes_process_group,
    default_model_path,
    first_examples,
    load_retention_model,
    parse_arguments,
    question_protection,
    selected_phases,
    train_and_save,
    write_results,
)


@dataclass
class QADataArguments:
    dataset: str = field(default="squad", metadata={"help": f"One of {SOURCES} (see retention_hf.recipes.squad_data)."})
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window (question + context)."})
    doc_stride: int = field(default=128, metadata={"help": "Context tokens shared by consecutive windows."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer span, in tokens."})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Train on N questions, an even hash sample of the train split (smallest SHA-1 of the id)."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N eval questions."})
    protect_question: bool = field(
        default=False, metadata={"help": "Never drop the question tokens: only the context competes for the budget."}
    )
    answer_profile: bool = field(
        default=False,
        metadata={
            "help": "With retention on, also group the eval questions by the layer at which their answer was dropped "
            "and score each group (retention_hf.answer_profile; one more pass over the eval windows)."
        },
    )
    max_timing_samples: int | None = field(
        default=None,
        metadata={
            "help": "With retention on, score the same weights with retention off, measure the speed-up over them and "
            "profile the answers on the first N eval questions only (default: all of them); the model's own EM / F1 "
            "always covers every eval question. The retention-off pass costs as much as a dense evaluation."
        },
    )


def build_model(model_args: ModelArguments, data_args: QADataArguments, tokenizer):
    protection = question_protection(tokenizer, model_args, data_args.protect_question)
    return load_retention_model(
        model_args,
        {"bert": RetentionBertForQuestionAnswering, "roberta": RetentionRobertaForQuestionAnswering},
        **protection,
    )


def evaluate_spans(
    trainer, examples: Dataset, features: Dataset, data_args: QADataArguments
) -> tuple[dict[str, float], dict[str, str]]:
    """EM / F1, keep ratio and questions per second of one prediction pass over the eval windows, and the
    predicted answers (``{id: text}``)."""
    start = time.perf_counter()
    output = trainer.predict(features.remove_columns(["example_id", "offset_mapping"]), metric_key_prefix="eval")
    seconds = time.perf_counter() - start
    start_logits, end_logits = output.predictions[:2]
    predictions = postprocess_predictions(
        examples.to_dict(), features.to_dict(), start_logits, end_logits, data_args.max_answer_length
    )
    answers = {key: value["answer"] for key, value in predictions.items()}
    scores = load_metric("squad").compute(
        predictions=[{"id": key, "prediction_text": answer} for key, answer in answers.items()],
        references=[{"id": row["id"], "answers": row["answers"]} for row in examples],
    )
    metrics = {
        "eval_exact_match": scores["exact_match"],
        "eval_f1": scores["f1"],
        "eval_keep_ratio": output.metrics.get("eval_keep_ratio", 1.0),
        "eval_questions_per_second": len(examples) / seconds,
    }
    return metrics, answers


def evaluate_with_reference(
    trainer, tokenizer, examples: Dataset, features: Dataset, data_args: QADataArguments
) -> dict[str, object]:
    """:func:`evaluate_spans`, then for a retention model the same weights with retention off (the quality and
    speed reference) and, with ``--answer_profile``, the F1 per layer that dropped the answer; with
    ``--max_timing_samples N`` the reference, the speed-up and the profile cover the first N questions, which the
    model then scores again (``eval_*_timing_questions``) so that both sides see the same questions."""
    model = trainer.model
    results: dict[str, object] = {}
    metrics, answers = evaluate_spans(trainer, examples, features, data_args)
    results.update(metrics)
    if not model.config.retention_enabled:
        return results
    limit = data_args.max_timing_samples
    if limit is not None and limit < len(examples):
        examples, features = first_examples(examples, features, limit, "example_id")
        metrics, answers = evaluate_spans(trainer, examples, features, data_args)
        results.update({f"{key}_timing_questions": value for key, value in metrics.items()})
        results["timing_questions"] = limit
    model.config.retention_enabled = False
    try:
        dense, dense_answers = evaluate_spans(trainer, examples, features, data_args)
    finally:
        model.config.retention_enabled = True
    results.update({f"{key}_retention_off": value for key, value in dense.items() if key != "eval_keep_ratio"})
    results["eval_speedup"] = metrics["eval_questions_per_second"] / dense["eval_questions_per_second"]
    if data_args.answer_profile:
        batch_size = trainer.args.per_device_eval_batch_size
        with trainer.autocast_smart_context_manager():  # the precision of the prediction passes
            survival = answer_survival(model, tokenizer, examples, features, batch_size)
        results["answer_profile"] = answer_loss_profile(
            survival, answers, examples, model.config.num_hidden_layers, reference=dense_answers
        )
    return results


@closes_process_group
def main(argv: list[str] | None = None) -> dict[str, object]:
    model_args, data_args, training_args = parse_arguments(QADataArguments, argv)
    do_train, do_eval = selected_phases(training_args)
    if data_args.max_timing_samples is not None and data_args.max_timing_samples < 1:
        raise ValueError(
            f"--max_timing_samples must be a positive number of questions, got {data_args.max_timing_samples}"
        )
    train, examples = squad_datasets(data_args.dataset, data_args.max_train_samples, data_args.max_eval_samples)

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path or default_model_path())
    model = build_model(model_args, data_args, tokenizer)
    if data_args.answer_profile and not (model.config.retention_enabled and do_eval):
        raise ValueError(
            "--answer_profile needs retention on and an evaluation: it profiles where a retention model drops the "
            f"answers of the eval set (retention_enabled={model.config.retention_enabled}, do_eval={do_eval})"
        )
    window = {"tokenizer": tokenizer, "max_length": data_args.max_seq_length, "doc_stride": data_args.doc_stride}
    train_features = None
    if do_train:  # an eval-only run never windows the train set
        train_features = train.map(
            prepare_train_features, fn_kwargs=window, batched=True, remove_columns=train.column_names, desc="Windows"
        )
    eval_features = examples.map(
        prepare_eval_features, fn_kwargs=window, batched=True, remove_columns=examples.column_names, desc="Windows"
    )

    trainer = RetentionTrainer(
        model=model,
        args=training_args,
        train_dataset=train_features,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    results: dict[str, object] = {"eval_questions": len(examples), "eval_windows": len(eval_features)}
    if do_train:
        results.update(train_and_save(trainer))
    if do_eval:
        results.update(evaluate_with_reference(trainer, tokenizer, examples, eval_features, data_args))
    if model.config.retention_enabled:
        results["learned_schedule"] = model.config.retention_learned_schedule
    write_results(trainer, results, "rajpurkar/squad", quality=("exact_match", "f1"))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
